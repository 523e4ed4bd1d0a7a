"""Small helpers for child processes and loopback ports (demo, benchmarks, tests), and a
throwaway PostgreSQL cluster."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could bind ``port`` now (no SO_REUSEADDR: TIME_WAIT counts as taken,
    as it does for servers that bind that way, such as vpcd)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listening on {host}:{port} after {timeout} s"
                ) from None
            time.sleep(0.05)


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code (None: never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class PostgresMissing(RuntimeError):
    """No PostgreSQL server is installed on this host (Debian's ``postgresql`` package)."""


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian's layout), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextmanager
def postgres_cluster(base: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster in ``base`` on a free loopback port, trust auth, fsync
    on; yields its URL, and stops it and removes ``base`` after. The tests' and the
    benchmarks' own database. PostgreSQL refuses to run as root, so as root the cluster runs
    as the ``postgres`` user that Debian's package creates (``base``'s parents under /tmp are
    made traversable for it). PostgresMissing when no server is installed."""
    bindir = pg_bin()
    if bindir is None:
        raise PostgresMissing(
            "no PostgreSQL server installed here (Debian: apt install postgresql; "
            "a benchmark also takes --postgres-url)"
        )
    data = base / "pgdata"
    base.mkdir(parents=True, exist_ok=True)
    prefix: list[str] = []
    if os.geteuid() == 0:
        os.chmod(base, 0o777)
        for parent in base.parents:  # pytest's tmp dirs are 0700: let postgres traverse them
            if str(parent).startswith("/tmp/") or str(parent) == "/tmp":
                os.chmod(parent, os.stat(parent).st_mode | 0o711)
        prefix = ["runuser", "-u", pwd.getpwnam("postgres").pw_name, "--"]
    port = free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run([*prefix, *initdb, "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=on"
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-l", str(base / "pg.log"), "-w", "start", "-o", opts],
        check=True,
        capture_output=True,
    )
    try:
        wait_port("127.0.0.1", port, 20)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)

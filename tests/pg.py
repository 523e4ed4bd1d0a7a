"""A private PostgreSQL cluster on a free loopback port, for the tests that promise PostgreSQL.

PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user that
Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from biblioedge.procs import free_port, wait_port


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextmanager
def postgres_cluster(base: Path) -> Iterator[str]:
    bindir = pg_bin()
    if bindir is None:
        message = "PostgreSQL server not installed (scripts/setup.sh --test installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    data = base / "pgdata"
    base.mkdir(parents=True, exist_ok=True)
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chmod(base, 0o777)
        for parent in base.parents:  # pytest's tmp dirs are 0700: let postgres traverse them
            if str(parent).startswith("/tmp/") or str(parent) == "/tmp":
                os.chmod(parent, os.stat(parent).st_mode | 0o711)
        prefix = ["runuser", "-u", user.pw_name, "--"]
    port = free_port()
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    log = base / "pg.log"
    subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "start",
            "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=on",
        ],
        check=True,
        capture_output=True,
    )
    try:
        wait_port("127.0.0.1", port, 20)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)

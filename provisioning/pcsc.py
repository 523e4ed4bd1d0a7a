"""pcscd with Debian's vsmartcard-vpcd virtual reader, for the demo desk and the tests.

A kiosk uses the system's pcscd and a real USB reader. The demo and the tests need a reader
without hardware: vpcd is a pcscd driver that waits for a card emulator on localhost:35963,
and the product's chip simulator is that emulator. When a pcscd already runs (Debian starts
one by socket activation, with vpcd configured by the package) it is used as it is;
otherwise one is started in the foreground with a vpcd reader configuration of its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from biblioedge.procs import port_free

SOCKET = Path("/run/pcscd/pcscd.comm")
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
VPCD_PORT = 35963


class PcscUnavailable(RuntimeError):
    pass


def vpcd_port_open(port: int = VPCD_PORT) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def installed() -> bool:
    exe = shutil.which("pcscd") or "/usr/sbin/pcscd"
    return os.path.exists(exe) and VPCD_DRIVER.exists()


class PcscdProcess:
    """``start()`` makes sure a pcscd with the vpcd reader answers; ``stop()`` ends ours."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> PcscdProcess:
        exe = shutil.which("pcscd") or "/usr/sbin/pcscd"
        if not installed():
            raise PcscUnavailable(
                "pcscd and vsmartcard-vpcd are not installed (scripts/setup.sh installs them)"
            )
        pgrep = subprocess.run(["pgrep", "-x", "pcscd"], capture_output=True, check=False)
        if pgrep.returncode == 0:
            if not _wait(vpcd_port_open, 3.0):
                raise PcscUnavailable("a pcscd runs without the vpcd reader (port 35963)")
            return self
        # vpcd binds without SO_REUSEADDR: a pcscd stopped a moment ago holds it in TIME_WAIT
        if not _wait(lambda: port_free(VPCD_PORT), 75.0):
            raise PcscUnavailable(f"port {VPCD_PORT} stays in use: vpcd cannot listen")
        conf = self.workdir / "reader.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "vpcd").write_text(
            'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x8C7B\n'
            f"LIBPATH {VPCD_DRIVER}\nCHANNELID 0x8C7B\n"
        )
        log = open(self.workdir / "pcscd.log", "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [exe, "--foreground", "--config", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        ok = _wait(
            lambda: (
                SOCKET.exists()
                and vpcd_port_open()
                or self.proc is None
                or self.proc.poll() is not None
            ),
            timeout,
        )
        if not ok or self.proc.poll() is not None:
            self.stop()
            tail = (self.workdir / "pcscd.log").read_text(errors="replace")[-2000:]
            raise PcscUnavailable(f"pcscd did not start: {tail}")
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False

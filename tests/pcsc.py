"""A pcscd of the test session's own, with the vsmartcard vpcd virtual reader."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SOCKET = Path("/run/pcscd/pcscd.comm")


def _vpcd_port_open() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 35963), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def pcscd_with_vpcd(tmp: Path) -> Iterator[None]:
    exe = shutil.which("pcscd") or "/usr/sbin/pcscd"
    if not os.path.exists(exe) or not os.path.exists("/usr/lib/pcsc/drivers/serial/libifdvpcd.so"):
        message = (
            "pcscd and vsmartcard-vpcd are not installed (scripts/setup.sh --test installs them)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    running = subprocess.run(["pgrep", "-x", "pcscd"], capture_output=True).returncode == 0
    proc = None
    if not running:
        conf = tmp / "reader.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "vpcd").write_text(
            'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x8C7B\n'
            "LIBPATH /usr/lib/pcsc/drivers/serial/libifdvpcd.so\nCHANNELID 0x8C7B\n"
        )
        log = open(tmp / "pcscd.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [exe, "--foreground", "--config", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 15
        while not (SOCKET.exists() and _vpcd_port_open()):
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                log.close()
                raise RuntimeError(
                    "pcscd did not start: " + (tmp / "pcscd.log").read_text()[-2000:]
                )
            time.sleep(0.1)
    try:
        yield
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

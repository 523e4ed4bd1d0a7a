"""pcscd with Debian's vsmartcard-vpcd virtual reader, for the demo desk and the tests.

A kiosk uses the system's pcscd and a real USB reader. The demo and the tests need a reader
without hardware: vpcd is a pcscd driver that waits for a card emulator on localhost:35963,
and the product's chip simulator is that emulator. When a pcscd already runs (Debian starts
one by socket activation, with vpcd configured by the package) it is used as it is, on
35963. Otherwise one is started in the foreground with a vpcd reader of its own, on a port
below the kernel's ephemeral range: 35963 lies inside it, so any outgoing connection may
hold it for a while, and vpcd would fail to listen ("Address already in use").
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
OWN_PORT_BASE = 20963  # below Linux's default ephemeral range (32768-60999)
OWN_PORT_TRIES = 8


class PcscUnavailable(RuntimeError):
    pass


def vpcd_port_open(port: int = VPCD_PORT) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def vpcd_answers(port: int, within: float = 6.0) -> bool:
    """Whether vpcd behind ``port`` serves a card: it speaks first (power-up, ATR) to a card
    that connects while pcscd polls the reader. A port that accepts and stays silent is a
    pcscd that is stuck or belongs to another session; a card put on it would never be read.
    One connection can land while vpcd still tears down the last: try again until ``within``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                if sock.recv(1, socket.MSG_PEEK):
                    return True
        except OSError:  # TimeoutError included: silent this time
            pass
        time.sleep(0.2)
    return False


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def own_ports() -> list[int]:
    """Ports for a pcscd of our own: none that the kernel hands out to outgoing connections."""
    low, high = ephemeral_range()
    start = VPCD_PORT if not low <= VPCD_PORT <= high else OWN_PORT_BASE
    if low <= start <= high:  # an unusual range that covers our base as well
        start = max(1024, low - OWN_PORT_TRIES)
    return [start + i for i in range(OWN_PORT_TRIES) if not low <= start + i <= high]


def installed() -> bool:
    exe = shutil.which("pcscd") or "/usr/sbin/pcscd"
    return os.path.exists(exe) and VPCD_DRIVER.exists()


class PcscdProcess:
    """``start()`` makes sure a pcscd with the vpcd reader answers; ``stop()`` ends ours.

    ``port`` is where the card emulator connects once ``start()`` has returned."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = VPCD_PORT

    def start(self, timeout: float = 15.0) -> PcscdProcess:
        if not installed():
            raise PcscUnavailable(
                "pcscd and vsmartcard-vpcd are not installed (scripts/setup.sh installs them)"
            )
        pgrep = subprocess.run(["pgrep", "-x", "pcscd"], capture_output=True, check=False)
        if pgrep.returncode == 0:  # the system's, or one we started for another session
            ports = [VPCD_PORT, *own_ports()]
            found: list[int] = []  # vpcd takes one connection at a time: probe each port once

            def listening() -> bool:
                found.extend(p for p in ports if vpcd_port_open(p))
                return bool(found)

            if not _wait(listening, 3.0):
                raise PcscUnavailable(f"a pcscd runs without the vpcd reader (ports {ports})")
            if not vpcd_answers(found[0]):
                raise PcscUnavailable(
                    f"a pcscd that was not started here runs, and its vpcd reader on port "
                    f"{found[0]} does not talk to a card (stop it: systemctl stop pcscd.socket "
                    "pcscd, or pkill pcscd)"
                )
            self.port = found[0]
            return self
        failures: list[str] = []
        for port in own_ports():
            # vpcd listens on every address: a socket on any of them holding the port blocks it
            if not port_free(port, host="0.0.0.0"):  # noqa: S104 - a test, nothing listens
                failures.append(f"{port}: in use")
                continue
            tail = self._start_on(port, timeout)
            if tail is None:
                return self
            failures.append(f"{port}: {tail}")
            if "Address already in use" not in tail:
                break
        raise PcscUnavailable("pcscd did not start: " + "; ".join(failures))

    def _start_on(self, port: int, timeout: float) -> str | None:
        """None once pcscd answers with vpcd on ``port``, else the end of its log."""
        exe = shutil.which("pcscd") or "/usr/sbin/pcscd"
        conf = self.workdir / "reader.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        # DEVICENAME carries the port for newer vpcd drivers, CHANNELID for older ones
        (conf / "vpcd").write_text(
            f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x{port:04X}\n'
            f"LIBPATH {VPCD_DRIVER}\nCHANNELID 0x{port:04X}\n"
        )
        log_path = self.workdir / "pcscd.log"
        log = open(log_path, "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [exe, "--foreground", "--config", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        proc = self.proc

        answered: list[bool] = []

        def settled() -> bool:
            if proc.poll() is not None or b"Could not initialize" in log_path.read_bytes():
                return True
            if SOCKET.exists() and vpcd_port_open(port):
                answered.append(True)
            return bool(answered)

        _wait(settled, timeout)
        if answered and proc.poll() is None:
            self.port = port
            return None
        self.stop()
        return log_path.read_text(errors="replace")[-600:].strip() or "no reader in time"

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

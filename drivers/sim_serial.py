"""Serial device simulators on the far end of a real pseudo-terminal pair.

The driver under test opens the pty's slave path with pyserial exactly as it opens
/dev/ttyUSB0; the simulator reads and writes the master side. Used by the demo, the
benchmarks and the tests.
"""

from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Self


def pty_pair() -> tuple[int, int, str]:
    """(master fd, slave fd, slave device path). The slave stays open here so the pair
    survives the driver closing and reopening it, as a USB serial adapter does."""
    import termios
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    path = os.ttyname(slave)
    return master, slave, path


class _PtyDevice:
    def __init__(self) -> None:
        self.master, self._slave, self.port = pty_pair()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self.master)
        os.close(self._slave)

    close = stop

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(self.master, 1024)
                except OSError:
                    time.sleep(0.05)
                    continue
                self.feed(data)
            self.tick()

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        pass


@dataclass
class TurnstileState:
    opens: list[tuple[float, int]] = field(default_factory=list)
    door: str = "closed"
    alarm: str = "off"
    close_at: float | None = None


class TurnstileSimulator(_PtyDevice):
    """Speaks the line protocol of ``drivers/gate.py``. ``mute`` stops all answers (a dead
    controller); ``noise`` sends garbage before each answer (a bad cable)."""

    def __init__(
        self, *, mute: bool = False, noise: bool = False, walk_through: bool = True
    ) -> None:
        super().__init__()
        self.state = TurnstileState()
        self.mute = mute
        self.noise = noise
        self.walk_through = walk_through
        self._buf = bytearray()

    def _say(self, line: str) -> None:
        if self.mute:
            return
        if self.noise:
            self.write(b"\x00\xff#%\n")
        self.write(line.encode("ascii") + b"\n")

    def feed(self, data: bytes) -> None:
        self._buf += data
        while (cut := self._buf.find(b"\n")) >= 0:
            line, self._buf = (
                self._buf[:cut].decode("ascii", "replace").strip(),
                self._buf[cut + 1 :],
            )
            self._command(line)

    def _command(self, line: str) -> None:
        parts = line.split()
        if not parts:
            return
        if parts[0] == "PING":
            self._say("PONG")
        elif parts[0] == "OPEN" and len(parts) == 2 and parts[1].isdigit():
            ms = int(parts[1])
            self.state.opens.append((time.monotonic(), ms))
            self._say("OK OPEN")
            if self.state.door != "open":
                self.state.door = "open"
                self._say("DOOR OPEN")
            self.state.close_at = time.monotonic() + ms / 1000
        elif parts[0] == "ALARM" and len(parts) == 2 and parts[1] in ("ON", "OFF"):
            self.state.alarm = parts[1].lower()
            self._say("OK ALARM")
        elif parts[0] == "STATUS":
            self._say(f"STATUS door={self.state.door} alarm={self.state.alarm}")
        else:
            self._say("ERR unknown command")

    def tick(self) -> None:
        if self.state.close_at is not None and time.monotonic() >= self.state.close_at:
            self.state.close_at = None
            if self.walk_through:
                self._say("PASSED")
            self.state.door = "closed"
            self._say("DOOR CLOSED")


class RelayBoardSimulator(_PtyDevice):
    """A CH340 relay board: applies valid 4-byte frames, ignores (and counts) broken ones."""

    def __init__(self) -> None:
        super().__init__()
        self.relays: dict[int, bool] = {}
        self.history: list[tuple[float, int, bool]] = []
        self.bad_frames = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= 4:
            if self._buf[0] != 0xA0:
                self._buf.pop(0)
                self.bad_frames += 1
                continue
            frame, self._buf = bytes(self._buf[:4]), self._buf[4:]
            _, ch, state, check = frame
            if (0xA0 + ch + state) & 0xFF != check or state not in (0, 1):
                self.bad_frames += 1
                continue
            self.relays[ch] = bool(state)
            self.history.append((time.monotonic(), ch, bool(state)))


class ScannerSimulator(_PtyDevice):
    """A hand scanner on a serial port: ``scan(text)`` sends one code, CR/LF-terminated."""

    def feed(self, data: bytes) -> None:
        pass  # scanners take no commands

    def scan(self, text: str) -> None:
        self.write(text.encode("utf-8") + b"\r\n")

    def wait_opened(self, timeout: float = 60.0) -> bool:
        """Wait until another process opens the port: pyserial flushes what was sent before
        it opened, as a real port would, so a scan before that is lost (Linux /proc)."""
        deadline = time.monotonic() + timeout
        me = str(os.getpid())
        while time.monotonic() < deadline:
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == me:
                    continue
                try:
                    fds = os.listdir(f"/proc/{pid}/fd")
                except OSError:
                    continue
                for fd in fds:
                    try:
                        if os.readlink(f"/proc/{pid}/fd/{fd}") == self.port:
                            return True
                    except OSError:
                        continue
            time.sleep(0.2)
        return False

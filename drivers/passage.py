"""A passage counter at the exit: two light beams (or a contact mat) read by a small
controller that tells the direction and reports each passage on a serial line.

Line protocol (ASCII, 9600 8N1, one message per line ending in LF or CRLF; the counter
talks, the host only listens)::

    device -> IN        one person walked in (beam A, then beam B)
    device -> OUT       one person walked out (beam B, then beam A)
    device -> HB        heartbeat, at least every second, passages or not

The heartbeat is how a silent line (cable pulled, controller hung) is told apart from an
empty library: ``silent_s`` grows while nothing valid arrives. Lines the protocol does not
know (noise, a wrong baud rate) are counted in ``noise`` and ignored; an over-long line is
dropped whole. The simulator below speaks the same protocol on a real pseudo-terminal.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from biblioedge.drivers.codes import LineBuffer, read_available
from biblioedge.drivers.errors import DeviceUnavailable
from biblioedge.drivers.sim_serial import _PtyDevice

MAX_LINE = 64
BAUD = 9600


class PassageCounter(Protocol):
    """People through the exit, by direction, since the last ``take``."""

    noise: int

    def take(self) -> tuple[int, int]:
        """(in, out) counted since the previous call."""
        ...

    @property
    def silent_s(self) -> float:
        """Seconds since the counter last said anything valid."""
        ...

    def close(self) -> None: ...


class LinePassageCounter:
    """The counter on a serial port, read by a thread of its own."""

    def __init__(self, port: str, *, baudrate: int = BAUD) -> None:
        import serial

        try:
            self._ser: Any = serial.Serial(port, baudrate, timeout=0.1)
        except (OSError, serial.SerialException) as exc:
            raise DeviceUnavailable(f"cannot open the passage counter on {port}: {exc}") from exc
        self.port = port
        self.noise = 0
        self._in = 0
        self._out = 0
        self._heard = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="passage-counter", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import serial

        lines = LineBuffer(MAX_LINE)
        while not self._stop.is_set():
            try:
                chunk = read_available(self._ser)
            except (OSError, serial.SerialException):
                self._stop.wait(0.5)  # the adapter went away: silence says so
                continue
            for raw in lines.feed(chunk):
                self._line(raw)
            self.noise += lines.take_overflows()

    def _line(self, raw: bytes) -> None:
        word = raw.strip().upper()
        with self._lock:
            if word == b"IN":
                self._in += 1
            elif word == b"OUT":
                self._out += 1
            elif word != b"HB":
                self.noise += 1
                return
            self._heard = time.monotonic()

    def take(self) -> tuple[int, int]:
        with self._lock:
            got = (self._in, self._out)
            self._in = self._out = 0
        return got

    @property
    def silent_s(self) -> float:
        return time.monotonic() - self._heard

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            self._ser.close()
        except OSError:
            pass


class PassageCounterSimulator(_PtyDevice):
    """The beam controller on the far end of a pty: ``walk("in")``, a heartbeat every
    ``heartbeat_s`` unless ``mute`` (a pulled cable), ``garbage()`` for a noisy line."""

    def __init__(self, heartbeat_s: float = 0.5) -> None:
        super().__init__()
        self.heartbeat_s = heartbeat_s
        self.mute = False
        self._next_beat = 0.0

    def feed(self, data: bytes) -> None:
        pass  # the counter takes no commands

    def _say(self, line: bytes) -> None:
        if not self.mute:
            self.write(line + b"\r\n")

    def walk(self, direction: str, people: int = 1) -> None:
        for _ in range(people):
            self._say(b"IN" if direction == "in" else b"OUT")

    def garbage(self, data: bytes = b"\x00\xff#%IN?\r\nXYZZY\r\n" + b"A" * 200 + b"\n") -> None:
        if not self.mute:
            self.write(data)

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self.heartbeat_s
            self._say(b"HB")

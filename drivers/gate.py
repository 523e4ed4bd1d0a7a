"""Gate controllers on a serial port: the common CH340 USB relay boards, and a plain line
protocol for a microcontroller-driven turnstile.

CH340 relay board (no feedback): 4-byte frames ``A0 <channel> <state> <checksum>`` with
checksum = (A0 + channel + state) mod 256; channel 1 on is ``A0 01 01 A2``, off ``A0 01 00 A1``.
An open is "on", the pulse length, "off". The board never answers, so only a failing write
reveals a missing board.

Line protocol (ASCII, one command per line ending in LF; the turnstile answers each one):

    host -> PING              device -> PONG
    host -> OPEN <ms>         device -> OK OPEN         (unlock for <ms> milliseconds)
    host -> ALARM ON|OFF      device -> OK ALARM
    host -> STATUS            device -> STATUS door=<open|closed> alarm=<on|off>
    device, unprompted:       DOOR OPEN | DOOR CLOSED | PASSED | ERR <reason>

A command not answered within ``reply_timeout`` raises :class:`DeviceNotResponding`; the agent
turns that into an alarm event. Lines the protocol does not know (serial noise, a wrong
firmware) are counted in ``noise`` and ignored.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from biblioedge.drivers.codes import LineBuffer, read_available
from biblioedge.drivers.errors import DeviceNotResponding, DeviceUnavailable, ProtocolViolation

MAX_LINE = 256


class GateController(Protocol):
    def open(self, pulse_ms: int) -> None: ...

    def alarm(self, on: bool) -> None: ...

    def close(self) -> None: ...


def relay_frame(channel: int, on: bool) -> bytes:
    if not 1 <= channel <= 8:
        raise ValueError("relay channel must be 1..8")
    state = 1 if on else 0
    return bytes([0xA0, channel, state, (0xA0 + channel + state) & 0xFF])


def _open_serial(port: str, baudrate: int, timeout: float) -> Any:
    import serial

    try:
        return serial.Serial(port, baudrate, timeout=timeout, write_timeout=1.0)
    except (OSError, serial.SerialException) as exc:
        raise DeviceUnavailable(f"cannot open {port}: {exc}") from exc


class CH340Relay:
    def __init__(
        self, port: str, *, channel: int = 1, alarm_channel: int | None = None, baudrate: int = 9600
    ) -> None:
        self.channel = channel
        self.alarm_channel = alarm_channel
        self._ser = _open_serial(port, baudrate, 0.1)
        self._lock = threading.Lock()
        self._off_timer: threading.Timer | None = None

    def _write(self, frame: bytes) -> None:
        import serial

        try:
            with self._lock:
                self._ser.write(frame)
                self._ser.flush()
        except (OSError, serial.SerialException) as exc:
            raise DeviceNotResponding(f"relay write failed: {exc}") from exc

    def open(self, pulse_ms: int) -> None:
        if self._off_timer is not None:
            self._off_timer.cancel()  # a second grant extends the pulse instead of cutting it
        self._write(relay_frame(self.channel, True))
        self._off_timer = threading.Timer(pulse_ms / 1000, self._release)
        self._off_timer.daemon = True
        self._off_timer.start()

    def _release(self) -> None:
        try:
            self._write(relay_frame(self.channel, False))
        except DeviceNotResponding:
            pass  # the next open will surface it

    def alarm(self, on: bool) -> None:
        if self.alarm_channel is not None:
            self._write(relay_frame(self.alarm_channel, on))

    def close(self) -> None:
        if self._off_timer is not None:
            self._off_timer.cancel()
            self._release()
        self._ser.close()


class LineGate:
    """The line-protocol turnstile controller."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        reply_timeout: float = 0.5,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.reply_timeout = reply_timeout
        self.on_event = on_event
        self.noise = 0
        self.door: str | None = None
        self._ser = _open_serial(port, baudrate, 0.05)
        self._replies: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="line-gate", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        import serial

        lines = LineBuffer(MAX_LINE, ends=b"\n")
        while not self._stop.is_set():
            try:
                chunk = read_available(self._ser)
            except (OSError, serial.SerialException):
                self._stop.wait(0.2)
                continue
            for raw in lines.feed(chunk):
                self._line(raw)
            self.noise += lines.take_overflows()

    def _line(self, raw: bytes) -> None:
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            self.noise += 1
            return
        if not line:
            return
        head = line.split()[0]
        if line in ("DOOR OPEN", "DOOR CLOSED"):
            self.door = line.split()[1].lower()
            if self.on_event:
                self.on_event(line)
        elif line == "PASSED" or head == "ERR":
            if self.on_event:
                self.on_event(line)
        elif head in ("OK", "PONG", "STATUS"):
            self._replies.put(line)
        else:
            self.noise += 1

    def _command(self, cmd: str, expect: str) -> str:
        import serial

        with self._lock:
            while not self._replies.empty():  # a late reply to an earlier command
                self._replies.get_nowait()
            try:
                self._ser.write(cmd.encode("ascii") + b"\n")
                self._ser.flush()
            except (OSError, serial.SerialException) as exc:
                raise DeviceNotResponding(f"gate write failed: {exc}") from exc
            deadline = time.monotonic() + self.reply_timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeviceNotResponding(
                        f"gate did not answer {cmd!r} in {self.reply_timeout} s"
                    )
                try:
                    reply = self._replies.get(timeout=left)
                except queue.Empty:
                    continue
                if reply.startswith(expect):
                    return reply
                raise ProtocolViolation(f"gate answered {reply!r} to {cmd!r}")

    def ping(self) -> None:
        self._command("PING", "PONG")

    def open(self, pulse_ms: int) -> None:
        if not 50 <= pulse_ms <= 60_000:
            raise ValueError("pulse_ms must be 50..60000")
        self._command(f"OPEN {int(pulse_ms)}", "OK OPEN")

    def alarm(self, on: bool) -> None:
        self._command(f"ALARM {'ON' if on else 'OFF'}", "OK ALARM")

    def status(self) -> dict[str, str]:
        reply = self._command("STATUS", "STATUS")
        return dict(part.split("=", 1) for part in reply.split()[1:] if "=" in part)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(timeout=2)
        self._ser.close()

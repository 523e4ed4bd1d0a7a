"""Codes: QR and barcodes on camera frames (zxing-cpp, pyzbar as the alternate), and the two
kinds of handheld scanner — USB keyboard-wedge and serial.

zxing-cpp is the default: measured here on a 1280x720 frame it is several times faster than
pyzbar and finds more (``biblioedge bench codes``). A keyboard-wedge scanner types its code as
fast keystrokes ended by Enter; :class:`WedgeAssembler` tells it from a person typing by the
time between keys, so a reader's finger on the kiosk keyboard never opens the gate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from biblioedge.drivers.errors import DeviceUnavailable

Image = npt.NDArray[np.uint8]
MAX_CODE_LENGTH = 4096
#: What a library reads: QR card tokens, Code 128 and EAN-13 patron and item barcodes.
#: Scanning for every symbology costs 5-10x more time on a noisy frame and finds nothing more.
LIBRARY_FORMATS = ("QRCode", "Code128", "EAN13")


@dataclass(frozen=True)
class Code:
    text: str
    format: str
    source: Literal["camera", "wedge", "serial"] = "camera"
    corners: tuple[tuple[int, int], ...] = ()


class FrameDecoder(Protocol):
    name: str

    def decode(self, image: Image) -> list[Code]: ...


def _gray(image: Image) -> Image:
    if image.ndim == 3:
        import cv2

        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.uint8)
    return image


class ZxingDecoder:
    name = "zxing-cpp"

    def __init__(self, formats: tuple[str, ...] = LIBRARY_FORMATS, try_harder: bool = True):
        import zxingcpp

        self._zx: Any = zxingcpp
        # the format string, not a BarcodeFormats object: nanobind reports objects still
        # alive at interpreter exit as leaks
        self._formats = ",".join(formats)
        zxingcpp.barcode_formats_from_str(self._formats)  # fail early on a bad name
        self.try_harder = try_harder

    def decode(self, image: Image) -> list[Code]:
        kwargs: dict[str, Any] = {
            "formats": self._zx.barcode_formats_from_str(self._formats),
            "try_rotate": self.try_harder,
            "try_downscale": self.try_harder,
        }
        out = []
        for r in self._zx.read_barcodes(_gray(image), **kwargs):
            if not r.valid or len(r.text) > MAX_CODE_LENGTH:
                continue
            p = r.position
            corners = tuple(
                (int(pt.x), int(pt.y))
                for pt in (p.top_left, p.top_right, p.bottom_right, p.bottom_left)
            )
            out.append(Code(r.text, str(r.format).split(".")[-1], "camera", corners))
        return out


class PyzbarDecoder:
    name = "pyzbar"

    _SYMBOLS = {"QRCode": "QRCODE", "Code128": "CODE128", "EAN13": "EAN13"}

    def __init__(self, formats: tuple[str, ...] = LIBRARY_FORMATS) -> None:
        try:
            from pyzbar import pyzbar
        except ImportError as exc:  # the zbar shared library is missing
            raise DeviceUnavailable(
                f"pyzbar unavailable: {exc} (apt-get install libzbar0)"
            ) from exc
        self._pz: Any = pyzbar
        self._symbols = [getattr(pyzbar.ZBarSymbol, self._SYMBOLS[f]) for f in formats]

    def decode(self, image: Image) -> list[Code]:
        out = []
        for r in self._pz.decode(_gray(image), symbols=self._symbols):
            try:
                text = r.data.decode("utf-8")
            except UnicodeDecodeError:
                continue  # binary payloads are not library codes
            if len(text) > MAX_CODE_LENGTH:
                continue
            corners = tuple((int(p.x), int(p.y)) for p in r.polygon)
            out.append(Code(text, r.type, "camera", corners))
        return out


def frame_decoder(name: str = "zxing") -> FrameDecoder:
    if name in ("zxing", "zxing-cpp"):
        return ZxingDecoder()
    if name == "pyzbar":
        return PyzbarDecoder()
    raise ValueError(f"unknown code decoder {name!r} (zxing or pyzbar)")


class WedgeAssembler:
    """Keystrokes in, scanned codes out. A scanner types a whole code with at most
    ``max_gap`` seconds between keys and ends it with Enter; anything slower is a person."""

    def __init__(self, max_gap: float = 0.05, min_length: int = 4) -> None:
        self.max_gap = max_gap
        self.min_length = min_length
        self._buf: list[str] = []
        self._last = 0.0
        self._human = False

    def key(self, char: str, now: float | None = None) -> Code | None:
        now = time.monotonic() if now is None else now
        if self._buf and now - self._last > self.max_gap:
            self._human = True
        self._last = now
        if char in ("\r", "\n"):
            text, human = "".join(self._buf), self._human
            self._buf, self._human = [], False
            if human or len(text) < self.min_length:
                return None
            return Code(text, "wedge", "wedge")
        if len(self._buf) >= MAX_CODE_LENGTH or not char.isprintable():
            self._buf, self._human = [], False  # garbage: drop it, wait for the next Enter
            return None
        self._buf.append(char)
        return None


class SerialScanner:
    """A scanner on a serial port (or USB CDC) sending one code per CR/LF-terminated line.
    Lines that are too long, not UTF-8 or not printable are counted and dropped."""

    def __init__(
        self, port: str, baudrate: int = 9600, on_code: Callable[[Code], None] | None = None
    ):
        self.port = port
        self.baudrate = baudrate
        self.on_code = on_code
        self.rejected = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="serial-scanner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import serial

        lines = LineBuffer(MAX_CODE_LENGTH)
        while not self._stop.is_set():
            try:
                with serial.Serial(self.port, self.baudrate, timeout=0.1) as ser:
                    self.error = None
                    while not self._stop.is_set():
                        chunk = read_available(ser)
                        if chunk:
                            for line in lines.feed(chunk):
                                self._line(line)
                            self.rejected += lines.take_overflows()
            except (OSError, serial.SerialException) as exc:
                self.error = str(exc)
                self._stop.wait(1.0)

    def _line(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.rejected += 1
            return
        if not text.isprintable() or len(text) > MAX_CODE_LENGTH:
            self.rejected += 1
            return
        if self.on_code is not None:
            self.on_code(Code(text, "serial", "serial"))


def read_available(ser: Any, limit: int = 4096) -> bytes:
    """What has arrived, as soon as anything has (or nothing at the port's timeout).

    ``read(128)`` waits for 128 bytes or the whole timeout, so a 3-byte reply such as
    ``OK`` would sit there for the timeout (50 ms here): on the gate that was a fifth of
    frame-to-relay."""
    first = ser.read(1)
    if not first:
        return b""
    waiting = min(int(ser.in_waiting or 0), limit)
    return bytes(first + (ser.read(waiting) if waiting else b""))


class LineBuffer:
    """Bytes in, complete lines out (CR, LF or CRLF). A line longer than ``limit`` is dropped
    whole: the buffer discards up to the next line end instead of emitting the tail."""

    def __init__(self, limit: int, ends: bytes = b"\r\n") -> None:
        self.limit = limit
        self.ends = ends
        self._buf = bytearray()
        self._skipping = False
        self._overflows = 0

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for byte in data:
            if byte in self.ends:
                if not self._skipping and self._buf:
                    out.append(bytes(self._buf))
                self._buf.clear()
                self._skipping = False
            elif not self._skipping:
                self._buf.append(byte)
                if len(self._buf) > self.limit:
                    self._buf.clear()
                    self._skipping = True
                    self._overflows += 1
        return out

    def take_overflows(self) -> int:
        n, self._overflows = self._overflows, 0
        return n

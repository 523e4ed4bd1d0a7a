"""The 3M / Bibliotheca 810 RFID reader's serial protocol (19200 8N1), as described by the
open-source Biblio::RFID project.

A frame is ``D6 | length (2 bytes, big endian) | command and arguments | CRC``; the length
counts the command, arguments and the 2-byte CRC, which is CRC-16/CCITT (0x1021, initial
0xFFFF, final XOR 0xFFFF) over the length and payload, big endian. The reader answers in the
same framing with the command byte, a status (0x00 done, 0x06 the tag did not answer) and
the result. UIDs go on the wire least significant byte first.

=======  =========================================  ======================================
command  arguments                                   answer after the status byte
=======  =========================================  ======================================
``FE``   ``00 05``                                   ``00 05`` count, count × UID
``02``   UID, first block, block count               UID, count, count × (block LE16, 4 bytes)
``04``   UID, first block, block count, 00, data     UID, count
``0A``   UID                                         UID, AFI
``09``   UID, AFI                                    UID
=======  =========================================  ======================================

The version probe uses start byte D5 with payload ``04 00 11`` and answers 4 version bytes.
"""

from __future__ import annotations

import logging
import threading
import time

import serial

from biblioedge.drivers.codes import read_available
from biblioedge.drivers.errors import DeviceNotResponding, DeviceUnavailable, ProtocolViolation
from biblioedge.drivers.rfid.reader import RfidError, TagGone

log = logging.getLogger("biblioedge.drivers.rfid")

START, PROBE = 0xD6, 0xD5
OK, NO_TAG = 0x00, 0x06
INVENTORY, READ, WRITE, READ_AFI, WRITE_AFI = 0xFE, 0x02, 0x04, 0x0A, 0x09
BAUD = 19200


def crc(data: bytes) -> int:
    value = 0xFFFF
    for byte in data:
        value ^= byte << 8
        for _ in range(8):
            value = ((value << 1) ^ 0x1021) if value & 0x8000 else value << 1
            value &= 0xFFFF
    return value ^ 0xFFFF


def frame(payload: bytes, start: int = START) -> bytes:
    body = (len(payload) + 2).to_bytes(2, "big") + payload
    return bytes([start]) + body + crc(body).to_bytes(2, "big")


def uid_wire(uid: str) -> bytes:
    raw = bytes.fromhex(uid)
    if len(raw) != 8:
        raise ValueError(f"an ISO 15693 UID is 8 bytes, not {uid!r}")
    return raw[::-1]


def uid_text(wire: bytes) -> str:
    return wire[::-1].hex().upper()


class FrameReader:
    """Splits a byte stream into frames, skipping noise before a start byte. Shared by the
    driver and the simulator, so both ends agree on what a frame is."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """(start byte, payload) of every whole frame; a frame with a bad CRC is dropped (its
        start byte skipped, so a frame hiding behind the noise is still found)."""
        self.buf += data
        out = []
        while self.buf:
            at = next((i for i, b in enumerate(self.buf) if b in (START, PROBE)), None)
            if at is None:
                self.dropped += len(self.buf)
                self.buf.clear()
                break
            if at:
                self.dropped += at
                del self.buf[:at]
            if len(self.buf) < 3:
                break
            length = int.from_bytes(self.buf[1:3], "big")
            if length < 3 or length > 1024:
                self.dropped += 1
                del self.buf[:1]
                continue
            if len(self.buf) < 3 + length:
                break
            body = bytes(self.buf[1 : 1 + length])
            stored = int.from_bytes(self.buf[1 + length : 3 + length], "big")
            if crc(body) != stored:
                self.dropped += 1
                del self.buf[:1]
                continue
            out.append((self.buf[0], body[2:]))
            del self.buf[: 3 + length]
        return out


class M810Reader:
    """One 3M 810 on a serial port. Thread-safe: one command at a time. A garbled or lost
    answer is asked again once (every command here is idempotent); a dead reader is
    DeviceNotResponding, a tag that left is TagGone."""

    block_size = 4

    def __init__(self, port: str, *, timeout: float = 0.5, retries: int = 1) -> None:
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self._lock = threading.Lock()
        self._frames = FrameReader()
        try:
            self._ser = serial.Serial(port, BAUD, timeout=0.02, write_timeout=1.0)
        except (OSError, serial.SerialException) as exc:
            raise DeviceUnavailable(f"cannot open the RFID reader on {port}: {exc}") from exc
        self.exchanges = 0

    def close(self) -> None:
        try:
            self._ser.close()
        except (OSError, serial.SerialException):
            pass

    def _exchange(self, payload: bytes, start: int = START) -> bytes:
        with self._lock:
            last: Exception | None = None
            for _ in range(self.retries + 1):
                try:
                    return self._once(payload, start)
                except (DeviceNotResponding, ProtocolViolation) as exc:
                    last = exc
                    log.debug("RFID reader: %s, asking again", exc)
            assert last is not None
            raise last

    def _once(self, payload: bytes, start: int) -> bytes:
        try:
            self._ser.reset_input_buffer()
            self._frames = FrameReader()
            self._ser.write(frame(payload, start))
            self.exchanges += 1
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                # what has arrived, at once: read(256) would sit out the port's timeout
                # (20 ms) on every answer shorter than 256 bytes
                data = read_available(self._ser, 256)
                for got_start, answer in self._frames.feed(data):
                    if got_start == start and answer[:1] == payload[:1]:
                        return answer
                    log.debug("RFID reader: skipped an answer to another command")
        except (OSError, serial.SerialException) as exc:
            raise DeviceUnavailable(f"the RFID reader on {self.port} went away: {exc}") from exc
        raise DeviceNotResponding(f"the RFID reader on {self.port} did not answer")

    def _tag_command(self, payload: bytes, uid: str) -> bytes:
        """Send, check the status and the echoed UID; the result after the UID."""
        answer = self._exchange(payload)
        if len(answer) < 2:
            raise ProtocolViolation(f"short answer {answer.hex()}")
        if answer[1] == NO_TAG:
            raise TagGone(f"tag {uid} did not answer")
        if answer[1] != OK:
            raise RfidError(f"the reader refused command 0x{payload[0]:02X}: status {answer[1]}")
        if answer[2:10] != uid_wire(uid):
            raise ProtocolViolation(f"answer for tag {uid_text(answer[2:10])}, asked {uid}")
        return answer[10:]

    def version(self) -> str:
        answer = self._exchange(bytes([0x04, 0x00, 0x11]), PROBE)
        return ".".join(str(b) for b in answer[3:7])

    def inventory(self) -> list[str]:
        answer = self._exchange(bytes([INVENTORY, 0x00, 0x05]))
        if answer[1:4] != b"\x00\x00\x05" or len(answer) < 5:
            raise ProtocolViolation(f"unexpected inventory answer {answer.hex()}")
        count = answer[4]
        uids = answer[5:]
        if len(uids) != count * 8:
            raise ProtocolViolation(f"inventory says {count} tags but carries {len(uids)} bytes")
        return [uid_text(uids[i : i + 8]) for i in range(0, len(uids), 8)]

    def read_blocks(self, uid: str, start: int, count: int) -> bytes:
        rest = self._tag_command(bytes([READ]) + uid_wire(uid) + bytes([start, count]), uid)
        if not rest:
            raise ProtocolViolation("read answer without a block count")
        n = rest[0]
        if len(rest) != 1 + 6 * n:
            raise ProtocolViolation(f"read answer with {n} blocks carries {len(rest) - 1} bytes")
        out = bytearray()
        for i in range(n):
            number = int.from_bytes(rest[1 + 6 * i : 3 + 6 * i], "little")
            if number != start + i:
                raise ProtocolViolation(f"block {number} where {start + i} was expected")
            out += rest[3 + 6 * i : 7 + 6 * i]
        return bytes(out)

    def write_blocks(self, uid: str, start: int, data: bytes) -> None:
        if len(data) % 4 or not data:
            raise ValueError("whole 4-byte blocks only")
        count = len(data) // 4
        self._tag_command(bytes([WRITE]) + uid_wire(uid) + bytes([start, count, 0]) + data, uid)

    def read_afi(self, uid: str) -> int:
        rest = self._tag_command(bytes([READ_AFI]) + uid_wire(uid), uid)
        if len(rest) != 1:
            raise ProtocolViolation(f"AFI answer {rest.hex()}")
        return rest[0]

    def write_afi(self, uid: str, afi: int) -> None:
        self._tag_command(bytes([WRITE_AFI]) + uid_wire(uid) + bytes([afi]), uid)

"""What a self-check needs from an RFID reader, whichever protocol it speaks, and the item
security built on it: every security write is read back before anyone is told it is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from biblioedge.drivers.errors import DriverError
from biblioedge.drivers.rfid.iso28560 import DSFID_28560_2, TagData, TagDataError, complete, decode

Security = Literal["secured", "loaned", "unknown"]


class RfidError(DriverError):
    """The reader could not do what was asked."""


class TagGone(RfidError):
    """The tag did not answer: lifted off the pad, or out of the field."""


class SecurityNotVerified(RfidError):
    """The security value read back is not the one written: the item is not safe to lend."""


class TagReader(Protocol):
    """One reader's field. UIDs are ISO 15693 UIDs as 16 hex digits, most significant first."""

    block_size: int

    def inventory(self) -> list[str]: ...

    def read_blocks(self, uid: str, start: int, count: int) -> bytes: ...

    def write_blocks(self, uid: str, start: int, data: bytes) -> None: ...

    def read_afi(self, uid: str) -> int: ...

    def write_afi(self, uid: str, afi: int) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class AfiScheme:
    """The AFI values that mean "secured" (in the library) and "loaned". Vendors differ (ISO
    0x07/0xC2, 3M 0xD7/0xDA): the kiosk writes its own pair and reads every known one."""

    secured: int = 0x07
    loaned: int = 0xC2
    also_secured: frozenset[int] = frozenset({0x07, 0xD7})
    also_loaned: frozenset[int] = frozenset({0xC2, 0xDA})

    def state(self, afi: int) -> Security:
        if afi == self.secured or afi in self.also_secured:
            return "secured"
        if afi == self.loaned or afi in self.also_loaned:
            return "loaned"
        return "unknown"


@dataclass(frozen=True)
class PadItem:
    """One tag on the pad: its data, or why it could not be read."""

    uid: str
    data: TagData | None
    security: Security
    afi: int | None
    error: str | None = None

    @property
    def item_id(self) -> str | None:
        return self.data.primary_item_id if self.data else None


#: Blocks read per command; most library tags (ICODE SLIX) have 28 four-byte blocks.
CHUNK_BLOCKS = 8
MAX_BLOCKS = 64


def read_memory(reader: TagReader, uid: str, *, max_blocks: int = MAX_BLOCKS) -> bytes:
    """The tag's user memory, read in chunks until its data ends (part 2 terminator, or the
    32 bytes of a part 3 tag with a valid CRC), so a short record costs one command."""
    memory = b""
    while len(memory) // reader.block_size < max_blocks:
        count = min(CHUNK_BLOCKS, max_blocks - len(memory) // reader.block_size)
        chunk = reader.read_blocks(uid, len(memory) // reader.block_size, count)
        memory += chunk
        if len(chunk) < count * reader.block_size or complete(memory):
            break
        if len(memory) >= 32:
            try:
                decode(memory, model="28560-3")
                break
            except TagDataError:
                pass
    return memory


def read_item(reader: TagReader, uid: str, scheme: AfiScheme) -> PadItem:
    """A tag's item data and security state; a tag that cannot be decoded is still listed,
    with the decoder's message (and byte offset), so the reader can be told which one."""
    afi = reader.read_afi(uid)
    memory = read_memory(reader, uid)
    try:
        data = decode(memory)
    except TagDataError as exc:
        return PadItem(uid, None, scheme.state(afi), afi, f"unreadable tag data: {exc}")
    return PadItem(uid, data, scheme.state(afi), afi)


def set_security(reader: TagReader, uid: str, scheme: AfiScheme, *, secured: bool) -> None:
    """Write the AFI and read it back. TagGone when the tag left; SecurityNotVerified when the
    value read back differs (a tag that acknowledged but did not store it)."""
    want = scheme.secured if secured else scheme.loaned
    reader.write_afi(uid, want)
    got = reader.read_afi(uid)
    if got != want:
        raise SecurityNotVerified(f"tag {uid}: wrote AFI 0x{want:02X}, read back 0x{got:02X}")


def write_item(reader: TagReader, uid: str, memory: bytes) -> None:
    """Program a tag and verify every byte."""
    pad = -len(memory) % reader.block_size
    memory += bytes(pad)
    for start in range(0, len(memory), CHUNK_BLOCKS * reader.block_size):
        reader.write_blocks(
            uid,
            start // reader.block_size,
            memory[start : start + CHUNK_BLOCKS * reader.block_size],
        )
    back = b""
    while len(back) < len(memory):
        start = len(back) // reader.block_size
        count = min(CHUNK_BLOCKS, (len(memory) - len(back)) // reader.block_size)
        back += reader.read_blocks(uid, start, count)
    if back[: len(memory)] != memory:
        raise RfidError(f"tag {uid}: the data read back differs from what was written")


__all__ = [
    "DSFID_28560_2",
    "AfiScheme",
    "PadItem",
    "RfidError",
    "SecurityNotVerified",
    "TagGone",
    "TagReader",
    "read_item",
    "read_memory",
    "set_security",
    "write_item",
]

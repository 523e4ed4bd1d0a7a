"""Library item tags: the ISO 28560-2 data model (ISO/IEC 15962 data sets) and the ISO 28560-3
fixed 32-byte model, decoded and encoded.

Decoding is strict about structure and lenient about content: a truncated element, a relative
OID 0, a length past the end of the tag or a bad CRC is a :class:`TagDataError` that names the
byte offset, so a librarian can re-tag the item; a data element this code does not know is kept
by number rather than refused.

Part 2 memory is a sequence of data sets ended by a 0x00 byte::

    precursor | [OID extension] | [offset] | length | compacted data | [padding]

The precursor holds an offset flag (bit 7), the compaction scheme (bits 6-4) and the relative
OID (bits 3-0); 15 in the low nibble means the next byte holds ``OID - 15``. The offset byte,
when flagged, counts 0x00 padding bytes after the data (used to align the next set to a block).
The primary item identifier comes first, the content parameter (a bit map of the OIDs from 3 on
that follow) second. Compaction: 1 integer, 2 numeric (decimal digits with a leading 1 so that
leading zeros survive), 3/4/5 five-, six- and seven-bit codes, 6 octets, 7 UTF-8, and 0 the
application-defined scheme that ISO 28560-2 uses for ISIL codes (see :func:`isil_pack`).

Part 3 (the Danish model): byte 0 version (high nibble, 1) and type of usage (low nibble),
bytes 1-2 number of parts and ordinal part, 3-18 primary item id, 19-20 a CRC-16/CCITT (0x1021,
initial 0xFFFF) stored low byte first over every other byte, 21-22 the owner's country and 23-31
the rest of its ISIL.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from biblioedge.drivers.errors import ProtocolViolation

Model = Literal["28560-2", "28560-3"]

#: Data set format identifier of ISO 28560-2 tags (access method "no directory", format 6).
DSFID_28560_2 = 0x06

OIDS: dict[int, str] = {
    1: "primary_item_id",
    2: "content_parameter",
    3: "owner_institution",
    4: "set_information",
    5: "type_of_usage",
    6: "shelf_location",
    7: "onix_media_format",
    8: "marc_media_format",
    9: "supplier_id",
    10: "order_number",
    11: "ill_borrowing_institution",
    12: "ill_borrowing_transaction",
    13: "gs1_product_id",
    14: "alternative_unique_item_id",
    15: "local_data_a",
    16: "local_data_b",
    17: "title",
    18: "local_product_id",
    19: "media_format_other",
    20: "supply_chain_stage",
    21: "supplier_invoice_number",
    22: "alternative_item_id",
    23: "alternative_owner_institution",
    24: "owner_subsidiary",
    25: "alternative_ill_borrowing_institution",
    26: "local_data_c",
}
BY_NAME = {name: oid for oid, name in OIDS.items()}
#: Elements that hold an ISIL and get the ISIL compaction.
ISIL_OIDS = frozenset({3, 11, 23, 25})

#: Type of usage (ISO 28560-1): high nibble the main category, low nibble the refinement.
USAGE = {
    0x00: "acquisition",
    0x10: "circulation",
    0x11: "not_for_circulation",
    0x12: "circulation_not_offline",
    0x13: "reference",
    0x80: "discarded",
    0x90: "patron_card",
    0xA0: "library_equipment",
}
#: Codes that forbid lending or taking back while the library system is unreachable.
NOT_OFFLINE = frozenset({0x12})
#: Part 3's four-bit type of usage, mapped onto the part 2 codes.
USAGE_3_TO_2 = {0: 0x00, 1: 0x10, 2: 0x11, 7: 0x80, 8: 0x90}
USAGE_2_TO_3 = {v: k for k, v in USAGE_3_TO_2.items()}

#: Longest integer or numeric value accepted (38 digits): a longer one is a corrupt length.
MAX_NUMBER_BYTES = 16

INTEGER, NUMERIC, FIVE, SIX, SEVEN, OCTETS, UTF8 = 1, 2, 3, 4, 5, 6, 7
APPLICATION = 0


class TagDataError(ProtocolViolation):
    """Tag memory that is not valid item data; ``offset`` is the byte where it goes wrong."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"at byte {offset}: {message}")
        self.reason = message
        self.offset = offset


@dataclass(frozen=True)
class TagData:
    """One item's tag, whichever model it was written in."""

    primary_item_id: str
    model: Model = "28560-2"
    owner_institution: str | None = None
    parts: int = 1
    part: int = 1
    type_of_usage: int | None = None
    #: Every other element by name (``OIDS``) or ``oid_N`` for unknown ones.
    elements: dict[str, str] = field(default_factory=dict)

    @property
    def usage(self) -> str | None:
        if self.type_of_usage is None:
            return None
        return USAGE.get(self.type_of_usage, f"0x{self.type_of_usage:02X}")

    @property
    def loanable(self) -> bool:
        """Items the kiosk may lend: a circulation item, or one that says nothing."""
        return self.type_of_usage is None or self.type_of_usage in (0x10, 0x12)

    @property
    def offline_forbidden(self) -> bool:
        return self.type_of_usage in NOT_OFFLINE

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "primary_item_id": self.primary_item_id,
            "owner_institution": self.owner_institution,
            "set": {"parts": self.parts, "part": self.part},
            "type_of_usage": self.type_of_usage,
            "usage": self.usage,
            "offline_forbidden": self.offline_forbidden,
            **self.elements,
        }


# -- bit packing ------------------------------------------------------------------------


def _pack(codes: list[tuple[int, int]]) -> bytes:
    """(value, width) codes, most significant bit first, zero bits to the byte boundary."""
    acc = nbits = 0
    for value, width in codes:
        acc = (acc << width) | value
        nbits += width
    pad = -nbits % 8
    return (acc << pad).to_bytes((nbits + pad) // 8, "big")


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def take(self, width: int) -> int | None:
        if self.left < width:
            return None
        self.left -= width
        return (self.value >> self.left) & ((1 << width) - 1)


def _chars(text: str, width: int) -> list[int] | None:
    """The codes of ``text`` in the 5-, 6- or 7-bit set, or None if it does not fit. Code 0
    is never a character, so a trailing zero group is padding."""
    out = []
    for ch in text:
        c = ord(ch)
        if width == 5 and 0x41 <= c <= 0x5F:
            out.append(c & 0x1F)
        elif width == 6 and 0x20 <= c <= 0x5F and c != 0x40:
            out.append(c & 0x3F)
        elif width == 7 and 0x01 <= c <= 0x7F:
            out.append(c)
        else:
            return None
    return out


def _unchars(data: bytes, width: int) -> str:
    bits = _Bits(data)
    out = []
    while (code := bits.take(width)) is not None:
        if code == 0:
            if bits.left >= 8:
                raise ValueError("a zero code inside the text")
            break
        if width == 5:
            out.append(chr(0x40 | code))
        elif width == 6:
            out.append(chr(code if code >= 0x20 else 0x40 | code))
        else:
            out.append(chr(code))
    return "".join(out)


# -- ISIL compaction ----------------------------------------------------------------------

_ISIL_PUNCT = "-:/"
_UPPER, _LOWER, _DIGIT = "U", "L", "D"


def _isil_class(ch: str) -> str | None:
    if "A" <= ch <= "Z":
        return _UPPER
    if "a" <= ch <= "z":
        return _LOWER
    if "0" <= ch <= "9":
        return _DIGIT
    if ch in _ISIL_PUNCT:
        return "P"
    return None


def isil_pack(isil: str) -> bytes | None:
    """ISIL compaction: three code sets that latch into each other. Upper and lower case
    letters are five bits (1-26 the letters, 27-29 ``- : /``, 30 and 31 latch to the other
    letter set and to digits); digits are four bits (0-9, 10-12 ``- : /``, 13 and 14 latch to
    upper and lower case, 15 ends). Starts in upper case; a zero group (letters) or 15
    (digits) ends the string when padding leaves room for one. None if a character is not
    allowed in an ISIL (ISO 15511: letters, digits, ``- : /``)."""
    mode = _UPPER
    codes: list[tuple[int, int]] = []
    for ch in isil:
        kind = _isil_class(ch)
        if kind is None:
            return None
        if kind == "P":
            i = _ISIL_PUNCT.index(ch)
            codes.append((27 + i, 5) if mode != _DIGIT else (10 + i, 4))
            continue
        if kind != mode:
            if mode == _DIGIT:
                codes.append((13 if kind == _UPPER else 14, 4))
            elif kind == _DIGIT:
                codes.append((31, 5))
            else:
                codes.append((30, 5))
            mode = kind
        if mode == _DIGIT:
            codes.append((ord(ch) - 0x30, 4))
        else:
            codes.append((ord(ch.upper()) - 0x40, 5))
    nbits = sum(w for _, w in codes)
    width = 4 if mode == _DIGIT else 5
    if -nbits % 8 >= width:
        codes.append((15 if mode == _DIGIT else 0, width))
    return _pack(codes)


def isil_unpack(data: bytes) -> str:
    bits = _Bits(data)
    mode = _UPPER
    out = []
    while True:
        width = 4 if mode == _DIGIT else 5
        code = bits.take(width)
        if code is None:
            break
        if mode == _DIGIT:
            if code <= 9:
                out.append(chr(0x30 + code))
            elif code <= 12:
                out.append(_ISIL_PUNCT[code - 10])
            elif code in (13, 14):
                mode = _UPPER if code == 13 else _LOWER
            else:
                break
        elif code == 0:
            break
        elif code <= 26:
            ch = chr(0x40 + code)
            out.append(ch if mode == _UPPER else ch.lower())
        elif code <= 29:
            out.append(_ISIL_PUNCT[code - 27])
        elif code == 30:
            mode = _LOWER if mode == _UPPER else _UPPER
        else:
            mode = _DIGIT
    if bits.left >= 8:
        raise ValueError("ISIL ends before its data does")
    return "".join(out)


# -- compaction choice ------------------------------------------------------------------


def compact(text: str, oid: int) -> tuple[int, bytes]:
    """The shortest (compaction code, bytes) for a text value."""
    options: list[tuple[int, bytes]] = []
    if oid in ISIL_OIDS and (packed := isil_pack(text)) is not None:
        options.append((APPLICATION, packed))
    if text.isascii() and text.isdigit():
        if text[0] != "0" or text == "0":
            n = int(text)
            options.append((INTEGER, n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")))
        n = int("1" + text)
        options.append((NUMERIC, n.to_bytes((n.bit_length() + 7) // 8, "big")))
    for code, width in ((FIVE, 5), (SIX, 6), (SEVEN, 7)):
        chars = _chars(text, width)
        if chars is not None:
            codes = [(c, width) for c in chars]
            options.append((code, _pack(codes)))
    options.append((UTF8, text.encode("utf-8")))
    return min(options, key=lambda o: (len(o[1]), o[0]))


def expand(code: int, data: bytes, oid: int) -> str:
    """The text of a compacted value; ValueError when the bytes do not fit the scheme."""
    if code in (INTEGER, NUMERIC) and len(data) > MAX_NUMBER_BYTES:
        raise ValueError(f"{len(data)} bytes is not a number an item tag would hold")
    if code == INTEGER:
        return str(int.from_bytes(data, "big"))
    if code == NUMERIC:
        digits = str(int.from_bytes(data, "big"))
        if not digits.startswith("1"):
            raise ValueError("numeric compaction without its leading 1")
        return digits[1:]
    if code in (FIVE, SIX, SEVEN):
        return _unchars(data, {FIVE: 5, SIX: 6, SEVEN: 7}[code])
    if code == UTF8:
        return unicodedata.normalize("NFC", data.decode("utf-8"))
    if code == APPLICATION and oid in ISIL_OIDS:
        return isil_unpack(data)
    return data.hex().upper()  # octets, or an application scheme we do not know


# -- part 2 -----------------------------------------------------------------------------


def _content_parameter(oids: list[int]) -> bytes:
    later = [o for o in oids if o >= 3]
    bits = 0
    top = max(later)
    nbytes = (top - 3) // 8 + 1
    for o in later:
        bits |= 1 << (nbytes * 8 - 1 - (o - 3))
    return bits.to_bytes(nbytes, "big")


def _data_set(oid: int, code: int, data: bytes) -> bytes:
    if len(data) > 127:
        raise ValueError(f"{OIDS.get(oid, oid)}: {len(data)} bytes is more than a tag holds")
    if oid < 15:
        return bytes([(code << 4) | oid, len(data)]) + data
    return bytes([(code << 4) | 0x0F, oid - 15, len(data)]) + data


def encode_2(tag: TagData, *, block_size: int = 4) -> bytes:
    """ISO 28560-2 memory: primary id, content parameter, the rest by OID, 0x00, zeros to a
    whole block."""
    if not tag.primary_item_id:
        raise ValueError("an item tag needs a primary item id")
    values: dict[int, tuple[int, bytes]] = {}
    if tag.owner_institution:
        values[3] = compact(tag.owner_institution, 3)
    if (tag.parts, tag.part) != (1, 1):
        if not 1 <= tag.part <= tag.parts <= 255:
            raise ValueError(f"part {tag.part} of {tag.parts} is not a set")
        width = len(str(tag.parts))
        values[4] = compact(f"{tag.parts:0{width}d}{tag.part:0{width}d}", 4)
    if tag.type_of_usage is not None:
        if not 0 <= tag.type_of_usage <= 0xFF:
            raise ValueError("type of usage is one byte")
        values[5] = (OCTETS, bytes([tag.type_of_usage]))
    for name, value in tag.elements.items():
        if name == "content_parameter":
            continue  # recomputed from what is written
        oid = BY_NAME.get(name)
        if oid is None and name.startswith("oid_") and name[4:].isascii() and name[4:].isdigit():
            oid = int(name[4:])
        if oid is None or oid < 3 or oid > 15 + 255 or oid in (3, 4, 5):
            raise ValueError(f"unknown or reserved data element {name!r}")
        values[oid] = compact(unicodedata.normalize("NFC", value), oid)
    out = bytearray(_data_set(1, *compact(tag.primary_item_id, 1)))
    if values:
        out += _data_set(2, OCTETS, _content_parameter(sorted(values)))
    for oid in sorted(values):
        out += _data_set(oid, *values[oid])
    out.append(0)
    out += bytes(-len(out) % block_size)
    return bytes(out)


def _need(memory: bytes, pos: int, n: int, what: str, start: int) -> None:
    if pos + n > len(memory):
        raise TagDataError(f"{what} needs {n} byte(s), the tag ends at byte {len(memory)}", start)


def decode_2(memory: bytes) -> TagData:
    pos = 0
    seen: dict[int, str] = {}
    where: dict[int, int] = {}  # byte where each element starts, for the error messages
    usage: int | None = None
    if not memory or memory[0] == 0:
        raise TagDataError("the tag is blank: no data set", 0)
    while pos < len(memory) and memory[pos] != 0:
        start = pos
        precursor = memory[pos]
        pos += 1
        code = (precursor >> 4) & 0x07
        oid = precursor & 0x0F
        if oid == 0x0F:
            _need(memory, pos, 1, "the relative-OID extension", start)
            oid = 15 + memory[pos]
            pos += 1
        if oid == 0:
            raise TagDataError("relative OID 0 is not a data element", start)
        pad = 0
        if precursor & 0x80:
            _need(memory, pos, 1, "the offset byte", start)
            pad = memory[pos]
            pos += 1
        _need(memory, pos, 1, "the length byte", start)
        length = memory[pos]
        pos += 1
        name = OIDS.get(oid, f"oid_{oid}")
        _need(memory, pos, length + pad, f"element {oid} ({name})", start)
        data = memory[pos : pos + length]
        pos += length + pad
        if oid in seen:
            raise TagDataError(f"element {oid} ({name}) appears twice", start)
        where[oid] = start
        if not seen and oid != 1:
            raise TagDataError(f"the first element is {oid} ({name}), not the item id", start)
        try:
            if oid == 5:
                if len(data) != 1:
                    raise ValueError("type of usage is one byte")
                usage = data[0]
                seen[oid] = ""
                continue
            seen[oid] = data.hex().upper() if oid == 2 else expand(code, data, oid)
        except (ValueError, UnicodeDecodeError) as exc:
            raise TagDataError(f"element {oid} ({name}) cannot be read: {exc}", start) from exc
    if 1 not in seen:  # pragma: no cover - the loop refuses a tag that starts otherwise
        raise TagDataError("no primary item id", 0)
    parts = part = 1
    if 4 in seen:
        digits = seen[4]
        half = len(digits) // 2
        if len(digits) % 2 or not (digits.isascii() and digits.isdigit()) or half == 0:
            raise TagDataError(f"set information {digits!r} is not two numbers", where[4])
        parts, part = int(digits[:half]), int(digits[half:])
        if not 1 <= part <= parts:
            raise TagDataError(f"set information says part {part} of {parts}", where[4])
    others = {OIDS.get(o, f"oid_{o}"): v for o, v in seen.items() if o not in (1, 3, 4, 5)}
    return TagData(
        primary_item_id=seen[1],
        model="28560-2",
        owner_institution=seen.get(3),
        parts=parts,
        part=part,
        type_of_usage=usage,
        elements=others,
    )


# -- part 3 -----------------------------------------------------------------------------


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _crc_3(block: bytes) -> int:
    return crc16_ccitt(block[:19] + block[21:32])


def _ascii_field(raw: bytes, where: int, what: str) -> str:
    text = raw.rstrip(b"\x00")
    if b"\x00" in text or not all(0x20 <= b < 0x7F for b in text):
        raise TagDataError(f"{what} is not printable text", where)
    return text.decode("ascii")


def encode_3(tag: TagData) -> bytes:
    usage = USAGE_2_TO_3.get(tag.type_of_usage if tag.type_of_usage is not None else 0x10)
    if usage is None:
        raise ValueError(f"type of usage {tag.usage} has no ISO 28560-3 code")
    item = tag.primary_item_id.encode("ascii")
    if not item or len(item) > 16:
        raise ValueError("an ISO 28560-3 item id is 1-16 ASCII characters")
    if not 1 <= tag.part <= tag.parts <= 255:
        raise ValueError(f"part {tag.part} of {tag.parts} is not a set")
    owner = tag.owner_institution or ""
    country, _, library = owner.partition("-") if "-" in owner else ("", "", owner)
    if len(country) not in (0, 2) or len(library) > 9 or not owner.isascii():
        raise ValueError(f"owner {owner!r} does not fit ISO 28560-3 (CC-LIBRARY, 2+9)")
    block = bytearray(32)
    block[0] = 0x10 | usage
    block[1], block[2] = tag.parts, tag.part
    block[3 : 3 + len(item)] = item
    block[21 : 21 + len(country)] = country.encode("ascii")
    block[23 : 23 + len(library)] = library.encode("ascii")
    crc = _crc_3(bytes(block))
    block[19], block[20] = crc & 0xFF, crc >> 8
    return bytes(block)


def decode_3(memory: bytes) -> TagData:
    if len(memory) < 32:
        raise TagDataError(f"an ISO 28560-3 tag holds 32 bytes, this one {len(memory)}", 0)
    block = memory[:32]
    if block[0] >> 4 != 1:
        raise TagDataError(f"ISO 28560-3 version {block[0] >> 4} is not known", 0)
    stored = block[19] | block[20] << 8
    computed = _crc_3(block)
    if stored != computed:
        raise TagDataError(
            f"CRC mismatch: the tag says 0x{stored:04X}, its data gives 0x{computed:04X}", 19
        )
    parts, part = block[1], block[2]
    if not 1 <= part <= parts:
        raise TagDataError(f"set information says part {part} of {parts}", 1)
    item = _ascii_field(block[3:19], 3, "the primary item id")
    if not item:
        raise TagDataError("the primary item id is empty", 3)
    country = _ascii_field(block[21:23], 21, "the owner's country")
    library = _ascii_field(block[23:32], 23, "the owner library")
    owner = f"{country}-{library}" if country else library
    return TagData(
        primary_item_id=item,
        model="28560-3",
        owner_institution=owner or None,
        parts=parts,
        part=part,
        type_of_usage=USAGE_3_TO_2.get(block[0] & 0x0F, 0x10 | (block[0] & 0x0F)),
    )


def decode(memory: bytes, dsfid: int | None = None, model: Model | None = None) -> TagData:
    """Either model: the one asked for, the DSFID's, or part 3 when its CRC holds."""
    if model == "28560-3":
        return decode_3(memory)
    if model == "28560-2" or dsfid == DSFID_28560_2:
        return decode_2(memory)
    looks_3 = len(memory) >= 32 and memory[0] >> 4 == 1
    if looks_3 and _crc_3(memory) == (memory[19] | memory[20] << 8):
        return decode_3(memory)
    try:
        return decode_2(memory)
    except TagDataError as exc:
        if not looks_3:
            raise
        # 0x1_ starts both a part 3 tag and a common part 2 one: say what each would be
        try:
            decode_3(memory)
        except TagDataError as exc3:
            raise TagDataError(
                f"{exc.reason}; read as ISO 28560-3 instead, at byte {exc3.offset}: {exc3.reason}",
                exc.offset,
            ) from exc
        raise  # pragma: no cover - decode_3 succeeds only when the CRC held


def encode(tag: TagData, *, block_size: int = 4) -> bytes:
    return encode_3(tag) if tag.model == "28560-3" else encode_2(tag, block_size=block_size)


def complete(memory: bytes) -> bool:
    """Whether a prefix of part 2 memory already holds its terminator (so a reader can stop
    reading blocks). True for anything that is not a well-formed prefix, too: more blocks
    would not make it readable."""
    pos = 0
    while pos < len(memory):
        precursor = memory[pos]
        if precursor == 0:
            return True
        pos += 1
        if precursor & 0x0F == 0x0F:
            pos += 1
        pad = 0
        if precursor & 0x80:
            if pos >= len(memory):
                return False
            pad = memory[pos]
            pos += 1
        if pos >= len(memory):
            return False
        pos += 1 + memory[pos] + pad
    return False

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
when flagged, counts 0x00 padding bytes after the data (writers use it to align the next set
to a block they lock). A tag whose memory is full may end without the 0x00. The primary item
identifier comes first, the content parameter (a bit map of the OIDs from 3 on that follow,
OID 3 the top bit; compaction 0 in its precursor) second. Compaction: 1 integer, 2 numeric
(four bits a digit, an odd last one filled with 1111), 3/4/5 five-, six- and seven-bit codes
(padding: zeros, a 1 then zeros, ones), 6 octets, 7 UTF-8, and 0 the application-defined
scheme that ISO 28560-2 uses for ISIL codes (see :func:`isil_pack`).

Sources, since the standards themselves are not public: the worked example of ISO 28560-2 as
adopted in GB/T 35660.2-2017, and the compaction vectors and production tag dumps in the unit
tests of DigitalPlatform dp2 (UnitTestRFID/TestChip.cs, UnitTestRFID/TestRfid2.cs,
TestDp2Library/TestRfid.cs), an open-source library system whose self-checks, gates and
tagging stations read tags of libraries in production; the ISIL table and the type-of-usage
codes also agree with an independent Python decoder written for the tags of Finnish (Helmet)
libraries. tests/test_rfid.py checks each byte against those published vectors and dumps.
Until 2026-12 this module packed ISILs with a table of its own (other codes for "-" and the
case switches), numbers with a leading-1 scheme and type-of-usage codes of its own (0x12 for
"not offline", 0x90 a patron card): such tags must be written again.

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

#: Type of usage (ISO 28560-1): high nibble the class, low nibble the sub-qualifier. The
#: codes as deployed readers of Finnish and Chinese libraries interpret them (the offline
#: restrictions are sub-qualifiers of circulation; a patron card is class 8).
USAGE = {
    0x00: "acquisition",
    0x01: "acquisition_automated",
    0x02: "acquisition_manual",
    0x10: "circulation",
    0x11: "circulation_sorting",
    0x12: "circulation_no_sorting",
    0x13: "circulation_not_issue_offline",
    0x14: "circulation_not_return_offline",
    0x15: "circulation_not_offline",
    0x20: "not_for_circulation",
    0x30: "local_use",
    0x60: "no_information",
    0x70: "discarded",
    0x71: "discarded_for_sale",
    0x72: "discarded_sold",
    0x73: "discarded_for_disposal",
    0x80: "patron_card",
    0x81: "patron_card_adult",
    0x82: "patron_card_young_adult",
    0x83: "patron_card_child",
    0x90: "library_equipment",
}
#: Codes that forbid lending (issue) or taking back (return) while the library system is
#: unreachable: the kiosk refuses either offline for any of them.
NOT_OFFLINE = frozenset({0x13, 0x14, 0x15})
#: Part 3's four-bit type of usage is part 2's class: 0 acquisition, 1 circulation, 2 not for
#: circulation, 7 discarded, 8 patron card.
USAGE_3_TO_2 = {n: n << 4 for n in (0, 1, 2, 7, 8)}
USAGE_2_TO_3 = {v: k for k, v in USAGE_3_TO_2.items()}

#: Longest integer value accepted (38 digits): a longer one is a corrupt length.
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
        """Items the kiosk may lend: a circulation item (any sub-qualifier), or one that says
        nothing about its usage (no element, or class 6)."""
        return self.type_of_usage is None or self.type_of_usage >> 4 in (1, 6)

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
    """The codes of ``text`` in the 5-, 6- or 7-bit set, or None if it does not fit. A 6-bit
    text may not end in a space and a 7-bit one holds no DEL: those are what the padding
    looks like, so a decoder could not tell them from it."""
    out = []
    for ch in text:
        c = ord(ch)
        if width == 5 and 0x41 <= c <= 0x5F:
            out.append(c & 0x1F)
        elif width == 6 and 0x20 <= c <= 0x5F:
            out.append(c & 0x3F)
        elif width == 7 and 0x01 <= c <= 0x7E:
            out.append(c)
        else:
            return None
    if width == 6 and text.endswith(" "):
        return None
    return out


def _pack_chars(codes: list[int], width: int) -> bytes:
    """Codes to bytes with the padding ISO/IEC 15962 gives each set: zeros after 5-bit codes,
    a 1 then zeros after 6-bit codes (the start of a space), ones after 7-bit codes (DEL)."""
    nbits = len(codes) * width
    pad = -nbits % 8
    fill = {5: 0, 6: 1 << (pad - 1) if pad else 0, 7: (1 << pad) - 1}[width]
    return _pack([(c, width) for c in codes] + ([(fill, pad)] if pad else []))


def _unchars(data: bytes, width: int) -> str:
    bits = _Bits(data)
    out = []
    while (code := bits.take(width)) is not None:
        if width == 5:
            if code == 0:  # the zero padding: nothing but zeros may follow
                if bits.take(bits.left):
                    raise ValueError("a zero code inside the text")
                break
            out.append(chr(0x40 | code))
        elif width == 6:
            if code == 0x20 and bits.left == 0:
                break  # "100000" ending the last byte is padding, not a space
            out.append(chr(code if code & 0x20 else 0x40 | code))
        else:
            if code == 0x7F and bits.left == 0:
                break  # seven ones ending the last byte are padding
            out.append(chr(code))
    return "".join(out)


# -- ISIL compaction ----------------------------------------------------------------------
#
# ISO 28560-2 (annex on the ISIL, adopted unchanged as GB/T 35660.2-2017) packs an ISIL in
# three code sets that shift (one character) or latch (until the next latch) into each
# other. Upper and lower case are five bits: 0 is "-", 1-26 the letters, 27 is ":" in upper
# case and "/" in lower case, 28 latches to the other case, 29 shifts to it, 30 latches to
# digits, 31 shifts to them. Digits are four bits: 0-9, 10 "-", 11 ":", 12 latches to upper
# case, 13 shifts to it, 14 latches to lower case, 15 shifts to it. Decoding starts in upper
# case; the last byte is filled with 1 bits (a shift with nothing after it is padding).

_U, _L, _D = "U", "L", "D"
_PUNCT = {_U: {"-": 0, ":": 27}, _L: {"-": 0, "/": 27}, _D: {"-": 10, ":": 11}}
#: code -> (set switched to, whether only for one character) in each set
_CONTROL = {
    _U: {28: (_L, False), 29: (_L, True), 30: (_D, False), 31: (_D, True)},
    _L: {28: (_U, False), 29: (_U, True), 30: (_D, False), 31: (_D, True)},
    _D: {12: (_U, False), 13: (_U, True), 14: (_L, False), 15: (_L, True)},
}
_LATCH = {(m, t): c for m, cs in _CONTROL.items() for c, (t, one) in cs.items() if not one}
_SHIFT = {(m, t): c for m, cs in _CONTROL.items() for c, (t, one) in cs.items() if one}
_WIDTH = {_U: 5, _L: 5, _D: 4}


def _isil_sets(ch: str) -> str:
    """The code sets that hold ``ch``, the preferred one first ("" if none does)."""
    if "A" <= ch <= "Z":
        return _U
    if "a" <= ch <= "z":
        return _L
    if "0" <= ch <= "9":
        return _D
    return {"-": _U + _L + _D, ":": _U + _D, "/": _L}.get(ch, "")


def _isil_code(ch: str, mode: str) -> int:
    if ch in _PUNCT[mode]:
        return _PUNCT[mode][ch]
    return ord(ch) - (0x30 if mode == _D else 0x60 if mode == _L else 0x40)


def isil_pack(isil: str) -> bytes | None:
    """The ISIL compaction of ``isil``; None if a character is not allowed in an ISIL
    (ISO 15511: letters, digits, ``- : /``). A character outside the current set is shifted
    to when the one after it is back in the current set (or it is the last), latched to
    otherwise, as the deployed encoders do (DigitalPlatform dp2, the reference for the
    vectors in tests/test_rfid.py). One exception: a digit is shifted to only as the last
    character, since a widely deployed decoder (dp2's) stays in digits after a shifted one."""
    mode = _U
    codes: list[tuple[int, int]] = []
    for i, ch in enumerate(isil):
        sets = _isil_sets(ch)
        if not sets:
            return None
        if mode in sets:
            codes.append((_isil_code(ch, mode), _WIDTH[mode]))
            continue
        target = sets[0]
        nxt = isil[i + 1] if i + 1 < len(isil) else None
        back = nxt is None or mode in _isil_sets(nxt)
        if back and (target != _D or nxt is None):
            codes.append((_SHIFT[mode, target], _WIDTH[mode]))
            codes.append((_isil_code(ch, target), _WIDTH[target]))
        else:
            codes.append((_LATCH[mode, target], _WIDTH[mode]))
            mode = target
            codes.append((_isil_code(ch, mode), _WIDTH[mode]))
    nbits = sum(w for _, w in codes)
    pad = -nbits % 8
    if pad:
        codes.append(((1 << pad) - 1, pad))
    return _pack(codes)


def isil_unpack(data: bytes) -> str:
    bits = _Bits(data)
    mode = _U
    shifted: str | None = None  # the set the next character alone is read in
    out = []
    while True:
        current = shifted or mode
        code = bits.take(_WIDTH[current])
        if code is None:
            break
        if code in _CONTROL[current]:
            if shifted is not None:
                if bits.left >= 8:
                    raise ValueError("a shift is followed by another shift or latch")
                break  # ones filling the last byte
            target, shift = _CONTROL[current][code]
            if shift:
                shifted = target
            else:
                mode = target
            continue
        if current == _D:
            ch = str(code) if code <= 9 else "-:"[code - 10]
        elif code == 0:
            ch = "-"
        elif code == 27:
            ch = ":" if current == _U else "/"
        else:
            ch = chr((0x40 if current == _U else 0x60) + code)
        out.append(ch)
        shifted = None
    return "".join(out)


# -- compaction choice ------------------------------------------------------------------


def _numeric(text: str) -> bytes:
    """Numeric compaction: four bits a digit, a last odd digit filled with 1111."""
    digits = text + ("F" if len(text) % 2 else "")
    return bytes.fromhex(digits)


def _unnumeric(data: bytes) -> str:
    digits = data.hex().upper()
    if digits.endswith("F"):
        digits = digits[:-1]
    if not digits.isdigit():
        raise ValueError("numeric compaction holds a nibble that is not a digit")
    return digits


def compact(text: str, oid: int) -> tuple[int, bytes]:
    """The shortest (compaction code, bytes) for a text value."""
    options: list[tuple[int, bytes]] = []
    if oid in ISIL_OIDS and (packed := isil_pack(text)) is not None:
        options.append((APPLICATION, packed))
    if text.isascii() and text.isdigit():
        if text[0] != "0" or text == "0":
            n = int(text)
            options.append((INTEGER, n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")))
        options.append((NUMERIC, _numeric(text)))
    for code, width in ((FIVE, 5), (SIX, 6), (SEVEN, 7)):
        chars = _chars(text, width)
        if chars is not None:
            options.append((code, _pack_chars(chars, width)))
    options.append((UTF8, text.encode("utf-8")))
    return min(options, key=lambda o: (len(o[1]), o[0]))


def expand(code: int, data: bytes, oid: int) -> str:
    """The text of a compacted value; ValueError when the bytes do not fit the scheme."""
    if code == INTEGER and len(data) > MAX_NUMBER_BYTES:
        raise ValueError(f"{len(data)} bytes is not a number an item tag would hold")
    if code == INTEGER:
        return str(int.from_bytes(data, "big"))
    if code == NUMERIC:
        return _unnumeric(data)
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
        # compaction 0 in its precursor, as in the standard's worked example (02 01 D0)
        out += _data_set(2, APPLICATION, _content_parameter(sorted(values)))
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
        owner_institution=seen.get(3) or None,  # some vendors write an empty one
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
        type_of_usage=(block[0] & 0x0F) << 4,
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

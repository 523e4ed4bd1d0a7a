"""The chip's data groups: DG1 (MRZ), DG2 (face image), DG13 (Vietnamese personal data).

Every parser works on untrusted bytes: a malformed TLV raises :class:`LdsError` naming the
data group and the byte offset, never an IndexError.

**DG13** is not in ICAO 9303; its layout below is the one the Vietnamese chip uses as publicly
documented by the developers who read it (no official specification is published)::

    6D L
      30 L                          -- SEQUENCE
        30 L  02 01 <n>  <value>    -- one field: INTEGER index, then its value
        ...

Values are UTF8String (0C) or PrintableString (13); index 13 (parents) is a SEQUENCE holding
the father's and the mother's name. Indices: 1 ID number, 2 full name, 3 date of birth
(dd/mm/yyyy), 4 gender, 5 nationality, 6 ethnicity, 7 religion, 8 place of origin,
9 place of residence, 10 identifying marks, 11 issue date, 12 expiry date, 13 parents,
14 spouse, 15 old ID number. Unknown indices are kept under ``extra`` rather than dropped or
refused: newer cards may add fields.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from biblioedge.drivers.cccd.errors import CccdError


class LdsError(CccdError):
    pass


def read_ber(data: bytes, offset: int, where: str) -> tuple[int, bytes, int]:
    """(tag, value, next offset) for one- or two-byte tags and definite lengths."""
    if offset >= len(data):
        raise LdsError(f"{where}: truncated at offset {offset}")
    start = offset
    tag = data[offset]
    offset += 1
    if tag & 0x1F == 0x1F:  # multi-byte tag
        if offset >= len(data):
            raise LdsError(f"{where}: truncated tag at offset {start}")
        tag = tag << 8 | data[offset]
        offset += 1
    if offset >= len(data):
        raise LdsError(f"{where}: missing length at offset {offset}")
    first = data[offset]
    offset += 1
    if first < 0x80:
        length = first
    else:
        size = first & 0x7F
        if size == 0 or size > 3 or offset + size > len(data):
            raise LdsError(f"{where}: bad length at offset {offset - 1}")
        length = int.from_bytes(data[offset : offset + size], "big")
        offset += size
    if offset + length > len(data):
        raise LdsError(
            f"{where}: value at offset {start} runs "
            f"{offset + length - len(data)} bytes past the end"
        )
    return tag, data[offset : offset + length], offset + length


def children(value: bytes, where: str) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset < len(value):
        tag, inner, offset = read_ber(value, offset, where)
        out.append((tag, inner))
    return out


def unwrap(data: bytes, tag: int, where: str) -> bytes:
    got, value, end = read_ber(data, 0, where)
    if got != tag:
        raise LdsError(f"{where}: expected tag {tag:#x} at offset 0, found {got:#x}")
    return value


def parse_dg1(data: bytes) -> str:
    """The MRZ text of DG1 (61 { 5F1F mrz })."""
    for tag, value in children(unwrap(data, 0x61, "DG1"), "DG1"):
        if tag == 0x5F1F:
            try:
                return value.decode("ascii")
            except UnicodeDecodeError as exc:
                raise LdsError("DG1: MRZ is not ASCII") from exc
    raise LdsError("DG1: no MRZ (5F1F)")


def dg2_image(data: bytes) -> tuple[bytes, str]:
    """(image bytes, "jpeg" | "jp2") from DG2's biometric data block, wherever it nests."""
    unwrap(data, 0x75, "DG2")  # validates the outer structure
    for marker, kind in (
        (b"\xff\xd8\xff", "jpeg"),
        (b"\x00\x00\x00\x0cjP  ", "jp2"),
        (b"\xff\x4f\xff\x51", "jp2"),
    ):
        at = data.find(marker)
        if at >= 0:
            return data[at:], kind
    raise LdsError("DG2: no JPEG or JPEG 2000 image found")


DG13_FIELDS = {
    1: "id_number",
    2: "full_name",
    3: "date_of_birth",
    4: "gender",
    5: "nationality",
    6: "ethnicity",
    7: "religion",
    8: "place_of_origin",
    9: "place_of_residence",
    10: "identifying_marks",
    11: "issue_date",
    12: "expiry_date",
    14: "spouse_name",
    15: "old_id_number",
}


@dataclass
class Dg13:
    fields: dict[str, str] = field(default_factory=dict)
    extra: dict[int, str] = field(default_factory=dict)


def _text(tag: int, value: bytes, where: str) -> str:
    if tag not in (0x0C, 0x13, 0x16):
        raise LdsError(f"{where}: expected a string, found tag {tag:#x}")
    try:
        return unicodedata.normalize("NFC", value.decode("utf-8")).strip()
    except UnicodeDecodeError as exc:
        raise LdsError(f"{where}: not UTF-8") from exc


def parse_dg13(data: bytes) -> Dg13:
    body = unwrap(data, 0x6D, "DG13")
    out = Dg13()
    for tag, seq in children(body, "DG13"):
        if tag != 0x30:
            continue
        for item_tag, item in children(seq, "DG13 item list"):
            if item_tag != 0x30:
                continue
            parts = children(item, "DG13 item")
            if len(parts) < 2 or parts[0][0] != 0x02:
                raise LdsError("DG13: an item is not INTEGER index + value")
            index = int.from_bytes(parts[0][1], "big")
            vtag, value = parts[1]
            if index == 13:  # parents: SEQUENCE { father, mother } or two strings
                names = children(value, "DG13 parents") if vtag == 0x30 else parts[1:]
                texts = [_text(t, v, "DG13 parents") for t, v in names]
                if texts:
                    out.fields["father_name"] = texts[0]
                if len(texts) > 1:
                    out.fields["mother_name"] = texts[1]
                continue
            text = _text(vtag, value, f"DG13 field {index}")
            name = DG13_FIELDS.get(index)
            if name is None:
                out.extra[index] = text
            else:
                out.fields[name] = text
    return out


def build_dg13(fields: dict[str, str], father: str = "", mother: str = "") -> bytes:
    """DG13 bytes in the same layout (the chip simulator's data)."""
    from biblioedge.drivers.cccd.sm import tlv

    def item(index: int, value: bytes) -> bytes:
        return tlv(0x30, b"\x02\x01" + bytes([index]) + value)

    by_name = {v: k for k, v in DG13_FIELDS.items()}
    items = [item(by_name[k], tlv(0x0C, v.encode())) for k, v in fields.items()]
    if father or mother:
        items.append(item(13, tlv(0x30, tlv(0x0C, father.encode()) + tlv(0x0C, mother.encode()))))
    return tlv(0x6D, tlv(0x30, b"".join(items)))

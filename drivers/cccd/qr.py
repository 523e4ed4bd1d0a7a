"""The QR code on the back of a CCCD.

Payload (UTF-8, fields separated by ``|``)::

    ID(12) | old CMND(9, may be empty) | full name | date of birth ddmmyyyy | gender |
    address | issue date ddmmyyyy

Seen in the field and tolerated: a BOM, CR/LF at the end, trailing separators, and a six-field
variant without the old CMND. The ID is checked: 12 digits; the first three a province code;
the fourth the century-and-gender digit (0/1 male/female born 1900-1999, 2/3 for 2000-2099,
4/5 for 2100-2199 ...) consistent with the date of birth and gender; the fifth and sixth the
last two digits of the year of birth. Text is NFC-normalized.

When only the QR is at hand, the card's expiry (needed for BAC) follows from the law's renewal
ages: a card must be renewed at 25, 40 and 60; one issued less than two years before such an
age stays valid until the next one; after 60 it does not expire.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date

from biblioedge.drivers.cccd.errors import CccdError, NotACccdQr

#: Province and city codes that open a 12-digit personal identification number.
PROVINCES: dict[str, str] = {
    "001": "Hà Nội",
    "002": "Hà Giang",
    "004": "Cao Bằng",
    "006": "Bắc Kạn",
    "008": "Tuyên Quang",
    "010": "Lào Cai",
    "011": "Điện Biên",
    "012": "Lai Châu",
    "014": "Sơn La",
    "015": "Yên Bái",
    "017": "Hòa Bình",
    "019": "Thái Nguyên",
    "020": "Lạng Sơn",
    "022": "Quảng Ninh",
    "024": "Bắc Giang",
    "025": "Phú Thọ",
    "026": "Vĩnh Phúc",
    "027": "Bắc Ninh",
    "030": "Hải Dương",
    "031": "Hải Phòng",
    "033": "Hưng Yên",
    "034": "Thái Bình",
    "035": "Hà Nam",
    "036": "Nam Định",
    "037": "Ninh Bình",
    "038": "Thanh Hóa",
    "040": "Nghệ An",
    "042": "Hà Tĩnh",
    "044": "Quảng Bình",
    "045": "Quảng Trị",
    "046": "Thừa Thiên Huế",
    "048": "Đà Nẵng",
    "049": "Quảng Nam",
    "051": "Quảng Ngãi",
    "052": "Bình Định",
    "054": "Phú Yên",
    "056": "Khánh Hòa",
    "058": "Ninh Thuận",
    "060": "Bình Thuận",
    "062": "Kon Tum",
    "064": "Gia Lai",
    "066": "Đắk Lắk",
    "067": "Đắk Nông",
    "068": "Lâm Đồng",
    "070": "Bình Phước",
    "072": "Tây Ninh",
    "074": "Bình Dương",
    "075": "Đồng Nai",
    "077": "Bà Rịa - Vũng Tàu",
    "079": "Hồ Chí Minh",
    "080": "Long An",
    "082": "Tiền Giang",
    "083": "Bến Tre",
    "084": "Trà Vinh",
    "086": "Vĩnh Long",
    "087": "Đồng Tháp",
    "089": "An Giang",
    "091": "Kiên Giang",
    "092": "Cần Thơ",
    "093": "Hậu Giang",
    "094": "Sóc Trăng",
    "095": "Bạc Liêu",
    "096": "Cà Mau",
}

RENEWAL_AGES = (25, 40, 60)
MAX_PAYLOAD = 1024


@dataclass(frozen=True)
class CccdQr:
    id_number: str
    old_id: str
    full_name: str
    date_of_birth: date
    gender: str  # "Nam" | "Nữ"
    address: str
    issue_date: date | None
    province: str

    @property
    def document_number(self) -> str:
        """What BAC calls the document number: the last nine digits of the ID."""
        return self.id_number[-9:]

    @property
    def can(self) -> str:
        """PACE card access number: the last six digits of the ID."""
        return self.id_number[-6:]

    def as_dict(self) -> dict[str, str]:
        return {
            "id_number": self.id_number,
            "old_id": self.old_id,
            "full_name": self.full_name,
            "date_of_birth": self.date_of_birth.isoformat(),
            "gender": self.gender,
            "address": self.address,
            "issue_date": self.issue_date.isoformat() if self.issue_date else "",
            "province": self.province,
        }


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def _date(text: str, field: str) -> date:
    if len(text) != 8 or not (text.isascii() and text.isdigit()):
        raise CccdError(f"{field}: expected ddmmyyyy, got {text!r}")
    try:
        return date(int(text[4:]), int(text[2:4]), int(text[:2]))
    except ValueError as exc:
        raise CccdError(f"{field}: {text} is not a date") from exc


def _gender(text: str) -> str:
    g = _nfc(text).lower()
    if g in ("nam", "male", "m"):
        return "Nam"
    if g in ("nữ", "nu", "female", "f"):
        return "Nữ"
    raise CccdError(f"gender: {text!r} is neither Nam nor Nữ")


def check_id(id_number: str, born: date | None = None, gender: str | None = None) -> str:
    """Validate a 12-digit ID; returns its province. Raises CccdError with the reason."""
    if len(id_number) != 12 or not (id_number.isascii() and id_number.isdigit()):
        raise CccdError(f"ID must be 12 digits, got {id_number!r}")
    province = PROVINCES.get(id_number[:3])
    if province is None:
        raise CccdError(f"ID {id_number}: {id_number[:3]} is not a province code")
    code = int(id_number[3])
    century = 1900 + 100 * (code // 2)
    female = code % 2 == 1
    if born is not None:
        if not century <= born.year < century + 100:
            raise CccdError(
                f"ID {id_number}: digit 4 says born {century}s, date of birth {born.year}"
            )
        if id_number[4:6] != f"{born.year % 100:02d}":
            raise CccdError(
                f"ID {id_number}: digits 5-6 do not match the year of birth {born.year}"
            )
    if gender is not None and (gender == "Nữ") != female:
        raise CccdError(f"ID {id_number}: digit 4 does not match gender {gender}")
    return province


def parse_qr(payload: str | bytes) -> CccdQr:
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotACccdQr("not UTF-8 text") from exc
    if len(payload) > MAX_PAYLOAD:
        raise NotACccdQr("too long for a CCCD QR")
    text = payload.lstrip("\ufeff").strip().rstrip("|").strip()
    fields = text.split("|")
    if len(fields) == 6:  # variant without the old CMND
        fields.insert(1, "")
    if len(fields) != 7 or not (fields[0].strip().isascii() and fields[0].strip().isdigit()):
        raise NotACccdQr(f"not a CCCD QR: {len(fields)} fields")
    id_number, old_id, name, dob, gender, address, issued = (f.strip() for f in fields)
    if old_id and (len(old_id) != 9 or not (old_id.isascii() and old_id.isdigit())):
        raise CccdError(f"old ID must be 9 digits or empty, got {old_id!r}")
    born = _date(dob, "date of birth")
    sex = _gender(gender)
    province = check_id(id_number, born, sex)
    issue = _date(issued, "issue date") if issued else None
    if issue is not None and issue < born:
        raise CccdError("issue date is before the date of birth")
    if not _nfc(name):
        raise CccdError("full name is empty")
    return CccdQr(id_number, old_id, _nfc(name), born, sex, _nfc(address), issue, province)


def _birthday(born: date, age: int) -> date:
    try:
        return born.replace(year=born.year + age)
    except ValueError:  # born on 29 February
        return date(born.year + age, 3, 1)


def expiry_candidates(born: date, issued: date) -> list[date | None]:
    """Possible expiry dates, likeliest first; None means the card does not expire.

    By the rule, the expiry is the first renewal age at least two years after issue (else no
    expiry after 60). Cards issued right at a boundary have been dated either way, so the
    other future milestones and "no expiry" follow as fallbacks for BAC to try.
    """
    primary: date | None = None
    for age in RENEWAL_AGES:
        if issued < _birthday(born, age - 2):
            primary = _birthday(born, age)
            break
    out: list[date | None] = [primary]
    for age in RENEWAL_AGES:
        milestone = _birthday(born, age)
        if milestone > issued and milestone not in out:
            out.append(milestone)
    if None not in out:
        out.append(None)
    return out

"""The TD1 machine-readable zone (three lines of 30 characters) and its check digits.

Line 1: document code (2), issuing state (3), document number (9), check digit, optional data
(15; on a CCCD it carries the full 12-digit ID). Line 2: date of birth YYMMDD, check digit,
sex, date of expiry YYMMDD, check digit, nationality (3), optional data (11), composite check
digit over line 1 from position 6, and line 2's number, birth and expiry fields with their
check digits. Line 3: name, SURNAME<<GIVEN<NAMES.
"""

from __future__ import annotations

from dataclasses import dataclass

from biblioedge.drivers.cccd.errors import CccdError

_WEIGHTS = (7, 3, 1)


def char_value(c: str) -> int:
    if "0" <= c <= "9":  # str.isdigit() also takes "²" and other digits
        return int(c)
    if "A" <= c <= "Z":
        return ord(c) - ord("A") + 10
    if c == "<":
        return 0
    raise CccdError(f"{c!r} is not an MRZ character")


def check_digit(field: str) -> str:
    return str(sum(char_value(c) * _WEIGHTS[i % 3] for i, c in enumerate(field)) % 10)


@dataclass(frozen=True)
class TD1:
    document_code: str
    issuing_state: str
    document_number: str
    optional1: str
    date_of_birth: str  # YYMMDD
    sex: str
    date_of_expiry: str  # YYMMDD
    nationality: str
    optional2: str
    surname: str
    given_names: str

    @property
    def id_number(self) -> str:
        """The 12-digit CCCD number when the optional data carries it."""
        digits = self.optional1.replace("<", "")
        return digits if len(digits) == 12 and digits.isascii() and digits.isdigit() else ""

    def mrz_information(self) -> str:
        """What BAC keys are made from: number, birth and expiry with their check digits."""
        return bac_mrz_information(self.document_number, self.date_of_birth, self.date_of_expiry)

    def as_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {
            "id_number": self.id_number
        }


def _check(field: str, digit: str, what: str, offset: int) -> None:
    if check_digit(field) != digit:
        raise CccdError(
            f"{what}: check digit {digit!r} at offset {offset}, expected {check_digit(field)}"
        )


def parse_td1(text: str) -> TD1:
    lines = [ln.strip().upper() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    if len(lines) == 1 and len(lines[0]) == 90:
        lines = [lines[0][i : i + 30] for i in (0, 30, 60)]
    if len(lines) != 3 or any(len(ln) != 30 for ln in lines):
        raise CccdError(f"TD1 is 3 lines of 30 characters, got {[len(ln) for ln in lines]}")
    for n, line in enumerate(lines):
        for i, c in enumerate(line):
            if not ("0" <= c <= "9" or "A" <= c <= "Z" or c == "<"):
                raise CccdError(f"line {n + 1}, offset {i}: {c!r} is not an MRZ character")
    l1, l2, l3 = lines
    _check(l1[5:14], l1[14], "document number", 14)
    _check(l2[0:6], l2[6], "date of birth", 36)
    _check(l2[8:14], l2[14], "date of expiry", 44)
    _check(l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29], l2[29], "composite", 59)
    if l2[7] not in "MF<":
        raise CccdError(f"sex {l2[7]!r} at offset 37 is not M, F or <")
    surname, _, given = l3.partition("<<")
    return TD1(
        document_code=l1[0:2].rstrip("<"),
        issuing_state=l1[2:5],
        document_number=l1[5:14],
        optional1=l1[15:30],
        date_of_birth=l2[0:6],
        sex=l2[7],
        date_of_expiry=l2[8:14],
        nationality=l2[15:18],
        optional2=l2[18:29],
        surname=surname.replace("<", " ").strip(),
        given_names=given.replace("<", " ").strip(),
    )


def bac_mrz_information(document_number: str, birth_yymmdd: str, expiry_yymmdd: str) -> str:
    number = document_number.upper().ljust(9, "<")
    for value, what in ((birth_yymmdd, "date of birth"), (expiry_yymmdd, "date of expiry")):
        if len(value) != 6 or not (value.isascii() and value.isdigit()):
            raise CccdError(f"{what} must be YYMMDD, got {value!r}")
    return (
        number
        + check_digit(number)
        + birth_yymmdd
        + check_digit(birth_yymmdd)
        + expiry_yymmdd
        + check_digit(expiry_yymmdd)
    )


def parse_mrz_information(text: str) -> tuple[str, str, str]:
    """(number, birth, expiry) from a BAC MRZ-information string, check digits verified."""
    s = text.strip().upper()
    if len(s) < 24:
        raise CccdError(
            f"MRZ information is 24+ characters (number+cd, birth+cd, expiry+cd), got {len(s)}"
        )
    number, birth, expiry = s[:-15], s[-14:-8], s[-7:-1]
    _check(number, s[-15], "document number", len(s) - 15)
    _check(birth, s[-8], "date of birth", len(s) - 8)
    _check(expiry, s[-1], "date of expiry", len(s) - 1)
    return number, birth, expiry

"""SIP2 frames, tolerant on the way in and strict on the way out.

Why our own codec rather than pysip2's (which the dummy library system uses on the server
side): a kiosk talks to servers that are "sorta standard". pysip2 decodes strictly, so a reply
with one byte that is not valid in the account's encoding raises UnicodeDecodeError, and a
reply that omits a field the standard calls required (AO is often missing) is refused. Here
invalid bytes become U+FFFD, missing fields are simply absent, text is NFC-normalized, and
what we send is checked (no delimiter, CR or LF inside a value) so we never send a frame the
server would misread.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime

from biblioedge.drivers.errors import DriverError

#: Width of the fixed part of each response, after the two-character command id.
FIXED_WIDTH = {
    "94": 1,  # login: ok
    "98": 34,  # ACS status: six flags, timeout, retries, date, protocol version
    "24": 35,  # patron status: 14 status flags, language, date
    "64": 59,  # patron information: as 24, then six 4-digit counts
    "12": 22,  # checkout: ok, renewal ok, magnetic media, desensitize, date
    "10": 22,  # checkin: ok, resensitize, magnetic media, alert, date
    "30": 22,  # renew: ok, renewal ok, magnetic media, desensitize, date
    "66": 27,  # renew all: ok, renewed count, unrenewed count, date
    "18": 24,  # item information: circulation status, security marker, fee type, date
    "36": 19,  # end session: end session, date
    "96": 0,  # request SC resend
}

#: Patron status flag positions (SIP2 2.00 "patron status", Y = denied/true).
PATRON_BLOCKS = (
    "charge_privileges_denied",
    "renewal_privileges_denied",
    "recall_privileges_denied",
    "hold_privileges_denied",
    "card_reported_lost",
    "too_many_items_charged",
    "too_many_items_overdue",
    "too_many_renewals",
    "too_many_claims_of_items_returned",
    "too_many_items_lost",
    "excessive_outstanding_fines",
    "excessive_outstanding_fees",
    "recall_overdue",
    "too_many_items_billed",
)


class Sip2Error(DriverError):
    """The library system could not be reached or answered what cannot be used."""


class Sip2ChecksumError(Sip2Error):
    """A reply whose AZ checksum does not add up (asked for again with 97)."""


@dataclass(frozen=True)
class Dialect:
    """What one library system's SIP2 account expects (a per-account setting)."""

    encoding: str = "utf-8"
    error_detection: bool = True
    terminator: bytes = b"\r"
    delimiter: str = "|"

    def __post_init__(self) -> None:
        "".encode(self.encoding)  # LookupError for an unknown encoding, at configuration
        if self.terminator not in (b"\r", b"\r\n"):
            raise ValueError("the terminator is CR or CRLF")


@dataclass(frozen=True)
class Reply:
    command: str
    fixed: str
    fields: dict[str, list[str]] = field(default_factory=dict)
    sequence: int | None = None

    def get(self, field_id: str, default: str = "") -> str:
        values = self.fields.get(field_id)
        return values[0] if values else default

    def all(self, field_id: str) -> list[str]:
        return list(self.fields.get(field_id, ()))

    def flag(self, index: int) -> bool:
        """A Y/N (or 1/0) at ``index`` of the fixed part; False past its end."""
        return index < len(self.fixed) and self.fixed[index] in "Y1"


def checksum(prefix: bytes) -> str:
    """Two's complement of the 16-bit byte sum of everything through ``AZ``."""
    return f"{(-sum(prefix)) & 0xFFFF:04X}"


def sip_date(when: datetime | None = None) -> str:
    """SIP2's 18-character timestamp, YYYYMMDDZZZZHHMMSS, local time (ZZZZ blank)."""
    when = when or datetime.now()
    return when.strftime("%Y%m%d    %H%M%S")


def encode(
    command: str,
    fixed: str,
    fields: list[tuple[str, str | None]],
    dialect: Dialect,
    sequence: int | None = None,
) -> bytes:
    """One request frame. Fields whose value is None are left out."""
    parts = [command, fixed]
    for fid, value in fields:
        if value is None:
            continue
        if any(c in value for c in (dialect.delimiter, "\r", "\n", "\x00")):
            raise Sip2Error(f"field {fid} may not hold '|', CR, LF or NUL")
        parts.append(f"{fid}{unicodedata.normalize('NFC', value)}{dialect.delimiter}")
    body = "".join(parts).encode(dialect.encoding, errors="replace")
    if dialect.error_detection:
        if command not in ("96", "97"):  # the resend requests carry a checksum, no sequence
            body += b"AY" + str((sequence or 0) % 10).encode()
        body += b"AZ"
        body += checksum(body).encode()
    return body + dialect.terminator


def decode(frame: bytes, dialect: Dialect) -> Reply:
    """A reply frame (with or without its terminator); Sip2Error when it is not one."""
    body = frame.rstrip(b"\r\n")
    sequence = None
    if len(body) >= 6 and body[-6:-4] == b"AZ":
        digits = body[-4:]
        try:
            expected = int(digits, 16)
        except ValueError as exc:
            raise Sip2ChecksumError("the AZ checksum is not 4 hex digits") from exc
        if (sum(body[:-4]) + expected) & 0xFFFF:
            raise Sip2ChecksumError("the AZ checksum does not match")
        body = body[:-6]
        if len(body) >= 3 and body[-3:-1] == b"AY" and body[-1:].isdigit():
            sequence = int(body[-1:])
            body = body[:-3]
    text = body.decode(dialect.encoding, errors="replace")
    command = text[:2]
    width = FIXED_WIDTH.get(command)
    if width is None:
        raise Sip2Error(f"not a SIP2 reply: {text[:20]!r}")
    if len(text) < 2 + width:
        raise Sip2Error(f"reply {command} is cut short ({len(text)} characters)")
    fixed = text[2 : 2 + width]
    fields: dict[str, list[str]] = {}
    for part in text[2 + width :].split(dialect.delimiter):
        if len(part) >= 2:
            fields.setdefault(part[:2], []).append(unicodedata.normalize("NFC", part[2:]))
    return Reply(command, fixed, fields, sequence)

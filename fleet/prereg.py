"""Register from home, finish at the desk (issue 25): central's side.

A reader fills in a short public page (name, phone or e-mail, her consent choices in plain
words; never an ID number) and gets a QR code. At the desk the librarian scans it, reads her
CCCD's chip and matches her face as for any walk-in, and confirms in one tap. The chip's data
wins over the form's: the reader's name is the chip's; the form gives only what the chip cannot
(how to reach her, and her choices).

The QR holds a token, nothing personal::

    BP1.<id>.<expiry, Unix seconds>.<choices>.<MAC>

``choices`` is two letters (face at the gates, notices by phone or e-mail: ``y``/``n``) so the
desk can show them before it has talked to central; the MAC is HMAC-SHA256 (truncated to 128
bits) under a key only central holds, so a forged or altered code is refused at central with a
reason, and one that expired is refused by the desk already. Central keeps the form sealed
(AES-GCM under the readers' key, bound to the id) until the desk uses it or it expires; a used
one keeps only its id, times and patron number, so a second use is refused as such, and every
row goes at its expiry (``expire_days``, 30 by default). Nothing about a pre-registration can be
read back through the public page: its answer is the QR, once.

Why HMAC and not the card's ed25519 key: only central checks it (the desk has no key to check
with and needs none: central refuses a forged code in the registration's own transaction), and
an HMAC makes the code short enough for a small QR on a phone's screen.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection

from biblioedge.fleet.store import prereg as rows
from biblioedge.prereg_code import PREFIX, PreregCodeError, parse_code
from biblioedge.protocol import utc_now

#: the version of the consent text on the public page (recorded with the consent)
FORM_CONSENT_VERSION = "web-vi-2026-1"
MAX_NAME = 100
_PHONE = re.compile(r"^(?:\+84|0084|0)([35789]\d{8})$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(?:\.[^@\s.]+)+$")
_NAME_PUNCT = set(" -'.")


class FormError(ValueError):
    """A form that is refused; ``reason`` names the message the page shows (fleet/prereg_text)."""

    def __init__(self, reason: str, field: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


#: a pre-registration code the desk sent that cannot be used: forged, expired, used
PreregRefused = PreregCodeError


@dataclass(frozen=True)
class PreregForm:
    """What the public page accepted, normalized (NFC)."""

    name: str
    phone: str
    email: str
    face: bool
    notices: bool


@dataclass(frozen=True)
class Issued:
    token: str
    prereg_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Prereg:
    """An opened pre-registration, for the registration that uses it."""

    prereg_id: str
    form: PreregForm


def clean_name(raw: str) -> str:
    """NFC, spaces collapsed; letters (any script), combining marks and `` -'.`` only: no
    digits (no ID number in the name), no emoji, no control characters."""
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if not name:
        raise FormError("name_missing", "name")
    if len(name) > MAX_NAME:
        raise FormError("name_long", "name")
    for ch in name:
        if ch in _NAME_PUNCT:
            continue
        if unicodedata.category(ch)[0] not in "LM":
            raise FormError("name_chars", "name")
    if not any(unicodedata.category(ch)[0] == "L" for ch in name):
        raise FormError("name_chars", "name")
    return name


def clean_phone(raw: str) -> str:
    """A Vietnamese mobile number, kept as ``0xxxxxxxxx``; empty stays empty."""
    digits = re.sub(r"[\s.()-]", "", unicodedata.normalize("NFKC", raw))
    if not digits:
        return ""
    m = _PHONE.fullmatch(digits)
    if m is None:
        raise FormError("phone_invalid", "phone")
    return "0" + m.group(1)


def clean_email(raw: str) -> str:
    email = unicodedata.normalize("NFC", raw).strip()
    if not email:
        return ""
    if len(email) > 254 or _EMAIL.fullmatch(email) is None:
        raise FormError("email_invalid", "email")
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


def check_form(fields: dict[str, list[str]]) -> PreregForm:
    """The form's fields (as parsed from the body) or FormError with the first reason."""
    allowed = {"name", "phone", "email", "face", "notices", "lang"}
    if set(fields) - allowed:
        raise FormError("form_fields")
    if any(len(v) != 1 for v in fields.values()):
        raise FormError("form_fields")
    one = {k: v[0] for k, v in fields.items()}
    name = clean_name(one.get("name", ""))
    phone = clean_phone(one.get("phone", ""))
    email = clean_email(one.get("email", ""))
    if not phone and not email:
        raise FormError("contact_missing", "phone")
    choices = {}
    for key in ("face", "notices"):
        value = one.get(key, "")
        if value not in ("yes", "no"):
            raise FormError(f"{key}_choice", key)
        choices[key] = value == "yes"
    return PreregForm(name, phone, email, choices["face"], choices["notices"])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Preregistrations:
    def __init__(self, engine_begin: Any, aead: AESGCM, mac_key: bytes, expire_days: int = 30):
        """``engine_begin``: a callable giving a transaction (``Readers.begin``); ``aead``:
        the readers' sealing key; ``mac_key``: central's own pre-registration key."""
        self.begin = engine_begin
        self.aead = aead
        self.mac_key = mac_key
        self.expire_days = expire_days

    def _mac(self, signed_part: str) -> str:
        return _b64(hmac.new(self.mac_key, signed_part.encode(), hashlib.sha256).digest()[:16])

    def create(self, form: PreregForm, max_waiting: int) -> Issued:
        """Seal and keep the form; returns the code for her QR. FormError("full") when
        ``max_waiting`` pre-registrations already wait (a flood from many addresses)."""
        now = utc_now().replace(microsecond=0)  # the code carries whole seconds
        expires = now + timedelta(days=self.expire_days)
        prereg_id = secrets.token_urlsafe(12)
        choices = ("y" if form.face else "n") + ("y" if form.notices else "n")
        signed = f"{PREFIX}{prereg_id}.{int(expires.timestamp())}.{choices}"
        token = f"{signed}.{self._mac(signed)}"
        nonce = os.urandom(12)
        data: dict[str, Any] = {"name": form.name, "phone": form.phone, "email": form.email}
        data |= {"face": form.face, "notices": form.notices, "consent": FORM_CONSENT_VERSION}
        sealed = self.aead.encrypt(nonce, orjson.dumps(data), _aad(prereg_id))
        with self.begin() as conn:
            rows.purge(conn, now)  # expired ones go first: they never count against a flood
            if rows.waiting(conn, now) >= max_waiting:
                raise FormError("full")
            rows.add(
                conn,
                prereg_id=prereg_id,
                created_at=now,
                expires_at=expires,
                nonce=nonce,
                sealed=sealed,
            )
        return Issued(token, prereg_id, expires)

    def open_in(self, conn: Connection, token: str) -> Prereg:
        """The pre-registration this code names, checked (MAC, expiry, not used), in the
        registration's transaction; PreregRefused with the reason otherwise. Writes nothing."""
        code = parse_code(token)
        if not hmac.compare_digest(self._mac(code.signed_part), code.mac):
            raise PreregRefused("prereg_forged", "this code was not issued by the library")
        now = utc_now()
        if code.expires_at <= now:
            raise PreregRefused("prereg_expired", f"expired on {code.expires_at:%d/%m/%Y}")
        row = rows.get(conn, code.prereg_id)
        if row is None:  # expired and purged, or erased: the MAC was good
            raise PreregRefused("prereg_expired", "no longer kept (expired or withdrawn)")
        if row.used_at is not None:
            raise PreregRefused("prereg_used", f"already used on {row.used_at:%d/%m/%Y}")
        if row.expires_at <= now:
            raise PreregRefused("prereg_expired", f"expired on {row.expires_at:%d/%m/%Y}")
        data = orjson.loads(self.aead.decrypt(row.nonce, row.sealed, _aad(code.prereg_id)))
        form = PreregForm(
            str(data["name"]),
            str(data["phone"]),
            str(data["email"]),
            bool(data["face"]),
            bool(data["notices"]),
        )
        return Prereg(code.prereg_id, form)

    @staticmethod
    def use_in(conn: Connection, prereg_id: str, patron_id: str) -> None:
        """Mark it used by ``patron_id``, its form erased; the first write of the
        registration, so a race with another desk refuses before anything else is written."""
        if not rows.mark_used(conn, prereg_id, patron_id, utc_now()):
            raise PreregRefused("prereg_used", "used by another registration just now")

    def purge(self, now: datetime | None = None) -> int:
        """Delete every pre-registration and phone-card pick-up expired at ``now`` (default:
        now); returns how many pre-registrations went."""
        with self.begin() as conn:
            return rows.purge(conn, now or utc_now())

    def count(self) -> int:
        """Pre-registrations kept (waiting or used, not yet expired): what tests and the
        operator's look at the flood guard read."""
        with self.begin() as conn:
            return rows.kept(conn)


def _aad(prereg_id: str) -> bytes:
    return f"prereg\0{prereg_id}".encode()


def same_name(form_name: str, chip_name: str) -> bool:
    """Whether the form's name is the chip's (case and spacing aside): recorded in the
    audit trail as a flag, never the names."""

    def key(s: str) -> str:
        return " ".join(unicodedata.normalize("NFC", s).casefold().split())

    return key(form_name) == key(chip_name)


def open_wallet(cfg: Any) -> Any:
    """The wallet pass signer where ``[prereg] wallet_*`` is configured, else None."""
    p = cfg.prereg
    if p.wallet_cert is None:
        return None
    from biblioedge.fleet.walletpass import WalletSigner

    return WalletSigner.load(
        p.wallet_pass_type,
        p.wallet_team,
        p.wallet_organization,
        p.wallet_cert,
        p.wallet_key,
        p.wallet_chain,
    )


def open_prereg(cfg: Any, readers: Any) -> tuple[Preregistrations, Any]:
    """Central's pre-registrations and phone cards from its config (``[prereg]``) and readers:
    the API, the registrar and the purge share the keys through the files, not the objects."""
    from biblioedge.fleet.phonecard import PhoneCards
    from biblioedge.keys import load_or_create_key

    p = cfg.prereg
    key = load_or_create_key(cfg.data_dir / "keys" / "prereg.key")
    pre = Preregistrations(readers.begin, readers.aead, key, p.expire_days)
    return pre, PhoneCards(readers.begin, p.pickup_h, cfg.public_url)


async def purge_loop(prereg: Preregistrations, every_s: float = 3600.0) -> None:
    """Expired pre-registrations and phone-card pick-ups are deleted within the hour (also
    at every new pre-registration); a failed purge is logged and tried again next time."""
    import asyncio
    import logging

    log = logging.getLogger("biblioedge.fleet.prereg")
    while True:
        try:
            n = await asyncio.to_thread(prereg.purge)
            if n:
                log.info("deleted %d expired pre-registrations", n)
        except Exception:  # a failed purge costs that purge, never the loop
            log.exception("purging expired pre-registrations failed")
        await asyncio.sleep(every_s)

"""Desk registrations at central: one event in, a reader, consent, templates and a card out.

A desk records ``desk.registration`` in its outbox like any event, so a registration made
while central or the broker is down waits on the desk and is never lost. Central applies it in
the same transaction that stores the event, and answers in the ack (``Ack.results``) with the
patron number and the signed card. The registration id is the idempotency key: a resent event
(lost ack, desk restart) never makes a second reader or card.

Who gets the answer (docs/security.md, "What a device may say"): a registration is only
accepted from a desk (the role table, fleet/authz.py), sealed to central's key when central
runs with certificates, and bound to the desk that sealed it (the seal's context names the
desk). Its registration id then belongs to that desk: the same id from another device is
refused and answered nothing. The answer carrying the name and the card's bearer token goes
to that desk once, in the ack of the transaction that made it; central never stores the token.
A resend (a lost ack) is answered ``{"status": "already_delivered", ...}`` with the patron
number only, and the desk tells the librarian to issue the card again (a returning reader: a
new card, the lost one revoked). Delivering until the desk confirms would have meant keeping
the bearer token at central for an unbounded time, and a confirmation message of its own.

What central keeps: the reader (name sealed, status, expiry), the profile fields the desk kept,
sealed, under a keyed hash of the ID number (never the number), the consent record and, only
when consent was granted, the templates (sealed). The stored event is redacted to the audit
trail: no name, no profile, no templates.
"""

from __future__ import annotations

import base64
import binascii
import os
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError
from sqlalchemy import Connection

from biblioedge.fleet import guardians
from biblioedge.fleet.authz import Refused
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.ils.queue import enqueue
from biblioedge.fleet.phonecard import PhoneCards
from biblioedge.fleet.prereg import FORM_CONSENT_VERSION, Prereg, Preregistrations, PreregRefused
from biblioedge.fleet.prereg import same_name as _same_name
from biblioedge.fleet.readers import ReaderError, Readers, check_vectors
from biblioedge.fleet.reports.rollup import band_of
from biblioedge.fleet.store import librarian as print_rows
from biblioedge.fleet.store import registrations as rows
from biblioedge.protocol import (
    DeskRegistration,
    Event,
    ProtocolError,
    registration_context,
    utc_now,
)
from biblioedge.provisioning.sealing import SealError, open_sealed

REGISTRATION = "desk.registration"
#: The status of an answer to a registration whose card was already delivered.
ALREADY_DELIVERED = "already_delivered"
#: the answer to a registration of a reader erased since (a kiosk's replay after a restore)
ERASED = "erased"


class Registrar:
    def __init__(
        self,
        registry: Readers,
        cards: Cards,
        prefix: str = "BE",
        seal_key: X25519PrivateKey | None = None,
        require_sealed: bool = False,
        child_under: int = 16,
        card_numbers: str = "desk",
        timezone: str = "Asia/Ho_Chi_Minh",
    ) -> None:
        self.readers = registry
        self.cards = cards
        self.prefix = prefix
        self.aead: AESGCM = registry.aead
        self.seal_key = seal_key
        #: refuse unsealed registrations: central runs with certificates (security.require),
        #: so every enrolled desk holds central's key and seals (an unsealed one is forged)
        self.require_sealed = require_sealed and seal_key is not None
        self.child_under = child_under  # reports' age band, kept in the audit event
        #: who issues card numbers ([ils] card_numbers): "ils" leaves a new reader's number
        #: to the library system, so her first card is answered without one (docs/ils.md)
        self.card_numbers = card_numbers
        #: pre-registrations from the public page (fleet/prereg.py); None: codes are refused
        self.prereg: Preregistrations | None = None
        #: cards offered to the reader's phone (fleet/phonecard.py); None: none offered
        self.phone: PhoneCards | None = None
        self.timezone = timezone  # a minor's age counts on the day at the desk, local

    def _opened(self, event: Event) -> dict[str, Any]:
        """The registration, opened if the desk sealed it to central (it always does once
        enrolled; an unsealed one comes from a desk without central's key)."""
        payload = event.payload
        if "sealed" not in payload:
            if self.require_sealed:
                raise Refused("unsealed_registration", "not sealed to central's key")
            return payload
        if self.seal_key is None:
            raise ProtocolError("invalid_registration", "sealed, and central has no sealing key")
        rid = payload.get("registration_id")
        try:
            if not isinstance(rid, str) or set(payload) != {"registration_id", "sealed"}:
                raise ValueError("a sealed registration carries its id and the sealed data")
            blob = base64.b64decode(str(payload["sealed"]), validate=True)
            inner = orjson.loads(
                open_sealed(self.seal_key, blob, registration_context(event.device_id, rid))
            )
        except SealError as exc:  # another key, another desk or registration, or tampered
            raise Refused("seal_invalid", f"does not open as {event.device_id}'s: {exc}") from exc
        except (ValueError, binascii.Error) as exc:
            raise ProtocolError("invalid_registration", f"sealed data: {exc}") from exc
        if not isinstance(inner, dict) or inner.get("registration_id") != rid:
            raise Refused("seal_invalid", "sealed data names another registration")
        return inner

    def _owned(self, conn: Connection, event: Event) -> dict[str, Any] | None:
        """The registration this event names, if already made; Refused when it is another
        device's (its id is visible to any viewer: it proves nothing)."""
        rid = event.payload.get("registration_id")
        if not isinstance(rid, str):
            return None
        made = rows.owner(conn, rid)
        if made is None:
            return None
        device_id, patron_id = made
        if device_id != event.device_id:
            raise Refused("foreign_registration", f"{rid} was made by another device")
        return {"registration_id": rid, "patron_id": patron_id, "status": ALREADY_DELIVERED}

    def result_of(self, conn: Connection, event: Event) -> dict[str, Any] | None:
        """The answer to a resent event (the repository checked it is this desk's own): the
        patron number, never again the name or the card."""
        try:
            return self._owned(conn, event)
        except Refused:
            return None

    def apply(self, conn: Connection, event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
        """(payload to store, answer for the desk); ProtocolError refuses the registration,
        which quarantines the event and tells the desk why."""
        old = self._owned(conn, event)
        if old is not None:  # the same registration from another event id of this desk
            return {"registration_id": old["registration_id"], "patron_id": old["patron_id"]}, old
        rid = event.payload.get("registration_id")
        if isinstance(rid, str) and rows.erased(conn, rid):
            # she was erased at central after this registration: a kiosk sending it again
            # (its replay to a central restored from backup) brings nothing of her back
            gone = {"registration_id": rid, "status": ERASED}
            return gone, gone
        try:
            reg = DeskRegistration.model_validate(self._opened(event))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ProtocolError("invalid_registration", f"{where}: {first['msg']}") from exc
        if reg.face is not None and not reg.consent.granted:
            raise ProtocolError("no_consent", "templates sent without biometric consent")
        if reg.check.passive_auth == "failed" and not reg.check.override_by:
            raise ProtocolError("forgery_suspected", "chip failed passive authentication")
        name = unicodedata.normalize("NFC", reg.display_name).strip()
        try:  # everything that can refuse, before the first write
            vectors = check_vectors(_vectors(reg.face.templates)).tolist() if reg.face else []
        except ReaderError as exc:
            raise ProtocolError("invalid_registration", str(exc)) from exc
        if reg.face is not None:
            dim = Readers.model_dim(conn, reg.face.model)
            if dim is not None and len(vectors[0]) != dim:
                raise ProtocolError(
                    "invalid_registration",
                    f"{reg.face.model} templates have {dim} values, not {len(vectors[0])}",
                )
        if not name:
            raise ProtocolError("invalid_registration", "display_name is empty")
        pre = self._prereg(conn, reg.prereg)
        day = guardians.desk_day(event.occurred_at, self.timezone)
        adult_on = guardians.check(reg, day, self.child_under)  # a minor: her guardian
        known = rows.returning_reader(conn, reg.citizen_ref)
        returning = known is not None
        patron_id = known if known is not None else rows.next_patron(conn, self.prefix)
        expires = (datetime.now(UTC) + timedelta(days=reg.card_valid_days)).date().isoformat()
        if pre is not None:  # its first write: a code used meanwhile refuses before any other
            try:
                Preregistrations.use_in(conn, pre.prereg_id, patron_id)
            except PreregRefused as exc:
                raise ProtocolError(exc.reason, exc.detail) from exc
        status = "active"
        barcode = None
        if returning:  # a desk renews a card; it does not lift a block the library set
            current = rows.status_of(conn, patron_id)
            status = "blocked" if current == "blocked" else "active"
            barcode = rows.barcode_of(conn, patron_id)  # her card number stays hers
        self.readers.upsert_in(conn, patron_id, event.site, name, status, expires, barcode)
        if returning:  # a re-issued card replaces the lost or old one
            for jti in self.cards.cards_of(conn, patron_id):
                self.readers.revoke_in(conn, jti, patron_id)
        contact = {} if pre is None else {"phone": pre.form.phone, "email": pre.form.email}
        profile = {**reg.profile, **{k: v for k, v in contact.items() if v}}
        self._seal_profile(conn, patron_id, reg.citizen_ref, profile)
        self.cards.record_consent_in(
            conn,
            patron_id,
            purpose=reg.consent.purpose,
            text_version=FORM_CONSENT_VERSION if pre is not None else reg.consent.text_version,
            granted=reg.consent.granted,
            librarian=reg.consent.librarian,
            idempotency_key=reg.registration_id,
        )
        if pre is not None:  # her other choice on the form: notices by phone or e-mail
            self.cards.record_consent_in(
                conn,
                patron_id,
                purpose="notices",
                text_version=FORM_CONSENT_VERSION,
                granted=pre.form.notices,
                librarian=reg.consent.librarian,
                idempotency_key=f"{reg.registration_id}:notices",
            )
        guardians.record_in(conn, patron_id, reg, adult_on)
        n = 0
        if reg.face is not None:
            n = self.readers.put_templates_in(conn, patron_id, reg.face.model, vectors)
        elif returning:  # no consent this time: templates of an earlier consent go
            rows.drop_templates(conn, patron_id)
        card = self.cards.issue_in(conn, patron_id, reg.card_valid_days)
        # the number printed on the card and held by the library system; "" while the
        # library system has not assigned it yet (card_numbers = "ils")
        card_number = card_number_of(conn, patron_id, self.card_numbers)
        phone = None if self.phone is None else self.phone.offer_in(conn, patron_id, name, card)
        # the library system learns the reader from central's queue, in this transaction:
        # never lost, never for a registration rolled back, and the desk does not wait for it
        enqueue(conn, patron_id, "update" if returning else "create")
        result = {
            "registration_id": reg.registration_id,
            "patron_id": patron_id,
            "display_name": name,
            "returning": returning,
            "templates": n,
            "card": card,
            "card_number": card_number,
        }
        # what the desk prints on the card: a later number is listed for a reprint
        print_rows.put_print(conn, patron_id, card_number, event.device_id, utc_now())
        kept = {**result, "card": {k: v for k, v in card.items() if k != "token"}}
        rows.record(
            conn,
            reg.registration_id,
            patron_id,
            event.device_id,
            {k: v for k, v in kept.items() if k != "display_name"},  # no token, no name
            utc_now(),
        )
        if phone is not None:  # her phone's link holds the key to the card: the desk only
            result["phone_card"] = phone
        band = age_band(reg.profile.get("date_of_birth"), self.child_under)
        audit = {**_audit(reg, result), "returning": returning, "age_band": band}
        if pre is not None:  # whether the form's name was the chip's; never the names
            audit["prereg"] = {"used": True, "name_matches_chip": _same_name(pre.form.name, name)}
        return {**audit, **guardians.audit(reg)}, result

    def _prereg(self, conn: Connection, code: str | None) -> Prereg | None:
        """The pre-registration a desk scanned, checked; ProtocolError with the reason
        (forged, expired, used) refuses the registration and the desk shows it."""
        if code is None:
            return None
        if self.prereg is None:
            raise ProtocolError("prereg_unavailable", "central takes no pre-registrations")
        try:
            return self.prereg.open_in(conn, code)
        except PreregRefused as exc:
            raise ProtocolError(exc.reason, exc.detail) from exc

    def _seal_profile(
        self, conn: Connection, patron_id: str, citizen_ref: str, profile: dict[str, str]
    ) -> None:
        clean = {k: unicodedata.normalize("NFC", v) for k, v in profile.items()}
        nonce = os.urandom(12)
        sealed = self.aead.encrypt(nonce, orjson.dumps(clean), patron_id.encode())
        values = {
            "citizen_ref": citizen_ref,
            "nonce": nonce,
            "sealed": sealed,
            "updated_at": utc_now(),
        }
        rows.put_profile(conn, patron_id, values)

    def profile(self, conn: Connection, patron_id: str) -> dict[str, str] | None:
        row = rows.profile_row(conn, patron_id)
        if row is None:
            return None
        nonce, sealed = row
        data: dict[str, str] = orjson.loads(self.aead.decrypt(nonce, sealed, patron_id.encode()))
        return data


def card_number_of(conn: Connection, patron_id: str, card_numbers: str = "desk") -> str:
    """The reader's one card number: her barcode, else (central issuing numbers) her patron
    number; "" while the library system has yet to assign it."""
    barcode = rows.barcode_of(conn, patron_id)
    if barcode:
        return barcode
    return patron_id if card_numbers == "desk" else ""


def _vectors(templates: list[str]) -> list[list[float]]:
    import base64

    import numpy as np

    out = []
    for t in templates:
        try:
            raw = base64.b64decode(t, validate=True)
        except ValueError as exc:
            raise ProtocolError("invalid_registration", "a template is not base64") from exc
        if len(raw) % 4 or not raw:
            raise ProtocolError("invalid_registration", "a template is not float32 data")
        out.append(np.frombuffer(raw, dtype="<f4").tolist())
    return out


def _audit(reg: DeskRegistration, result: dict[str, Any]) -> dict[str, Any]:
    """What the event log keeps: who, how checked, which consent; no personal data."""
    return {
        "registration_id": reg.registration_id,
        "patron_id": result["patron_id"],
        "card_jti": result["card"]["jti"],
        "consent": reg.consent.model_dump(),
        "check": reg.check.model_dump(),
        "templates": len(reg.face.templates) if reg.face else 0,
        "model": reg.face.model if reg.face else "",
    }


def age_band(date_of_birth: str | None, child_under: int) -> str:
    """The reader's age band for reports (adult, child, unknown), from the date of birth the
    desk kept (``dd/mm/yyyy`` or ISO); the event keeps the band, never the date."""
    born = None
    for fmt in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            born = datetime.strptime(str(date_of_birth or ""), fmt).date()
            break
        except ValueError:
            continue
    return band_of(born, datetime.now(UTC).date(), child_under)

"""Desk registrations at central: one event in, a reader, consent, templates and a card out.

A desk records ``desk.registration`` in its outbox like any event, so a registration made
while central or the broker is down waits on the desk and is never lost. Central applies it in
the same transaction that stores the event, and answers in the ack (``Ack.results``) with the
patron number and the signed card. The registration id is the idempotency key: a resent event
(lost ack, desk restart) gets the stored answer again, never a second reader or card.

What central keeps: the reader (name sealed, status, expiry), the profile fields the desk kept,
sealed, under a keyed hash of the ID number (never the number), the consent record and, only
when consent was granted, the templates (sealed). The stored event is redacted to the audit
trail: no name, no profile, no templates.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError
from sqlalchemy import Connection, delete, func, insert, select, update

from biblioedge.fleet.cards import Cards
from biblioedge.fleet.db import reader_profiles, readers, registrations, templates
from biblioedge.fleet.readers import ReaderError, Readers, UnknownReader, check_vectors
from biblioedge.protocol import (
    DeskRegistration,
    Event,
    ProtocolError,
    registration_context,
    utc_now,
)
from biblioedge.provisioning.sealing import SealError, open_sealed

REGISTRATION = "desk.registration"


class Registrar:
    def __init__(
        self,
        registry: Readers,
        cards: Cards,
        prefix: str = "BE",
        seal_key: X25519PrivateKey | None = None,
    ) -> None:
        self.readers = registry
        self.cards = cards
        self.prefix = prefix
        self.aead: AESGCM = registry.aead
        self.seal_key = seal_key

    def _opened(self, event: Event) -> dict[str, Any]:
        """The registration, opened if the desk sealed it to central (it always does once
        enrolled; an unsealed one comes from a desk without central's key)."""
        payload = event.payload
        if "sealed" not in payload:
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
        except (SealError, ValueError, binascii.Error) as exc:
            raise ProtocolError("invalid_registration", f"sealed data: {exc}") from exc
        if not isinstance(inner, dict) or inner.get("registration_id") != rid:
            raise ProtocolError("invalid_registration", "sealed data names another registration")
        return inner

    def result_of(self, conn: Connection, event: Event) -> dict[str, Any] | None:
        rid = event.payload.get("registration_id")
        row = conn.execute(
            select(registrations.c.result).where(registrations.c.registration_id == rid)
        ).first()
        if row is None:
            return None
        answer = dict(row.result)
        with contextlib.suppress(UnknownReader):  # the name is kept sealed, with the reader
            answer["display_name"] = self.readers.name_of(conn, str(answer["patron_id"]))
        return answer

    def apply(self, conn: Connection, event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
        """(payload to store, answer for the desk); ProtocolError refuses the registration,
        which quarantines the event and tells the desk why."""
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
        old = self.result_of(conn, event)
        if old is not None:  # the same registration from another event id: same answer
            return _audit(reg, old), old
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
        ref = conn.execute(
            select(reader_profiles.c.patron_id).where(
                reader_profiles.c.citizen_ref == reg.citizen_ref
            )
        ).first()
        returning = (
            ref is not None
            and conn.execute(
                select(readers.c.patron_id).where(readers.c.patron_id == ref.patron_id)
            ).first()
            is not None
        )
        patron_id = ref.patron_id if ref is not None and returning else self._next_patron(conn)
        expires = (datetime.now(UTC) + timedelta(days=reg.card_valid_days)).date().isoformat()
        status = "active"
        if returning:  # a desk renews a card; it does not lift a block the library set
            current = conn.execute(
                select(readers.c.status).where(readers.c.patron_id == patron_id)
            ).scalar()
            status = "blocked" if current == "blocked" else "active"
        self.readers.upsert_in(conn, patron_id, event.site, name, status, expires)
        if returning:  # a re-issued card replaces the lost or old one
            for jti in self.cards.cards_of(conn, patron_id):
                self.readers.revoke_in(conn, jti, patron_id)
        self._seal_profile(conn, patron_id, reg.citizen_ref, reg.profile)
        self.cards.record_consent_in(
            conn,
            patron_id,
            purpose=reg.consent.purpose,
            text_version=reg.consent.text_version,
            granted=reg.consent.granted,
            librarian=reg.consent.librarian,
            idempotency_key=reg.registration_id,
        )
        n = 0
        if reg.face is not None:
            n = self.readers.put_templates_in(conn, patron_id, reg.face.model, vectors)
        elif returning:  # no consent this time: templates of an earlier consent go
            conn.execute(delete(templates).where(templates.c.patron_id == patron_id))
        card = self.cards.issue_in(conn, patron_id, reg.card_valid_days)
        result = {
            "registration_id": reg.registration_id,
            "patron_id": patron_id,
            "display_name": name,
            "returning": returning,
            "templates": n,
            "card": card,
        }
        conn.execute(
            insert(registrations).values(
                registration_id=reg.registration_id,
                patron_id=patron_id,
                device_id=event.device_id,
                result={k: v for k, v in result.items() if k != "display_name"},
                created_at=utc_now(),
            )
        )
        return _audit(reg, result), result

    def _next_patron(self, conn: Connection) -> str:
        """The next patron number, ``BE0000042``: short enough to read out at the desk."""
        n = int(
            conn.scalar(
                select(func.count())
                .select_from(readers)
                .where(readers.c.patron_id.like(f"{self.prefix}%"))
            )
            or 0
        )
        while True:
            n += 1
            pid = f"{self.prefix}{n:07d}"
            if conn.execute(select(readers.c.patron_id).where(readers.c.patron_id == pid)).first():
                continue
            return pid

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
        conn.execute(
            delete(reader_profiles).where(
                (reader_profiles.c.citizen_ref == citizen_ref)
                & (reader_profiles.c.patron_id != patron_id)
            )
        )
        if (
            conn.execute(
                update(reader_profiles)
                .where(reader_profiles.c.patron_id == patron_id)
                .values(**values)
            ).rowcount
            == 0
        ):
            conn.execute(insert(reader_profiles).values(patron_id=patron_id, **values))

    def profile(self, conn: Connection, patron_id: str) -> dict[str, str] | None:
        row = conn.execute(
            select(reader_profiles).where(reader_profiles.c.patron_id == patron_id)
        ).first()
        if row is None:
            return None
        data: dict[str, str] = orjson.loads(
            self.aead.decrypt(row.nonce, row.sealed, patron_id.encode())
        )
        return data


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

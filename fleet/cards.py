"""Library cards and biometric consent at central.

Card signing keys are ed25519, sealed at rest with AES-GCM under central's key; exactly one is
active (it signs), older ones stay listed so cards they signed still verify at the gates, until
IT retires them. Public keys travel to the gates with the gallery deltas.

Consent is recorded per purpose (``face_gate``), with the text version shown and the librarian
who took it. Withdrawing biometric consent erases the reader's templates everywhere: central's
store now, the gates at their next sync.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sqlalchemy import Connection

from biblioedge.cardtoken import issue, public_key_b64
from biblioedge.fleet.readers import Readers, face_purposes
from biblioedge.fleet.store import cards as rows
from biblioedge.fleet.store import readers as reader_rows
from biblioedge.protocol import FACE_PURPOSES, utc_now


class CardError(ValueError):
    pass


class Cards:
    def __init__(self, registry: Readers, key: bytes) -> None:
        self.readers = registry
        self.tx = registry.tx
        self.aead = AESGCM(key)

    # -- keys -----------------------------------------------------------------------------

    def rotate(self) -> str:
        """Make a new signing key active; returns its kid."""
        with self.tx.begin() as conn:
            return self.rotate_in(conn)

    def rotate_in(self, conn: Connection) -> str:
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        now = utc_now()
        while True:  # 32 random bits: rotating many times a day must never reuse a kid
            kid = f"k{now:%Y%m%d}{secrets.token_hex(4)}"
            if not rows.key_exists(conn, kid):
                break
        nonce = os.urandom(12)
        rows.add_active_key(
            conn,
            kid=kid,
            public_key=public_key_b64(key),
            nonce=nonce,
            sealed_private_key=self.aead.encrypt(nonce, raw, kid.encode()),
            created_at=now,
        )
        self._keys_changed(conn)
        return kid

    def retire(self, kid: str) -> None:
        with self.tx.begin() as conn:
            active = rows.key_active(conn, kid)
            if active is None:
                raise CardError(f"no key {kid}")
            if active:
                raise CardError("rotate before retiring the active key")
            rows.retire_key(conn, kid)
            self._keys_changed(conn)

    def public_keys(self) -> dict[str, str]:
        with self.tx.connect() as conn:
            return rows.public_keys(conn)

    def _keys_changed(self, conn: Connection) -> None:
        """Every site's gallery moves on, so every gate gets the new key set."""
        Readers.log_change(conn, "")

    def _active(self, conn: Connection) -> tuple[str, Ed25519PrivateKey]:
        row = rows.active_key(conn)
        if row is None:  # first card ever: make the first key
            self.rotate_in(conn)
            return self._active(conn)
        raw = self.aead.decrypt(row.nonce, row.sealed_private_key, row.kid.encode())
        return str(row.kid), Ed25519PrivateKey.from_private_bytes(raw)

    # -- cards ----------------------------------------------------------------------------

    def issue_card(self, patron_id: str, valid_days: int = 365 * 4) -> dict[str, Any]:
        with self.tx.begin() as conn:
            return self.issue_in(conn, patron_id, valid_days)

    def issue_in(self, conn: Connection, patron_id: str, valid_days: int) -> dict[str, Any]:
        if not 1 <= valid_days <= 3650:
            raise CardError("valid_days is 1 to 3650")
        Readers.site_of(conn, patron_id)  # UnknownReader if absent
        kid, key = self._active(conn)
        jti = f"c-{secrets.token_hex(8)}"
        now = utc_now()
        token = issue(key, kid, jti, patron_id, valid_days=valid_days, now=now.timestamp())
        expires = now + timedelta(days=valid_days)
        rows.add_card(conn, jti, patron_id, kid, now, expires)
        return {"jti": jti, "token": token, "kid": kid, "expires_at": expires.isoformat()}

    def cards_of(self, conn: Connection, patron_id: str) -> list[str]:
        return rows.cards_of(conn, patron_id)

    def live_cards_of(self, conn: Connection, patron_id: str) -> list[str]:
        """The reader's cards not revoked (a replacement revokes exactly these)."""
        return rows.live_cards_of(conn, patron_id)

    # -- consent --------------------------------------------------------------------------

    def record_consent(
        self,
        patron_id: str,
        *,
        purpose: str,
        text_version: str,
        granted: bool,
        librarian: str,
        idempotency_key: str | None = None,
        sites: list[str] | None = None,
    ) -> dict[str, Any]:
        with self.tx.begin() as conn:
            return self.record_consent_in(
                conn,
                patron_id,
                purpose=purpose,
                text_version=text_version,
                granted=granted,
                librarian=librarian,
                idempotency_key=idempotency_key,
                sites=sites,
            )

    def record_consent_in(
        self,
        conn: Connection,
        patron_id: str,
        *,
        purpose: str,
        text_version: str,
        granted: bool,
        librarian: str,
        idempotency_key: str | None = None,
        sites: list[str] | None = None,
    ) -> dict[str, Any]:
        """``sites``: the branches whose kiosks may use the face for ``purpose``; None or
        empty: every branch of the library."""
        Readers.site_of(conn, patron_id)
        if idempotency_key:
            old = rows.consent_by_key(conn, idempotency_key)
            if old is not None:
                if old["patron_id"] != patron_id:
                    raise CardError("this idempotency key was used for another reader")
                return old
        record = rows.add_consent(
            conn,
            patron_id=patron_id,
            purpose=purpose,
            text_version=text_version,
            granted=granted,
            librarian=librarian,
            idempotency_key=idempotency_key,
            recorded_at=utc_now(),
            sites=sorted(set(sites)) if sites else None,
        )
        if purpose in FACE_PURPOSES:  # the kiosks learn what and where they may use the face for
            Readers.log_change(conn, patron_id)
        return record

    def consents_of(self, patron_id: str) -> list[dict[str, Any]]:
        with self.tx.connect() as conn:
            return rows.consents_of(conn, patron_id)

    def has_biometric_consent(self, patron_id: str) -> bool:
        latest = [
            c
            for c in self.consents_of(patron_id)
            if c["purpose"] == "face_gate" and c["withdrawn_at"] is None
        ]
        return bool(latest) and bool(latest[-1]["granted"])

    def withdraw(self, patron_id: str, purpose: str = "face_gate") -> int:
        """Withdraw consent. The kiosks of the site follow at the next sync (each keeps
        templates only for its purpose); once no face purpose remains, every template is
        erased here too."""
        with self.tx.begin() as conn:
            Readers.site_of(conn, patron_id)  # UnknownReader if absent
            n = rows.withdraw(conn, patron_id, purpose)
            if purpose in FACE_PURPOSES:
                if not face_purposes(conn, patron_id):
                    reader_rows.delete_templates(conn, patron_id)
                Readers.log_change(conn, patron_id)
            return n

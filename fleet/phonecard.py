"""A card on the phone (issue 25): the same signed card token as the printed card, as a page
she can keep (with the QR as an image to save).

Central never keeps a card's bearer token readable (docs/security.md). So when a card is
issued, the token (with her name, number and expiry) is sealed with AES-GCM under a fresh
random key that central does not keep: the key is in the pick-up link only
(``/the/card/<pickup id>/<key>``), shown once to the desk as a QR she scans with her phone. Her
phone opens the page, which is her card: the QR code and her name, printable and savable as an
image. Anyone without the link reads nothing, central included; the sealed row goes when the
pick-up expires (``pickup_h``, 72 h by default) or when a new card is issued (the old token is
revoked everywhere then, by the revocation list every kiosk syncs).

A wallet pass (Apple's ``.pkpass``) is offered beside the page only where the library
configured its pass-signing certificate (``fleet/walletpass.py``).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection

from biblioedge.fleet.store import prereg as rows
from biblioedge.protocol import utc_now

PATH = "/the/card"
_ID = re.compile(r"^[A-Za-z0-9_-]{16}$")
_KEY = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class PhoneCard:
    patron_id: str
    name: str
    token: str
    expires_at: str
    jti: str = ""

    def qr_svg(self) -> str:
        """The card's QR as inline SVG (what a gate's camera reads off her screen)."""
        return str(segno.make(self.token, error="m").svg_inline(scale=6, border=4))

    def qr_png(self) -> bytes:
        out = io.BytesIO()
        segno.make(self.token, error="m").save(out, kind="png", scale=8, border=4)
        return out.getvalue()


class PhoneCards:
    def __init__(self, engine_begin: Any, pickup_h: float = 72.0, base_url: str = "") -> None:
        self.begin = engine_begin
        self.pickup_h = pickup_h
        self.base_url = base_url.rstrip("/")

    def offer_in(self, conn: Connection, patron_id: str, name: str, card: dict[str, Any]) -> str:
        """Seal a just-issued card for her phone, in the issuing transaction; returns the
        pick-up link. Older links of hers go (their cards are revoked or superseded)."""
        rows.drop_pickups(conn, patron_id)
        key = AESGCM.generate_key(bit_length=256)
        pickup_id = secrets.token_urlsafe(12)
        nonce = os.urandom(12)
        body = {
            "patron_id": patron_id,
            "name": name,
            "token": card["token"],
            "expires_at": str(card["expires_at"])[:10],
        }
        now = utc_now()
        rows.add_pickup(
            conn,
            pickup_id=pickup_id,
            patron_id=patron_id,
            card_jti=str(card["jti"]),
            nonce=nonce,
            sealed=AESGCM(key).encrypt(nonce, orjson.dumps(body), pickup_id.encode()),
            created_at=now,
            expires_at=now + timedelta(hours=self.pickup_h),
        )
        secret = base64.urlsafe_b64encode(key).decode().rstrip("=")
        return f"{self.base_url}{PATH}/{pickup_id}/{secret}"

    def open(self, pickup_id: str, secret: str, now: datetime | None = None) -> PhoneCard | None:
        """The card behind a pick-up link, or None for any wrong, expired or unknown link
        (one answer for all: a link guessed is told nothing)."""
        if _ID.fullmatch(pickup_id) is None or _KEY.fullmatch(secret) is None:
            return None
        with self.begin() as conn:
            row = rows.pickup(conn, pickup_id)
        if row is None or row.expires_at <= (now or utc_now()):
            return None
        try:
            key = base64.urlsafe_b64decode(secret + "=")
            data = orjson.loads(AESGCM(key).decrypt(row.nonce, row.sealed, pickup_id.encode()))
        except (InvalidTag, ValueError, binascii.Error):
            return None
        return PhoneCard(
            str(data["patron_id"]),
            str(data["name"]),
            str(data["token"]),
            str(data["expires_at"]),
            str(row.card_jti),
        )

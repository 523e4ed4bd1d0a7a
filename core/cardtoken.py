"""The electronic library card: a token signed by central (ed25519), verified offline at gates.

Format, printed as a QR code (byte mode, about 200 characters)::

    BE1.<base64url(JSON claims)>.<base64url(64-byte ed25519 signature over "BE1." + claims)>

Claims: ``v`` format version, ``kid`` signing key id, ``jti`` token id (unique per issued
card, what revocation names), ``pid`` patron id, ``iat`` issued and ``exp`` expiry (Unix
seconds). Nothing else: the card proves *which reader*, the kiosk looks the rest up. A gate holds
central's public keys by ``kid`` (several, for rotation) and a revocation list of ``jti``s
synced from central; it needs no network to decide.

Why not JWT: one algorithm, no header to negotiate (no ``alg: none``), a fixed prefix that
tells a library card from any other QR at a glance, and fewer bytes in the code.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PREFIX = "BE1."
MAX_TOKEN_LENGTH = 512
CLOCK_SKEW_S = 300  # a kiosk clock may drift; tolerate five minutes either way


class CardTokenError(ValueError):
    """A card that must be refused; ``reason`` is what the gate logs and counts."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class CardClaims:
    kid: str
    jti: str
    pid: str
    iat: int
    exp: int


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not text or any(c not in _B64URL for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return _b64e(pub.public_bytes(Encoding.Raw, PublicFormat.Raw))


def load_public_key(b64: str) -> Ed25519PublicKey:
    try:
        raw = _b64d(b64)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        raise CardTokenError("bad_key", "a public key is 32 bytes, base64url") from exc


def issue(
    key: Ed25519PrivateKey,
    kid: str,
    jti: str,
    patron_id: str,
    *,
    valid_days: int,
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    claims = {
        "v": 1,
        "kid": kid,
        "jti": jti,
        "pid": patron_id,
        "iat": issued,
        "exp": issued + valid_days * 86400,
    }
    body = PREFIX + _b64e(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    token = body + "." + _b64e(key.sign(body.encode("ascii")))
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError("token too long for a card QR: shorten the ids")
    return token


def looks_like_card(text: str) -> bool:
    return text.startswith(PREFIX)


class CardVerifier:
    """Offline verification with central's public keys and the synced revocation list."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], revoked: Iterable[str] = ()) -> None:
        self.keys = dict(keys)
        self.revoked = set(revoked)

    def verify(self, token: str, now: float | None = None) -> CardClaims:
        now = time.time() if now is None else now
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise CardTokenError("malformed", "not a library card token")
        token = token.strip()
        if not token.startswith(PREFIX):
            raise CardTokenError("not_a_card", "QR is not a library card")
        parts = token.split(".")
        if len(parts) != 3:
            raise CardTokenError("malformed", "expected BE1.<claims>.<signature>")
        try:
            payload = _b64d(parts[1])
            signature = _b64d(parts[2])
            claims = json.loads(payload.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            raise CardTokenError("malformed", "undecodable card") from exc
        if not isinstance(claims, dict) or claims.get("v") != 1:
            raise CardTokenError("malformed", "unknown card version")
        try:
            parsed = CardClaims(
                kid=_str(claims, "kid"),
                jti=_str(claims, "jti"),
                pid=_str(claims, "pid"),
                iat=_int(claims, "iat"),
                exp=_int(claims, "exp"),
            )
        except (KeyError, TypeError) as exc:
            raise CardTokenError("malformed", f"bad claim {exc}") from exc
        key = self.keys.get(parsed.kid)
        if key is None:
            raise CardTokenError("unknown_key", f"signed with key {parsed.kid!r}")
        try:
            key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
        except InvalidSignature as exc:
            raise CardTokenError("bad_signature", "forged or altered card") from exc
        if parsed.iat > now + CLOCK_SKEW_S:
            raise CardTokenError("not_yet_valid", "issued in the future")
        if parsed.exp < now - CLOCK_SKEW_S:
            raise CardTokenError("expired", f"expired at {parsed.exp}")
        if parsed.jti in self.revoked:
            raise CardTokenError("revoked", f"card {parsed.jti} was revoked")
        return parsed


def _str(claims: Mapping[str, object], key: str) -> str:
    value = claims[key]
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise TypeError(key)
    return value


def _int(claims: Mapping[str, object], key: str) -> int:
    value = claims[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(key)
    return value

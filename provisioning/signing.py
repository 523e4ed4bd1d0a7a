"""Central's signature on what it commands: acks, desired state, commands, gallery deltas, keys.

A signed message is an envelope ``{"v":1,"kid":…,"sig":…,"body":…}`` whose ``body`` is the
base64 of the exact bytes signed, so nothing depends on re-serialising JSON the same way on both
sides. The signature (ed25519) covers a domain tag, the MQTT topic and the body: a document
signed for one kiosk or channel cannot be replayed onto another. Freshness (only forward) is the
receiver's check on the body's own version or timestamp.
"""

from __future__ import annotations

import base64
import binascii

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from biblioedge.protocol import MAX_PAYLOAD_BYTES, MAX_SIGNED_BODY, ProtocolError

_DOMAIN = b"biblioedge-control-v1\x00"


def public_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.urlsafe_b64encode(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def load_public(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.urlsafe_b64decode(text.encode())
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"not an ed25519 public key: {exc}") from exc


def _message(topic: str, body: bytes) -> bytes:
    return _DOMAIN + topic.encode() + b"\x00" + body


def sign(key: Ed25519PrivateKey, kid: str, topic: str, body: bytes) -> bytes:
    """The envelope; ProtocolError ``oversized`` when it could not cross the broker (which
    would drop the connection and so every other message in flight with it)."""
    if len(body) > MAX_SIGNED_BODY:
        raise ProtocolError("oversized", f"{len(body)} bytes to sign; at most {MAX_SIGNED_BODY}")
    sig = key.sign(_message(topic, body))
    return orjson.dumps(
        {
            "v": 1,
            "kid": kid,
            "sig": base64.b64encode(sig).decode(),
            "body": base64.b64encode(body).decode(),
        }
    )


def verify(keys: dict[str, Ed25519PublicKey], topic: str, payload: bytes) -> bytes:
    """The signed body; ProtocolError ``unsigned`` / ``bad_signature`` / ``unknown_key``."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("oversized", f"{len(payload)} bytes")
    try:
        env = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("unsigned", "not a signed envelope") from exc
    if not isinstance(env, dict) or not {"kid", "sig", "body"} <= env.keys():
        raise ProtocolError("unsigned", "not a signed envelope")
    kid, sig, body = env["kid"], env["sig"], env["body"]
    if not (isinstance(kid, str) and isinstance(sig, str) and isinstance(body, str)):
        raise ProtocolError("unsigned", "envelope fields must be strings")
    key = keys.get(kid)
    if key is None:
        raise ProtocolError("unknown_key", f"not signed with a key of central's ({kid[:16]!r})")
    try:
        raw_sig = base64.b64decode(sig, validate=True)
        raw_body = base64.b64decode(body, validate=True)
        key.verify(raw_sig, _message(topic, raw_body))
    except (binascii.Error, ValueError, InvalidSignature) as exc:
        raise ProtocolError("bad_signature", f"signature does not verify on {topic}") from exc
    return raw_body

"""Sealing data to a public key (ECIES: ephemeral ECDH, HKDF-SHA256, AES-256-GCM).

Two recipients use it: central's X25519 sealing key (desk registrations, sealed from the
moment they enter the desk's outbox, so neither the desk's disk nor the broker sees names or
templates) and a kiosk's certificate key, P-256 (the site's gallery keys, wrapped to each gate and
self-check; the greeting keys, to gates only).
``context`` is bound into the key derivation and the AEAD, so a sealed blob made for one use
does not open for another.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PublicKey = x25519.X25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey


class SealError(ValueError):
    """A sealed blob that does not open: wrong key, wrong context, or tampered."""


def _raw(pub: PublicKey) -> bytes:
    if isinstance(pub, x25519.X25519PublicKey):
        return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _derive(shared: bytes, eph: bytes, recipient: bytes, context: bytes) -> bytes:
    return HKDF(
        hashes.SHA256(), 32, salt=eph + recipient, info=b"biblioedge-seal\x00" + context
    ).derive(shared)


def seal(recipient: PublicKey, data: bytes, context: bytes) -> bytes:
    """``ephemeral public key | nonce | ciphertext``."""
    if isinstance(recipient, x25519.X25519PublicKey):
        xe = x25519.X25519PrivateKey.generate()
        shared = xe.exchange(recipient)
        eph = _raw(xe.public_key())
    else:
        ee = ec.generate_private_key(recipient.curve)
        shared = ee.exchange(ec.ECDH(), recipient)
        eph = _raw(ee.public_key())
    key = _derive(shared, eph, _raw(recipient), context)
    nonce = os.urandom(12)
    return eph + nonce + AESGCM(key).encrypt(nonce, data, context)


def open_sealed(private: PrivateKey, blob: bytes, context: bytes) -> bytes:
    pub = private.public_key()
    try:
        if isinstance(private, x25519.X25519PrivateKey):
            eph_raw, rest = blob[:32], blob[32:]
            shared = private.exchange(x25519.X25519PublicKey.from_public_bytes(eph_raw))
        else:
            n = 1 + 2 * ((private.curve.key_size + 7) // 8)
            eph_raw, rest = blob[:n], blob[n:]
            eph = ec.EllipticCurvePublicKey.from_encoded_point(private.curve, eph_raw)
            shared = private.exchange(ec.ECDH(), eph)
        if len(rest) < 12 + 16:
            raise SealError("sealed data is truncated")
        key = _derive(shared, eph_raw, _raw(pub), context)
        return AESGCM(key).decrypt(rest[:12], rest[12:], context)
    except (ValueError, InvalidTag) as exc:
        raise SealError("sealed data does not open with this key") from exc


def x25519_public_b64(key: x25519.X25519PrivateKey | x25519.X25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, x25519.X25519PrivateKey) else key
    return base64.urlsafe_b64encode(_raw(pub)).decode()


def load_x25519_public(text: str) -> x25519.X25519PublicKey:
    try:
        return x25519.X25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(text.encode()))
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"not an X25519 public key: {exc}") from exc


class UnknownKey(SealError):
    """Sealed with a key this side does not hold (yet)."""


def seal_with(key: bytes, kid: str, data: bytes, context: bytes) -> bytes:
    """Symmetric sealing under a named AES-256 key: ``len(kid) | kid | nonce | ciphertext``."""
    head = kid.encode()
    if not 0 < len(head) < 256:
        raise ValueError("a key id is 1 to 255 bytes")
    nonce = os.urandom(12)
    return bytes([len(head)]) + head + nonce + AESGCM(key).encrypt(nonce, data, context + head)


def open_with(keys: dict[str, bytes], blob: bytes, context: bytes) -> bytes:
    if not blob:
        raise SealError("sealed data is empty")
    n = blob[0]
    head, rest = blob[1 : 1 + n], blob[1 + n :]
    try:
        kid = head.decode()
    except UnicodeDecodeError as exc:
        raise SealError("sealed data names no key") from exc
    key = keys.get(kid)
    if key is None:
        raise UnknownKey(f"sealed with key {kid[:32]!r}, which this side does not hold")
    if len(rest) < 12 + 16:
        raise SealError("sealed data is truncated")
    try:
        return AESGCM(key).decrypt(rest[:12], rest[12:], context + head)
    except InvalidTag as exc:
        raise SealError("sealed data does not open with its key") from exc


def site_key_context(site: str, kid: str, device_id: str) -> bytes:
    """A site key wrapped for one gate opens only as that gate's key for that site."""
    return f"site-key\0{site}\0{kid}\0{device_id}".encode()


def gallery_context(site: str) -> bytes:
    return f"gallery\0{site}\0".encode()


def greeting_key_context(site: str, kid: str, device_id: str) -> bytes:
    """A greeting key wrapped for one gate (never usable as a site key, nor the reverse)."""
    return f"greeting-key\0{site}\0{kid}\0{device_id}".encode()


def greeting_context(site: str, patron_id: str) -> bytes:
    """A sealed greeting opens only as this reader's name at this site (the key id is bound
    too, by ``seal_with``): a name cannot be moved onto another reader."""
    return f"greeting\0{site}\0{patron_id}\0".encode()

"""PACE (ICAO 9303-11 §4.4): ECDH generic mapping, AES-128, with the CAN or the MRZ.

Supported: ``id-PACE-ECDH-GM-AES-CBC-CMAC-128`` on brainpoolP256r1 (standardized domain
parameter 13) and NIST P-256 (12), the set eMRTD chips offer most. Pure functions and small
classes without I/O, shared by the reader (``chip.py``) and the chip simulator, and checked
against ICAO 9303-11 Appendix G.1 byte for byte.

The steps: the chip sends a nonce encrypted under K_pi (derived from the password: the CAN
as ASCII, or SHA-1 of the MRZ information); both sides map it to a fresh generator
G' = s·G + H (H from an ECDH on the mapping keys), agree on a key with ephemeral keys on G',
derive KS_enc and KS_mac, and prove it with CMAC tokens over each other's public key. A wrong
password is only noticed at the tokens (6300): the chip counts those, so the reader never
retries a refused CAN on its own.

Elliptic-curve arithmetic is here because the generic mapping needs point addition and
scalar multiplication on a generator of our choosing, which ``cryptography`` does not expose.
Points from the other side are checked to be on the curve (invalid-curve attacks).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from asn1crypto import core
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from biblioedge.drivers.cccd.errors import CccdError
from biblioedge.drivers.cccd.sm import SecureMessaging, read_tlv, tlv

PACE_ECDH_GM_AES_128 = "0.4.0.127.0.7.2.2.4.2.2"
PASSWORD_MRZ, PASSWORD_CAN = 1, 2


class PaceError(CccdError):
    """PACE could not be completed (a malformed answer, a point off the curve, bad token)."""


@dataclass(frozen=True)
class Curve:
    name: str
    p: int
    a: int
    b: int
    gx: int
    gy: int
    n: int

    @property
    def size(self) -> int:
        return (self.p.bit_length() + 7) // 8

    @property
    def g(self) -> Point:
        return (self.gx, self.gy)


Point = tuple[int, int] | None  # None is the point at infinity

CURVES: dict[int, Curve] = {
    12: Curve(
        "secp256r1",
        0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
        0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFC,
        0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
        0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
        0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    13: Curve(
        "brainpoolP256r1",
        0xA9FB57DBA1EEA9BC3E660A909D838D726E3BF623D52620282013481D1F6E5377,
        0x7D5A0975FC2C3057EEF67530417AFFE7FB8055C126DC5C6CE94A4B44F330B5D9,
        0x26DC5C6CE94A4B44F330B5D9BBD77CBF958416295CF7E1CE6BCCDC18FF8C07B6,
        0x8BD2AEB9CB7E57CB2C4B482FFC81B7AFB9DE27E1E3BD23C23A4453BD9ACE3262,
        0x547EF835C3DAC4FD97F8461A14611DC9C27745132DED8E545C1D54C72F046997,
        0xA9FB57DBA1EEA9BC3E660A909D838D718C397AA3B561A6F7901E0E82974856A7,
    ),
}


# -- curve arithmetic (affine, textbook; a PACE run needs five scalar multiplications) ----


def on_curve(c: Curve, pt: Point) -> bool:
    if pt is None:
        return False
    x, y = pt
    return 0 <= x < c.p and 0 <= y < c.p and (y * y - (x * x * x + c.a * x + c.b)) % c.p == 0


def add(c: Curve, p1: Point, p2: Point) -> Point:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2:
        if (y1 + y2) % c.p == 0:
            return None
        lam = (3 * x1 * x1 + c.a) * pow(2 * y1, -1, c.p) % c.p
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, c.p) % c.p
    x3 = (lam * lam - x1 - x2) % c.p
    return x3, (lam * (x1 - x3) - y1) % c.p


def mul(c: Curve, k: int, pt: Point) -> Point:
    out: Point = None
    addend = pt
    while k:
        if k & 1:
            out = add(c, out, addend)
        addend = add(c, addend, addend)
        k >>= 1
    return out


def encode_point(c: Curve, pt: Point) -> bytes:
    if pt is None:
        raise PaceError("the point at infinity has no encoding")
    return b"\x04" + pt[0].to_bytes(c.size, "big") + pt[1].to_bytes(c.size, "big")


def decode_point(c: Curve, data: bytes) -> Point:
    if len(data) != 1 + 2 * c.size or data[0] != 0x04:
        raise PaceError(f"not an uncompressed {c.name} point ({len(data)} bytes)")
    pt = (int.from_bytes(data[1 : 1 + c.size], "big"), int.from_bytes(data[1 + c.size :], "big"))
    if not on_curve(c, pt):
        raise PaceError("the other side's point is not on the curve")
    return pt


def random_scalar(c: Curve) -> int:
    while True:
        k = int.from_bytes(os.urandom(c.size + 8), "big") % c.n
        if k:
            return k


# -- keys ----------------------------------------------------------------------------------


def kdf(secret: bytes, counter: int) -> bytes:
    """ICAO 9303-11 §9.7.1 for AES-128: SHA-1(secret || counter)[:16]."""
    return hashlib.sha1(secret + counter.to_bytes(4, "big")).digest()[:16]  # noqa: S324


def password_key(password: str, kind: int) -> bytes:
    """K_pi. The CAN is used as its ASCII digits, the MRZ information through SHA-1."""
    if kind == PASSWORD_CAN:
        if not (password.isascii() and password.isdigit() and len(password) == 6):
            raise PaceError("a CAN is six digits")
        secret = password.encode()
    else:
        secret = hashlib.sha1(password.encode()).digest()  # noqa: S324
    return kdf(secret, 3)


def _aes(key: bytes, data: bytes, *, encrypt: bool, iv: bytes = bytes(16)) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def cmac8(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()[:8]


def oid_der(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).dump())


def auth_token(ks_mac: bytes, oid: str, curve: Curve, pt: Point) -> bytes:
    """CMAC over the other side's ephemeral public key as a public key data object (7F49)."""
    body = oid_der(oid) + tlv(0x86, encode_point(curve, pt))
    return cmac8(ks_mac, b"\x7f\x49" + bytes([len(body)]) + body)


class AesSecureMessaging(SecureMessaging):
    """Secure messaging after PACE: AES-CBC with IV = E(KS_enc, SSC), AES-CMAC cut to 8 bytes,
    16-byte SSC starting at zero (ICAO 9303-11 §9.8)."""

    block = 16

    def __init__(self, ks_enc: bytes, ks_mac: bytes) -> None:
        super().__init__(ks_enc, ks_mac, bytes(16))

    def _iv(self, ssc: bytes) -> bytes:
        enc = Cipher(algorithms.AES(self.ks_enc), modes.ECB()).encryptor()
        return enc.update(ssc) + enc.finalize()

    def _encrypt(self, data: bytes, ssc: bytes) -> bytes:
        return _aes(self.ks_enc, data, encrypt=True, iv=self._iv(ssc))

    def _decrypt(self, data: bytes, ssc: bytes) -> bytes:
        return _aes(self.ks_enc, data, encrypt=False, iv=self._iv(ssc))

    def _mac(self, padded: bytes) -> bytes:
        return cmac8(self.ks_mac, padded)


# -- EF.CardAccess ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PaceInfo:
    oid: str
    version: int
    parameter_id: int

    @property
    def supported(self) -> bool:
        return (
            self.oid == PACE_ECDH_GM_AES_128 and self.version == 2 and self.parameter_id in CURVES
        )


def parse_card_access(data: bytes) -> list[PaceInfo]:
    """The PACEInfos in EF.CardAccess (a SET OF SecurityInfo); other infos are skipped.
    Errors name the offset, like every other parser of chip data here."""
    try:
        tag, body, _ = read_tlv(data, 0)
        if tag != 0x31:
            raise PaceError(f"EF.CardAccess: expected a SET (31) at offset 0, found {tag:02X}")
        out = []
        offset = 0
        while offset < len(body):
            tag, info, offset = read_tlv(body, offset)
            if tag != 0x30:
                continue
            parts: list[tuple[int, bytes]] = []
            pos = 0
            while pos < len(info):
                t, v, pos = read_tlv(info, pos)
                parts.append((t, v))
            if len(parts) < 2 or parts[0][0] != 0x06 or parts[1][0] != 0x02:
                continue
            oid = core.ObjectIdentifier.load(b"\x06" + bytes([len(parts[0][1])]) + parts[0][1])
            if not oid.dotted.startswith("0.4.0.127.0.7.2.2.4."):
                continue
            param = int.from_bytes(parts[2][1], "big") if len(parts) > 2 else 0
            out.append(PaceInfo(oid.dotted, int.from_bytes(parts[1][1], "big"), param))
        return out
    except (CccdError, ValueError) as exc:
        if isinstance(exc, PaceError):
            raise
        raise PaceError(f"EF.CardAccess: {exc}") from exc


def card_access(parameter_id: int = 13) -> bytes:
    """EF.CardAccess offering PACE ECDH-GM AES-128 on the given curve (chip simulator)."""
    info = oid_der(PACE_ECDH_GM_AES_128) + b"\x02\x01\x02" + b"\x02\x01" + bytes([parameter_id])
    seq = b"\x30" + bytes([len(info)]) + info
    return b"\x31" + bytes([len(seq)]) + seq


# -- the two sides ---------------------------------------------------------------------------


def mse_set_at(info: PaceInfo, kind: int) -> bytes:
    """The data of MSE:Set AT: protocol OID, password reference, domain parameter id."""
    return (
        tlv(0x80, oid_der(info.oid)[2:])
        + tlv(0x83, bytes([kind]))
        + tlv(0x84, bytes([info.parameter_id]))
    )


def dynamic(tag: int, value: bytes) -> bytes:
    """GENERAL AUTHENTICATE's dynamic authentication data: 7C { tag value }."""
    return tlv(0x7C, tlv(tag, value) if value or tag else b"")


def undynamic(data: bytes, tag: int) -> bytes:
    try:
        outer, body, _ = read_tlv(data, 0)
        inner, value, _ = read_tlv(body, 0)
    except CccdError as exc:
        raise PaceError(f"malformed GENERAL AUTHENTICATE data: {exc}") from exc
    if outer != 0x7C or inner != tag:
        raise PaceError(f"expected 7C/{tag:02X}, got {outer:02X}/{inner:02X}")
    return value


class PcdPace:
    """The reader's side, one step per GENERAL AUTHENTICATE; keys can be given for tests."""

    def __init__(
        self, info: PaceInfo, password: str, kind: int, keys: tuple[int, int] | None = None
    ) -> None:
        if not info.supported:
            raise PaceError(f"unsupported PACE {info.oid} v{info.version} p{info.parameter_id}")
        self.info = info
        self.curve = CURVES[info.parameter_id]
        self.k_pi = password_key(password, kind)
        c = self.curve
        self.sk_map, self.sk_eph = keys or (random_scalar(c), random_scalar(c))
        self.nonce = 0
        self.g_hat: Point = None
        self.pk_eph_ic: Point = None
        self.ks_enc = self.ks_mac = b""

    def map_key(self, encrypted_nonce: bytes) -> bytes:
        """Step 1 -> 2: decrypt the nonce, send our mapping public key."""
        if len(encrypted_nonce) != 16:
            raise PaceError(f"the nonce is 16 bytes, got {len(encrypted_nonce)}")
        self.nonce = int.from_bytes(_aes(self.k_pi, encrypted_nonce, encrypt=False), "big")
        return encode_point(self.curve, mul(self.curve, self.sk_map, self.curve.g))

    def ephemeral_key(self, pk_map_ic: bytes) -> bytes:
        """Step 2 -> 3: the mapped generator, then our ephemeral public key on it."""
        c = self.curve
        h = mul(c, self.sk_map, decode_point(c, pk_map_ic))
        if h is None:
            raise PaceError("the mapping produced the point at infinity")
        self.g_hat = add(c, mul(c, self.nonce, c.g), h)
        return encode_point(c, mul(c, self.sk_eph, self.g_hat))

    def token(self, pk_eph_ic: bytes) -> bytes:
        """Step 3 -> 4: the shared secret, session keys and our authentication token."""
        c = self.curve
        pt = decode_point(c, pk_eph_ic)
        if pk_eph_ic == encode_point(c, mul(c, self.sk_eph, self.g_hat)):
            raise PaceError("the chip echoed our ephemeral key")
        shared = mul(c, self.sk_eph, pt)
        if shared is None:
            raise PaceError("the key agreement produced the point at infinity")
        k = shared[0].to_bytes(c.size, "big")
        self.ks_enc, self.ks_mac = kdf(k, 1), kdf(k, 2)
        self.pk_eph_ic = pt
        return auth_token(self.ks_mac, self.info.oid, c, pt)

    def finish(self, token_ic: bytes) -> AesSecureMessaging:
        """Step 4: the chip's token over our key; the secure-messaging session."""
        mine = mul(self.curve, self.sk_eph, self.g_hat)
        if token_ic != auth_token(self.ks_mac, self.info.oid, self.curve, mine):
            raise PaceError("the chip's authentication token does not verify")
        return AesSecureMessaging(self.ks_enc, self.ks_mac)


class IcPace:
    """The chip's side (simulator): same steps, answering the reader's."""

    def __init__(
        self, info: PaceInfo, password: str, kind: int, keys: tuple[int, int] | None = None
    ) -> None:
        self.info = info
        self.curve = CURVES[info.parameter_id]
        self.k_pi = password_key(password, kind)
        c = self.curve
        self.sk_map, self.sk_eph = keys or (random_scalar(c), random_scalar(c))
        self.nonce_bytes = os.urandom(16)
        self.g_hat: Point = None
        self.pk_eph_pcd: Point = None
        self.ks_enc = self.ks_mac = b""

    def encrypted_nonce(self) -> bytes:
        return _aes(self.k_pi, self.nonce_bytes, encrypt=True)

    def map_key(self, pk_map_pcd: bytes) -> bytes:
        c = self.curve
        h = mul(c, self.sk_map, decode_point(c, pk_map_pcd))
        if h is None:
            raise PaceError("the mapping produced the point at infinity")
        self.g_hat = add(c, mul(c, int.from_bytes(self.nonce_bytes, "big"), c.g), h)
        return encode_point(c, mul(c, self.sk_map, c.g))

    def ephemeral_key(self, pk_eph_pcd: bytes) -> bytes:
        c = self.curve
        pt = decode_point(c, pk_eph_pcd)
        shared = mul(c, self.sk_eph, pt)
        if shared is None:
            raise PaceError("the key agreement produced the point at infinity")
        k = shared[0].to_bytes(c.size, "big")
        self.ks_enc, self.ks_mac = kdf(k, 1), kdf(k, 2)
        self.pk_eph_pcd = pt
        return encode_point(c, mul(c, self.sk_eph, self.g_hat))

    def check_token(self, token_pcd: bytes) -> bytes | None:
        """The chip's token, or None when the reader's does not verify (wrong password)."""
        c = self.curve
        mine = mul(c, self.sk_eph, self.g_hat)
        if token_pcd != auth_token(self.ks_mac, self.info.oid, c, mine):
            return None
        return auth_token(self.ks_mac, self.info.oid, c, self.pk_eph_pcd)

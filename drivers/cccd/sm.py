"""ICAO 9303-11 Basic Access Control and 3DES secure messaging, as pure functions.

- Padding: ISO/IEC 9797-1 method 2 (0x80 then zeros to a multiple of 8).
- MAC: ISO/IEC 9797-1 MAC algorithm 3 ("retail MAC"): DES-CBC with Ka over every block, the
  last block then decrypted with Kb and encrypted with Ka again.
- Encryption: two-key 3DES in CBC mode with a zero IV.
- Each protected command and each response first increments the 8-byte send sequence counter
  (SSC), which is MACed with the message: a replayed or reordered APDU fails its MAC.

Kept free of I/O so the reader side (``chip.py``) and the chip simulator share one tested
implementation, checked against ICAO's worked example.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from biblioedge.drivers.cccd.bac import derive_key
from biblioedge.drivers.cccd.errors import CccdError

ZERO_IV = bytes(8)


class SecureMessagingError(CccdError):
    """A protected response that does not verify (wrong MAC, bad padding, missing objects)."""


def pad(data: bytes) -> bytes:
    data = data + b"\x80"
    return data + bytes(-len(data) % 8)


def unpad(data: bytes) -> bytes:
    """Strip ISO 9797-1 method 2 padding (any block size)."""
    end = data.rstrip(b"\x00")
    if not end or end[-1] != 0x80:
        raise SecureMessagingError("bad ISO 9797-1 padding")
    return end[:-1]


def _k24(key: bytes) -> bytes:
    """The 24-byte form of a two-key (K1 K2 -> K1 K2 K1) or single DES key (k k k): the same
    cipher, in the only key size cryptography keeps supporting."""
    if len(key) == 16:
        return key + key[:8]
    if len(key) == 8:
        return key * 3
    return key


def _des3(key: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(TripleDES(_k24(key)), modes.CBC(ZERO_IV))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def encrypt(key: bytes, data: bytes) -> bytes:
    return _des3(key, data, encrypt=True)


def decrypt(key: bytes, data: bytes) -> bytes:
    if len(data) % 8:
        raise SecureMessagingError("ciphertext is not a whole number of blocks")
    return _des3(key, data, encrypt=False)


def retail_mac(key: bytes, data: bytes) -> bytes:
    """MAC algorithm 3 over already padded ``data`` with a 16-byte key (Ka || Kb)."""
    if len(data) % 8:
        raise ValueError("retail MAC input must be padded to 8 bytes")
    ka, kb = key[:8], key[8:16]
    h = ZERO_IV
    des_a = Cipher(TripleDES(_k24(ka)), modes.ECB())
    for i in range(0, len(data), 8):
        block = bytes(x ^ y for x, y in zip(h, data[i : i + 8], strict=True))
        enc = des_a.encryptor()
        h = enc.update(block) + enc.finalize()
    dec = Cipher(TripleDES(_k24(kb)), modes.ECB()).decryptor()
    h = dec.update(h) + dec.finalize()
    enc = des_a.encryptor()
    return enc.update(h) + enc.finalize()


def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82, n >> 8, n & 0xFF])
    return bytes([tag]) + length + value


def read_tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, value, next offset) of a one-byte-tag BER-TLV; CccdError names the offset."""
    if offset + 2 > len(data):
        raise SecureMessagingError(f"truncated TLV at offset {offset}")
    tag, first = data[offset], data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    elif first in (0x81, 0x82):
        size = first - 0x80
        if pos + size > len(data):
            raise SecureMessagingError(f"truncated TLV length at offset {offset}")
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    else:
        raise SecureMessagingError(f"unsupported TLV length byte {first:#x} at offset {offset + 1}")
    if pos + length > len(data):
        raise SecureMessagingError(f"TLV at offset {offset} runs past the end ({length} bytes)")
    return tag, data[pos : pos + length], pos + length


@dataclass(frozen=True)
class Apdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None  # None: no Le; 0 means the maximum (256, or 65536 when extended)
    extended: bool = False  # ISO 7816-4 extended Lc/Le (3-byte Lc, 2-byte Le)

    @classmethod
    def parse(cls, raw: bytes) -> Apdu:
        """Short and extended APDUs, cases 1-4."""
        if len(raw) < 4:
            raise CccdError(f"APDU of {len(raw)} bytes")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, le=body[0])
        if body[0] == 0 and len(body) >= 3:  # extended
            if len(body) == 3:
                return cls(cla, ins, p1, p2, le=int.from_bytes(body[1:3], "big"), extended=True)
            lc = int.from_bytes(body[1:3], "big")
            if len(body) == 3 + lc:
                return cls(cla, ins, p1, p2, body[3:], extended=True)
            if len(body) == 5 + lc:
                le = int.from_bytes(body[3 + lc :], "big")
                return cls(cla, ins, p1, p2, body[3 : 3 + lc], le, extended=True)
            raise CccdError(f"extended APDU length {len(raw)} does not fit Lc {lc}")
        lc = body[0]
        if len(body) == 1 + lc:
            return cls(cla, ins, p1, p2, body[1:])
        if len(body) == 2 + lc:
            return cls(cla, ins, p1, p2, body[1 : 1 + lc], body[1 + lc])
        raise CccdError(f"APDU length {len(raw)} does not fit Lc {lc}")

    def to_bytes(self) -> bytes:
        out = bytes([self.cla, self.ins, self.p1, self.p2])
        if self.extended:
            if self.data:
                out += b"\x00" + len(self.data).to_bytes(2, "big") + self.data
            if self.le is not None:
                out += (b"" if self.data else b"\x00") + self.le.to_bytes(2, "big")
            return out
        if self.data:
            out += bytes([len(self.data)]) + self.data
        if self.le is not None:
            out += bytes([self.le])
        return out

    @property
    def expected(self) -> int:
        """How many response bytes Le asks for."""
        if self.le is None:
            return 0
        if self.le == 0:
            return 65536 if self.extended else 256
        return self.le


class SecureMessaging:
    """One BAC session (3DES, retail MAC, 8-byte SSC): protects commands and verifies and
    decrypts responses (reader side); the chip simulator uses the mirror methods. PACE's AES
    variant (``pace.AesSecureMessaging``) changes only the primitives below."""

    block = 8

    def __init__(self, ks_enc: bytes, ks_mac: bytes, ssc: bytes) -> None:
        self.ks_enc = ks_enc
        self.ks_mac = ks_mac
        self.ssc = int.from_bytes(ssc, "big")
        self.ssc_len = len(ssc)

    # -- the primitives of the cipher suite ---------------------------------------------

    def _pad(self, data: bytes) -> bytes:
        data = data + b"\x80"
        return data + bytes(-len(data) % self.block)

    def _encrypt(self, data: bytes, ssc: bytes) -> bytes:
        return encrypt(self.ks_enc, data)

    def _decrypt(self, data: bytes, ssc: bytes) -> bytes:
        return decrypt(self.ks_enc, data)

    def _mac(self, padded: bytes) -> bytes:
        return retail_mac(self.ks_mac, padded)

    def _next(self) -> bytes:
        self.ssc = (self.ssc + 1) % (1 << (8 * self.ssc_len))
        return self.ssc.to_bytes(self.ssc_len, "big")

    # -- the reader's side ----------------------------------------------------------------

    def protect(self, apdu: Apdu) -> bytes:
        ssc = self._next()
        cla = apdu.cla | 0x0C
        header = self._pad(bytes([cla, apdu.ins, apdu.p1, apdu.p2]))
        do87 = tlv(0x87, b"\x01" + self._encrypt(self._pad(apdu.data), ssc)) if apdu.data else b""
        if apdu.le is None:
            do97 = b""
        elif apdu.extended:
            do97 = tlv(0x97, apdu.le.to_bytes(2, "big"))
        else:
            do97 = tlv(0x97, bytes([apdu.le]))
        mac = self._mac(self._pad(ssc + header + do87 + do97))
        body = do87 + do97 + tlv(0x8E, mac)
        if apdu.extended:
            return Apdu(cla, apdu.ins, apdu.p1, apdu.p2, body, 0, extended=True).to_bytes()
        return bytes([cla, apdu.ins, apdu.p1, apdu.p2, len(body)]) + body + b"\x00"

    def unprotect(self, response: bytes) -> tuple[bytes, bytes]:
        """(plain data, status word) of a protected response; raises on any doubt."""
        if len(response) < 2:
            raise SecureMessagingError("response shorter than a status word")
        body, sw = response[:-2], response[-2:]
        ssc = self._next()
        if not body:  # an error status the chip sends unprotected (e.g. 6988 SM failure)
            return b"", sw
        objects: dict[int, bytes] = {}
        raw: dict[int, bytes] = {}
        offset = 0
        while offset < len(body):
            start = offset
            tag, value, offset = read_tlv(body, offset)
            objects[tag] = value
            raw[tag] = body[start:offset]
        if 0x8E not in objects or 0x99 not in objects:
            raise SecureMessagingError("protected response lacks DO99 or DO8E")
        expected = self._mac(self._pad(ssc + raw.get(0x87, b"") + raw[0x99]))
        if expected != objects[0x8E]:
            raise SecureMessagingError("response MAC does not verify")
        data = b""
        if 0x87 in objects:
            enc = objects[0x87]
            if not enc or enc[0] != 0x01:
                raise SecureMessagingError("DO87 without the padding-content indicator")
            if len(enc[1:]) % self.block:
                raise SecureMessagingError("ciphertext is not a whole number of blocks")
            data = unpad(self._decrypt(enc[1:], ssc))
        return data, objects[0x99]

    # -- the chip's side --------------------------------------------------------------------

    def open_command(self, raw: bytes) -> Apdu:
        """Verify and decrypt a protected command (chip simulator)."""
        cmd = Apdu.parse(raw)
        if cmd.cla & 0x0C != 0x0C:
            raise SecureMessagingError("command is not protected")
        ssc = self._next()
        objects: dict[int, bytes] = {}
        order: list[bytes] = []
        offset = 0
        while offset < len(cmd.data):
            start = offset
            tag, value, offset = read_tlv(cmd.data, offset)
            objects[tag] = value
            if tag != 0x8E:
                order.append(cmd.data[start:offset])
        if 0x8E not in objects:
            raise SecureMessagingError("protected command lacks DO8E")
        header = self._pad(bytes([cmd.cla, cmd.ins, cmd.p1, cmd.p2]))
        if self._mac(self._pad(ssc + header + b"".join(order))) != objects[0x8E]:
            raise SecureMessagingError("command MAC does not verify")
        data = b""
        if 0x87 in objects:
            enc = objects[0x87][1:]
            if len(enc) % self.block:
                raise SecureMessagingError("ciphertext is not a whole number of blocks")
            data = unpad(self._decrypt(enc, ssc))
        le = int.from_bytes(objects[0x97], "big") if 0x97 in objects else None
        extended = 0x97 in objects and len(objects[0x97]) == 2
        return Apdu(cmd.cla & ~0x0C & 0xFF, cmd.ins, cmd.p1, cmd.p2, data, le, extended)

    def seal_response(self, data: bytes, sw: bytes) -> bytes:
        ssc = self._next()
        do87 = tlv(0x87, b"\x01" + self._encrypt(self._pad(data), ssc)) if data else b""
        do99 = tlv(0x99, sw)
        mac = self._mac(self._pad(ssc + do87 + do99))
        return do87 + do99 + tlv(0x8E, mac) + sw


# -- BAC mutual authentication ------------------------------------------------------------


@dataclass(frozen=True)
class BacChallenge:
    rnd_ifd: bytes
    k_ifd: bytes
    rnd_icc: bytes

    @classmethod
    def new(cls, rnd_icc: bytes) -> BacChallenge:
        return cls(os.urandom(8), os.urandom(16), rnd_icc)


def external_authenticate_data(k_enc: bytes, k_mac: bytes, ch: BacChallenge) -> bytes:
    """E.IFD || M.IFD for EXTERNAL AUTHENTICATE."""
    e_ifd = encrypt(k_enc, ch.rnd_ifd + ch.rnd_icc + ch.k_ifd)
    return e_ifd + retail_mac(k_mac, pad(e_ifd))


def session_from_icc(
    k_enc: bytes, k_mac: bytes, ch: BacChallenge, response: bytes
) -> SecureMessaging:
    """Check the chip's answer and derive the session keys and the SSC."""
    if len(response) != 40:
        raise SecureMessagingError(f"EXTERNAL AUTHENTICATE answer is 40 bytes, got {len(response)}")
    e_icc, m_icc = response[:32], response[32:]
    if retail_mac(k_mac, pad(e_icc)) != m_icc:
        raise SecureMessagingError("chip's authentication MAC does not verify")
    r = decrypt(k_enc, e_icc)
    if r[:8] != ch.rnd_icc or r[8:16] != ch.rnd_ifd:
        raise SecureMessagingError("chip's answer does not carry our challenge")
    k_icc = r[16:32]
    seed = bytes(a ^ b for a, b in zip(ch.k_ifd, k_icc, strict=True))
    return SecureMessaging(
        derive_key(seed, 1), derive_key(seed, 2), ch.rnd_icc[4:] + ch.rnd_ifd[4:]
    )

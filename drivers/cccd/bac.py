"""BAC key derivation (ICAO 9303-11, 9.7): from the MRZ information to the 3DES keys.

K_seed is the first 16 bytes of SHA-1(MRZ information); each key is the first 16 bytes of
SHA-1(K_seed || counter) with DES parity bits set (counter 1: K_enc, counter 2: K_mac).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def _with_parity(key: bytes) -> bytes:
    out = bytearray()
    for byte in key:
        high = byte & 0xFE  # DES keys want odd parity in every byte's low bit
        out.append(high | (bin(high).count("1") % 2 == 0))
    return bytes(out)


def derive_key(seed: bytes, counter: int) -> bytes:
    return _with_parity(hashlib.sha1(seed + counter.to_bytes(4, "big")).digest()[:16])


@dataclass(frozen=True)
class BacKeys:
    k_seed: bytes
    k_enc: bytes
    k_mac: bytes

    def as_hex(self) -> dict[str, str]:
        return {"k_seed": self.k_seed.hex(), "k_enc": self.k_enc.hex(), "k_mac": self.k_mac.hex()}


def bac_keys(mrz_information: str) -> BacKeys:
    seed = hashlib.sha1(mrz_information.encode("ascii")).digest()[:16]
    return BacKeys(seed, derive_key(seed, 1), derive_key(seed, 2))

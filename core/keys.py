"""Symmetric key files for data at rest (face templates on kiosks and at central)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class KeyFileError(ValueError):
    """The key file is unreadable or not a 256-bit key."""


def load_or_create_key(path: Path) -> bytes:
    """The 32-byte key in ``path``, created 0600 (directory 0700) with fsync on first use."""
    if path.exists():
        key = path.read_bytes()
        if len(key) != 32:
            raise KeyFileError(f"{path}: a template key is 32 bytes, found {len(key)}")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = AESGCM.generate_key(bit_length=256)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key

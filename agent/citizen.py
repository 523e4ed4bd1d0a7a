"""The keyed hash of a citizen ID number, shared by the desk (which sends it to central) and
the self-check (which finds a reader by the CCCD QR with it)."""

from __future__ import annotations

import hashlib
import hmac


def citizen_ref(pepper: bytes, id_number: str) -> str:
    """The same reader is recognised everywhere the pepper is; the number itself is never
    sent or kept (a plain hash of 12 digits is reversed in minutes)."""
    return hmac.new(pepper, id_number.encode(), hashlib.sha256).hexdigest()

"""The keyed hash of a citizen ID number: the desk sends it to central, the self-check finds a
reader by a CCCD QR with it, and the librarian's page at central looks a reader up by a
scanned CCCD with it (central holds the desks' pepper only where it is configured)."""

from __future__ import annotations

import hashlib
import hmac


def citizen_ref(pepper: bytes, id_number: str) -> str:
    """The same reader is recognised everywhere the pepper is; the number itself is never
    sent or kept (a plain hash of 12 digits is reversed in minutes)."""
    return hmac.new(pepper, id_number.encode(), hashlib.sha256).hexdigest()

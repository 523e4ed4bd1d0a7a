"""Which kiosks are revoked, for what the API and the dashboard show of them.

A device's registry row keeps the last state it reported, ``online`` included, and a
revoked kiosk never reports again (the broker refuses its certificate), so without this it
would read "online" for ever. A device is revoked when central issued it certificates and
every one of them is revoked; one that merely let its certificate expire is not (the query:
``fleet/store/devices.py``).
"""

from __future__ import annotations

from typing import Any


def with_revocation(devices: list[dict[str, Any]], revoked: set[str]) -> list[dict[str, Any]]:
    """The rows as shown: a revoked device is ``revoked`` and never ``online``."""
    out = []
    for d in devices:
        gone = d["device_id"] in revoked
        out.append({**d, "revoked": gone, "online": bool(d.get("online")) and not gone})
    return out

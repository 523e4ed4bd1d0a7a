"""Which kiosks are revoked, for what the API and the dashboard show of them.

A device's registry row keeps the last state it reported, ``online`` included, and a
revoked kiosk never reports again (the broker refuses its certificate), so without this it
would read "online" for ever. A device is revoked when central issued it certificates and
every one of them is revoked; one that merely let its certificate expire is not.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, case, func, select

from biblioedge.fleet.db import device_certs


def revoked_devices(engine: Engine, device_ids: list[str] | None = None) -> set[str]:
    active = func.sum(case((device_certs.c.revoked_at.is_(None), 1), else_=0))
    stmt = (
        select(device_certs.c.device_id)
        .group_by(device_certs.c.device_id)
        .having(func.count() > 0)
        .having(active == 0)
    )
    if device_ids is not None:
        stmt = stmt.where(device_certs.c.device_id.in_(device_ids))
    with engine.connect() as conn:
        return {str(r.device_id) for r in conn.execute(stmt)}


def with_revocation(devices: list[dict[str, Any]], revoked: set[str]) -> list[dict[str, Any]]:
    """The rows as shown: a revoked device is ``revoked`` and never ``online``."""
    out = []
    for d in devices:
        gone = d["device_id"] in revoked
        out.append({**d, "revoked": gone, "online": bool(d.get("online")) and not gone})
    return out

"""Questions about kiosks that the registry's own table does not answer alone: which are
revoked (from their certificates), and each one's registered role (the ingest's quotas)."""

from __future__ import annotations

from sqlalchemy import case, func, select

from biblioedge.fleet.db import device_certs, devices
from biblioedge.fleet.store import Db, engine_of


def revoked_devices(db: Db, device_ids: list[str] | None = None) -> set[str]:
    """Kiosks central issued certificates to, every one of them revoked (one that merely
    let its certificate expire is not revoked): see ``fleet/device_status.py``."""
    active = func.sum(case((device_certs.c.revoked_at.is_(None), 1), else_=0))
    stmt = (
        select(device_certs.c.device_id)
        .group_by(device_certs.c.device_id)
        .having(func.count() > 0)
        .having(active == 0)
    )
    if device_ids is not None:
        stmt = stmt.where(device_certs.c.device_id.in_(device_ids))
    with engine_of(db).connect() as conn:
        return {str(r.device_id) for r in conn.execute(stmt)}


def device_roles(db: Db, ids: list[str]) -> dict[str, str | None]:
    """The registry's role of each device (None: not registered or no role)."""
    out: dict[str, str | None] = dict.fromkeys(ids)
    with engine_of(db).connect() as conn:
        for i in range(0, len(ids), 500):
            rows = conn.execute(
                select(devices.c.device_id, devices.c.role).where(
                    devices.c.device_id.in_(ids[i : i + 500])
                )
            )
            for device_id, role in rows:
                out[device_id] = role
    return out

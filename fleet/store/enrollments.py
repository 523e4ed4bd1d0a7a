"""Enrollment's tables as others read them. The enrollment itself (tokens, certificates,
re-key requests) still writes them from ``fleet/enrollments.py``, inside the transactions
that issue certificates."""

from __future__ import annotations

from sqlalchemy import select

from biblioedge.fleet.db import rekey_requests
from biblioedge.fleet.store import Db, engine_of


def pending_rekeys(db: Db) -> list[tuple[str, str]]:
    """(device, request id) of the re-key requests waiting for IT: the dashboard's attention
    list shows them first (a stolen key trying to move a kiosk onto its own looks like this)."""
    with engine_of(db).connect() as conn:
        rows = conn.execute(
            select(rekey_requests.c.device_id, rekey_requests.c.request_id)
            .where(rekey_requests.c.state == "pending")
            .order_by(rekey_requests.c.requested_at)
            .limit(50)
        )
        return [(r.device_id, r.request_id) for r in rows]

"""One kiosk's activity for the dashboard's kiosk page: the events that count, light rows
(when, type, the gate's decision), never their whole payloads (fleet/itdash.py counts them)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select

from biblioedge.fleet.db import events
from biblioedge.fleet.store import Db, engine_of


def activity_rows(
    db: Db, device_id: str, since: datetime, types: Iterable[str], limit: int
) -> list[tuple[datetime, str, str | None]]:
    """(occurred_at, type, decision) of ``device_id``'s events of ``types`` since ``since``,
    newest first, at most ``limit`` (the index on (device, seq) narrows it to the kiosk)."""
    decision = events.c.payload["decision"].as_string()
    stmt = (
        select(events.c.occurred_at, events.c.type, decision)
        .where(events.c.device_id == device_id)
        .where(events.c.occurred_at >= since)
        .where(events.c.type.in_(sorted(set(types))))
        .order_by(events.c.id.desc())
        .limit(limit)
    )
    with engine_of(db).connect() as conn:
        return [(r[0], str(r[1]), None if r[2] is None else str(r[2])) for r in conn.execute(stmt)]

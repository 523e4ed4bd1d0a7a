"""Central's own events: the security attention cases it raises, stored among the devices'
events (``events``) so the dashboard and the API list them with the rest."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from biblioedge.fleet.db import events
from biblioedge.protocol import uuid7


def add_central_event(
    conn: Connection, device_id: str, site: str, type_: str, payload: dict[str, Any], now: datetime
) -> None:
    """An event central writes about a device, in the caller's transaction."""
    conn.execute(
        insert(events).values(
            event_id=uuid7(),
            device_id=device_id,
            site=site,
            type=type_,
            seq=0,  # central's, not in the device's sequence
            occurred_at=now,
            received_at=now,
            payload=payload,
        )
    )

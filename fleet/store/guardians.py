"""The statements on minors' guardian records (``fleet/guardians.py`` decides; this module
only reads and writes rows, on the caller's connection and transaction)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select

from biblioedge.fleet.db import guardian_consents


def put(conn: Connection, patron_id: str, values: dict[str, Any]) -> None:
    """Her record, replacing an earlier registration's (the newest consent decides)."""
    conn.execute(delete(guardian_consents).where(guardian_consents.c.patron_id == patron_id))
    conn.execute(insert(guardian_consents).values(patron_id=patron_id, **values))


def drop(conn: Connection, patron_id: str) -> None:
    conn.execute(delete(guardian_consents).where(guardian_consents.c.patron_id == patron_id))


def get(conn: Connection, patron_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(guardian_consents).where(guardian_consents.c.patron_id == patron_id)
    ).first()
    return None if row is None else dict(row._mapping)


def adult_on(conn: Connection, patron_id: str) -> str | None:
    value = conn.execute(
        select(guardian_consents.c.adult_on).where(guardian_consents.c.patron_id == patron_id)
    ).scalar()
    return None if value is None else str(value)

"""The statements of pre-registrations and phone cards (``fleet/prereg.py`` and
``fleet/phonecard.py`` decide and seal; this module only reads and writes rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from biblioedge.fleet.db import phone_cards, preregistrations


def add(conn: Connection, **values: Any) -> None:
    conn.execute(insert(preregistrations).values(**values))


def waiting(conn: Connection, now: datetime) -> int:
    """Pre-registrations not used and not expired (the flood guard's count)."""
    q = select(func.count()).where(
        preregistrations.c.used_at.is_(None), preregistrations.c.expires_at > now
    )
    return int(conn.scalar(q) or 0)


def kept(conn: Connection) -> int:
    return int(conn.scalar(select(func.count()).select_from(preregistrations)) or 0)


def get(conn: Connection, prereg_id: str) -> Any:
    return conn.execute(
        select(preregistrations).where(preregistrations.c.prereg_id == prereg_id)
    ).first()


def mark_used(conn: Connection, prereg_id: str, patron_id: str, when: datetime) -> bool:
    """Used by ``patron_id``; its sealed data goes. False when it was used meanwhile."""
    done = conn.execute(
        update(preregistrations)
        .where(preregistrations.c.prereg_id == prereg_id, preregistrations.c.used_at.is_(None))
        .values(used_at=when, patron_id=patron_id, nonce=None, sealed=None)
    )
    return done.rowcount == 1


def purge(conn: Connection, now: datetime) -> int:
    """Every pre-registration past its expiry, used or not, and every expired pick-up."""
    n = conn.execute(delete(preregistrations).where(preregistrations.c.expires_at <= now))
    conn.execute(delete(phone_cards).where(phone_cards.c.expires_at <= now))
    return int(n.rowcount or 0)


def add_pickup(conn: Connection, **values: Any) -> None:
    conn.execute(insert(phone_cards).values(**values))


def drop_pickups(conn: Connection, patron_id: str) -> None:
    """A new card: the phone links of the older ones go (their tokens are revoked anyway)."""
    conn.execute(delete(phone_cards).where(phone_cards.c.patron_id == patron_id))


def pickup(conn: Connection, pickup_id: str) -> Any:
    return conn.execute(select(phone_cards).where(phone_cards.c.pickup_id == pickup_id)).first()

"""The statements of the librarian's page (``fleet/librarian.py`` decides): a reader found by
one exact card number or keyed hash (never a list of readers), the staff cases kiosks sent
and who handled them, and the number each reader's last printed card carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from biblioedge.fleet.db import card_prints, events, reader_profiles, readers, staff_cases_handled

#: What kiosks send staff: a loan refused after reconciliation, a return not secured...
STAFF_CASE = "circ.attention"


def by_number(conn: Connection, number: str) -> str | None:
    """The reader whose patron number or barcode (her card number) this is."""
    pid = conn.scalar(
        select(readers.c.patron_id)
        .where((readers.c.patron_id == number) | (readers.c.barcode == number))
        .limit(1)
    )
    return None if pid is None else str(pid)


def by_citizen_ref(conn: Connection, ref: str) -> str | None:
    pid = conn.scalar(
        select(readers.c.patron_id)
        .join(reader_profiles, reader_profiles.c.patron_id == readers.c.patron_id)
        .where(reader_profiles.c.citizen_ref == ref)
        .limit(1)
    )
    return None if pid is None else str(pid)


def printed(conn: Connection, patron_id: str) -> str | None:
    """The number on the reader's last printed card (None: none recorded)."""
    n = conn.scalar(select(card_prints.c.card_number).where(card_prints.c.patron_id == patron_id))
    return None if n is None else str(n)


def put_print(conn: Connection, patron_id: str, number: str, by: str, now: datetime) -> None:
    values = {"card_number": number, "printed_at": now, "printed_by": by[:64]}
    if not conn.execute(
        update(card_prints).where(card_prints.c.patron_id == patron_id).values(**values)
    ).rowcount:
        conn.execute(insert(card_prints).values(patron_id=patron_id, **values))


def to_reprint(conn: Connection, limit: int = 100) -> list[tuple[str, str, str]]:
    """(patron id, printed number, card number now) of readers whose card number changed
    after their card was printed (the library system assigned it later)."""
    rows = conn.execute(
        select(card_prints.c.patron_id, card_prints.c.card_number, readers.c.barcode)
        .join(readers, readers.c.patron_id == card_prints.c.patron_id)
        .where(and_(readers.c.barcode.is_not(None), readers.c.barcode != card_prints.c.card_number))
        .order_by(card_prints.c.printed_at)
        .limit(limit)
    ).all()
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def staff_cases(conn: Connection, since: datetime, limit: int = 100) -> list[dict[str, Any]]:
    """Kiosks' staff cases since ``since``, newest first, with who handled each."""
    rows = conn.execute(
        select(
            events.c.event_id,
            events.c.device_id,
            events.c.site,
            events.c.occurred_at,
            events.c.payload,
            staff_cases_handled.c.handled_by,
            staff_cases_handled.c.handled_at,
        )
        .outerjoin(staff_cases_handled, staff_cases_handled.c.event_id == events.c.event_id)
        .where((events.c.type == STAFF_CASE) & (events.c.occurred_at >= since))
        .order_by(events.c.occurred_at.desc())
        .limit(limit)
    ).all()
    return [dict(r._mapping) for r in rows]


def is_staff_case(conn: Connection, event_id: str) -> bool:
    found = conn.scalar(
        select(events.c.id).where((events.c.event_id == event_id) & (events.c.type == STAFF_CASE))
    )
    return found is not None


def handle(conn: Connection, event_id: str, by: str, now: datetime) -> bool:
    """Mark handled; False if it already was (the first librarian's name stays)."""
    if conn.scalar(
        select(staff_cases_handled.c.event_id).where(staff_cases_handled.c.event_id == event_id)
    ):
        return False
    conn.execute(
        insert(staff_cases_handled).values(event_id=event_id, handled_by=by[:64], handled_at=now)
    )
    return True

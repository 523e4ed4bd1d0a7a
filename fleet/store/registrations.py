"""The statements of desk registrations: who made one, a returning reader found by the keyed
hash of her ID number, the next patron number, her sealed profile's row
(``fleet/registrations.py`` decides and seals; this module only reads and writes rows).

Every function runs on the caller's connection: a registration is applied in the ingest's
transaction, with the reader, her card, consent and the ILS queue's row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from biblioedge.fleet.db import (
    consents,
    erased_registrations,
    reader_profiles,
    readers,
    registrations,
    templates,
)


def erased(conn: Connection, registration_id: str) -> bool:
    """Whether this registration's reader was erased at central (``erased_registrations``)."""
    found = conn.execute(
        select(erased_registrations.c.registration_id).where(
            erased_registrations.c.registration_id == registration_id
        )
    ).first()
    return found is not None


def owner(conn: Connection, registration_id: str) -> tuple[str, str] | None:
    """(device id, patron id) of a registration already made."""
    row = conn.execute(
        select(registrations.c.device_id, registrations.c.patron_id).where(
            registrations.c.registration_id == registration_id
        )
    ).first()
    return None if row is None else (str(row.device_id), str(row.patron_id))


def returning_reader(conn: Connection, citizen_ref: str) -> str | None:
    """The patron id of a reader still on the books whose profile has this ID hash."""
    ref = conn.execute(
        select(reader_profiles.c.patron_id).where(reader_profiles.c.citizen_ref == citizen_ref)
    ).first()
    if ref is None:
        return None
    here = conn.execute(
        select(readers.c.patron_id).where(readers.c.patron_id == ref.patron_id)
    ).first()
    return None if here is None else str(ref.patron_id)


def status_of(conn: Connection, patron_id: str) -> str | None:
    status = conn.execute(select(readers.c.status).where(readers.c.patron_id == patron_id))
    value = status.scalar()
    return None if value is None else str(value)


def barcode_of(conn: Connection, patron_id: str) -> str | None:
    value = conn.scalar(select(readers.c.barcode).where(readers.c.patron_id == patron_id))
    return None if value is None else str(value)


def drop_templates(conn: Connection, patron_id: str) -> None:
    conn.execute(delete(templates).where(templates.c.patron_id == patron_id))


def record(
    conn: Connection,
    registration_id: str,
    patron_id: str,
    device_id: str,
    result: dict[str, Any],
    when: datetime,
) -> None:
    conn.execute(
        insert(registrations).values(
            registration_id=registration_id,
            patron_id=patron_id,
            device_id=device_id,
            result=result,
            created_at=when,
        )
    )


def next_patron(conn: Connection, prefix: str) -> str:
    """The next ``prefix`` + 7 digits after every number given so far, never an erased
    reader's again: her consent records keep her number (they were counted from the readers
    there are, so the number of a reader erased last was given to the next one)."""
    top = 0
    for column in (readers.c.patron_id, consents.c.patron_id):
        found = conn.scalar(
            select(func.max(column)).where(
                column.like(f"{prefix}%"), func.length(column) == len(prefix) + 7
            )
        )
        digits = str(found or "")[len(prefix) :]
        if digits.isdigit():
            top = max(top, int(digits))
    n = top
    while True:
        n += 1
        pid = f"{prefix}{n:07d}"
        if conn.execute(select(readers.c.patron_id).where(readers.c.patron_id == pid)).first():
            continue
        return pid


def put_profile(conn: Connection, patron_id: str, values: dict[str, Any]) -> None:
    """Her profile row (sealed by the caller); another reader's row with the same ID hash
    goes (one person, one profile)."""
    conn.execute(
        delete(reader_profiles).where(
            (reader_profiles.c.citizen_ref == values["citizen_ref"])
            & (reader_profiles.c.patron_id != patron_id)
        )
    )
    changed = conn.execute(
        update(reader_profiles).where(reader_profiles.c.patron_id == patron_id).values(**values)
    ).rowcount
    if changed == 0:
        conn.execute(insert(reader_profiles).values(patron_id=patron_id, **values))


def profile_row(conn: Connection, patron_id: str) -> tuple[bytes, bytes] | None:
    """(nonce, sealed) of her profile."""
    row = conn.execute(
        select(reader_profiles.c.nonce, reader_profiles.c.sealed).where(
            reader_profiles.c.patron_id == patron_id
        )
    ).first()
    return None if row is None else (bytes(row.nonce), bytes(row.sealed))

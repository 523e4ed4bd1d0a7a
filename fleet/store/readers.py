"""The statements on readers, their templates, revocations, profiles' keys and the gallery
log (``fleet/readers.py`` decides, seals and opens; this module only reads and writes rows).

Every function runs on the caller's connection, inside its transaction: a desk registration,
a renewal or an erasure is one transaction across these tables and the ILS queue's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from biblioedge.fleet.db import (
    card_keys,
    card_revocations,
    consents,
    devices,
    erased_registrations,
    events,
    gallery_log,
    guardian_consents,
    phone_cards,
    preregistrations,
    reader_profiles,
    readers,
    registrations,
    templates,
)
from biblioedge.protocol import utc_now

#: The gallery log's site for a change every branch follows (no site id can be "*").
LIBRARY = "*"


# -- readers -----------------------------------------------------------------------------------


def site_of(conn: Connection, patron_id: str) -> str | None:
    site = conn.execute(select(readers.c.site).where(readers.c.patron_id == patron_id)).scalar()
    return None if site is None else str(site)


def reader(conn: Connection, patron_id: str) -> Row[Any] | None:
    return conn.execute(select(readers).where(readers.c.patron_id == patron_id)).first()


def barcode_holder(conn: Connection, barcode: str, other_than: str) -> str | None:
    """The reader other than ``other_than`` whose barcode this is, if any."""
    holder = conn.scalar(
        select(readers.c.patron_id).where(
            (readers.c.barcode == barcode) & (readers.c.patron_id != other_than)
        )
    )
    return None if holder is None else str(holder)


def put_reader(conn: Connection, patron_id: str, values: dict[str, Any]) -> None:
    """Insert the reader, or update the fields in ``values``."""
    if site_of(conn, patron_id) is None:
        conn.execute(insert(readers).values(patron_id=patron_id, **values))
    else:
        conn.execute(update(readers).where(readers.c.patron_id == patron_id).values(**values))


def set_fields(conn: Connection, patron_id: str, **values: Any) -> None:
    conn.execute(
        update(readers)
        .where(readers.c.patron_id == patron_id)
        .values(**values, updated_at=utc_now())
    )


def homes_and_kiosk_sites(conn: Connection) -> set[str]:
    homes = {str(r[0]) for r in conn.execute(select(readers.c.site).distinct())}
    kiosks = {str(r[0]) for r in conn.execute(select(devices.c.site).distinct())}
    return homes | kiosks


def citizen_ref_of(conn: Connection, patron_id: str) -> str | None:
    ref = conn.scalar(
        select(reader_profiles.c.citizen_ref).where(reader_profiles.c.patron_id == patron_id)
    )
    return None if ref is None else str(ref)


def erase(conn: Connection, patron_id: str) -> None:
    """The reader, her templates, her sealed profile, her registration and guardian records,
    her phone card's pick-up and the used pre-registration that names her. Her registrations'
    ids are kept as erased: replayed after a restore, they make no reader again."""
    ids = conn.execute(
        select(registrations.c.registration_id).where(registrations.c.patron_id == patron_id)
    ).scalars()
    erased = [{"registration_id": rid, "erased_at": utc_now()} for rid in ids]
    if erased:
        conn.execute(insert(erased_registrations), erased)
    conn.execute(delete(templates).where(templates.c.patron_id == patron_id))
    conn.execute(delete(readers).where(readers.c.patron_id == patron_id))
    conn.execute(delete(reader_profiles).where(reader_profiles.c.patron_id == patron_id))
    conn.execute(delete(registrations).where(registrations.c.patron_id == patron_id))
    conn.execute(delete(phone_cards).where(phone_cards.c.patron_id == patron_id))
    conn.execute(delete(preregistrations).where(preregistrations.c.patron_id == patron_id))
    conn.execute(delete(guardian_consents).where(guardian_consents.c.patron_id == patron_id))


def record_event(conn: Connection, **values: Any) -> None:
    conn.execute(insert(events).values(**values))


# -- templates ---------------------------------------------------------------------------------


def template_counts(conn: Connection, patron_id: str) -> dict[str, int]:
    return {
        str(m): int(n)
        for m, n in conn.execute(
            select(templates.c.model, func.count())
            .where(templates.c.patron_id == patron_id)
            .group_by(templates.c.model)
        )
    }


def replace_templates(
    conn: Connection, patron_id: str, model: str, rows: list[dict[str, Any]]
) -> None:
    conn.execute(
        delete(templates).where((templates.c.patron_id == patron_id) & (templates.c.model == model))
    )
    conn.execute(insert(templates), rows)


def delete_templates(conn: Connection, patron_id: str) -> None:
    conn.execute(delete(templates).where(templates.c.patron_id == patron_id))


def sealed_template_length(conn: Connection, model: str) -> int | None:
    """The stored length of one of ``model``'s sealed templates (None: none stored yet)."""
    n = conn.scalar(
        select(func.length(templates.c.ciphertext)).where(templates.c.model == model).limit(1)
    )
    return None if n is None else int(n)


def templates_of(conn: Connection, patron_id: str) -> Sequence[Row[Any]]:
    return conn.execute(
        select(templates)
        .where(templates.c.patron_id == patron_id)
        .order_by(templates.c.model, templates.c.slot)
    ).all()


# -- consent (read for the gallery) ------------------------------------------------------------


def consent_states(conn: Connection, patron_id: str) -> Sequence[Any]:
    """(purpose, granted, withdrawn_at, sites) of every consent record, oldest first."""
    return conn.execute(
        select(consents.c.purpose, consents.c.granted, consents.c.withdrawn_at, consents.c.sites)
        .where(consents.c.patron_id == patron_id)
        .order_by(consents.c.id)
    ).all()


# -- revocations -------------------------------------------------------------------------------


def is_revoked(conn: Connection, jti: str) -> bool:
    found = conn.execute(select(card_revocations.c.jti).where(card_revocations.c.jti == jti))
    return found.first() is not None


def revoke(conn: Connection, jti: str, patron_id: str) -> None:
    conn.execute(
        insert(card_revocations).values(jti=jti, patron_id=patron_id, revoked_at=utc_now())
    )


def revoked_of(conn: Connection, patron_id: str) -> list[str]:
    return [
        str(r.jti)
        for r in conn.execute(
            select(card_revocations.c.jti).where(card_revocations.c.patron_id == patron_id)
        )
    ]


# -- the gallery log ---------------------------------------------------------------------------


def log_change(conn: Connection, patron_id: str) -> None:
    """Every branch's kiosks follow this reader's change ("": a card-key change)."""
    conn.execute(
        insert(gallery_log).values(site=LIBRARY, patron_id=patron_id, created_at=utc_now())
    )


def site_version(conn: Connection, site: str) -> int:
    return int(
        conn.scalar(
            select(func.max(gallery_log.c.seq)).where(gallery_log.c.site.in_((site, LIBRARY)))
        )
        or 0
    )


def changes_after(conn: Connection, site: str, base: int) -> list[tuple[int, str]]:
    """(seq, patron_id) of the log rows counting for ``site`` after ``base``, in order."""
    return [
        (int(seq), str(pid))
        for seq, pid in conn.execute(
            select(gallery_log.c.seq, gallery_log.c.patron_id)
            .where(gallery_log.c.site.in_((site, LIBRARY)) & (gallery_log.c.seq > base))
            .order_by(gallery_log.c.seq)
        )
    ]


def gate_card_keys(conn: Connection, limit: int = 16) -> dict[str, str]:
    """The newest ``limit`` card keys not retired (kid -> public key)."""
    return {
        str(r.kid): str(r.public_key)
        for r in conn.execute(
            select(card_keys.c.kid, card_keys.c.public_key)
            .where(card_keys.c.retired_at.is_(None))
            .order_by(card_keys.c.created_at.desc())
            .limit(limit)
        )
    }

"""The statements on card keys, cards and consent records (``fleet/cards.py`` signs, seals
and decides; this module only reads and writes rows, on the caller's connection)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from biblioedge.fleet.db import card_keys, card_revocations, cards, consents
from biblioedge.protocol import utc_now

# -- card keys ---------------------------------------------------------------------------------


def key_exists(conn: Connection, kid: str) -> bool:
    return conn.execute(select(card_keys.c.kid).where(card_keys.c.kid == kid)).first() is not None


def add_active_key(conn: Connection, **values: Any) -> None:
    """The new key is the one active key."""
    conn.execute(update(card_keys).values(active=False))
    conn.execute(insert(card_keys).values(active=True, **values))


def key_active(conn: Connection, kid: str) -> bool | None:
    """Whether ``kid`` is the active key (None: no such key)."""
    row = conn.execute(select(card_keys.c.active).where(card_keys.c.kid == kid)).first()
    return None if row is None else bool(row.active)


def retire_key(conn: Connection, kid: str) -> None:
    conn.execute(update(card_keys).where(card_keys.c.kid == kid).values(retired_at=utc_now()))


def public_keys(conn: Connection) -> dict[str, str]:
    rows = conn.execute(
        select(card_keys.c.kid, card_keys.c.public_key).where(card_keys.c.retired_at.is_(None))
    )
    return {str(r.kid): str(r.public_key) for r in rows}


def active_key(conn: Connection) -> Any:
    """The active key's row, or None."""
    return conn.execute(select(card_keys).where(card_keys.c.active.is_(True))).first()


# -- cards -------------------------------------------------------------------------------------


def add_card(
    conn: Connection, jti: str, patron_id: str, kid: str, issued: datetime, expires: datetime
) -> None:
    conn.execute(
        insert(cards).values(
            jti=jti, patron_id=patron_id, kid=kid, issued_at=issued, expires_at=expires
        )
    )


def cards_of(conn: Connection, patron_id: str) -> list[str]:
    return [str(j) for j in conn.scalars(select(cards.c.jti).where(cards.c.patron_id == patron_id))]


def live_cards_of(conn: Connection, patron_id: str) -> list[str]:
    revoked = select(card_revocations.c.jti).where(card_revocations.c.patron_id == patron_id)
    return [
        str(j)
        for j in conn.scalars(
            select(cards.c.jti)
            .where((cards.c.patron_id == patron_id) & cards.c.jti.not_in(revoked))
            .order_by(cards.c.issued_at)
        )
    ]


# -- consent -----------------------------------------------------------------------------------


def consent_by_key(conn: Connection, idempotency_key: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(consents).where(consents.c.idempotency_key == idempotency_key)
    ).first()
    return None if row is None else dict(row._mapping)


def add_consent(conn: Connection, **values: Any) -> dict[str, Any]:
    """Insert a consent record; the record as stored."""
    pk = conn.execute(insert(consents).values(**values)).inserted_primary_key
    if pk is None:  # every backend reports it for a single-row insert
        raise RuntimeError("the database did not report the consent record's id")
    return dict(conn.execute(select(consents).where(consents.c.id == pk[0])).one()._mapping)


def consents_of(conn: Connection, patron_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(consents).where(consents.c.patron_id == patron_id).order_by(consents.c.id)
    )
    return [dict(r._mapping) for r in rows]


def withdraw(conn: Connection, patron_id: str, purpose: str) -> int:
    """Withdraw every standing record of ``purpose``; how many."""
    n = conn.execute(
        update(consents)
        .where(
            (consents.c.patron_id == patron_id)
            & (consents.c.purpose == purpose)
            & consents.c.withdrawn_at.is_(None)
        )
        .values(withdrawn_at=utc_now())
    ).rowcount
    return int(n)

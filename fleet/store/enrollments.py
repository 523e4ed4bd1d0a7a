"""The enrollment tables' SQL: one-time tokens (``enrollments``), device certificates
(``device_certs``) and re-key requests (``rekey_requests``).

The registry (``fleet/enrollments.py``) decides and issues certificates; it opens the
transaction (``Transactions``) because a certificate is issued inside it, between a check
and the write that records it, and calls these statements on that connection."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Row, func, insert, or_, select, update

from biblioedge.fleet.db import device_certs, devices, enrollments, rekey_requests
from biblioedge.fleet.store import Db, engine_of

# -- tokens ---------------------------------------------------------------------------------


def registered_site(conn: Connection, device_id: str) -> str | None:
    row = conn.execute(select(devices.c.site).where(devices.c.device_id == device_id)).first()
    return None if row is None else str(row.site)


def add_token(conn: Connection, **values: Any) -> None:
    conn.execute(insert(enrollments).values(**values))


def token(conn: Connection, token_id: str) -> Row[Any] | None:
    return conn.execute(select(enrollments).where(enrollments.c.token_id == token_id)).first()


def use_token(conn: Connection, token_id: str, now: dt.datetime) -> bool:
    """Mark the token used; False when it already was (two kiosks racing with one token)."""
    claimed = conn.execute(
        update(enrollments)
        .where(enrollments.c.token_id == token_id)
        .where(enrollments.c.used_at.is_(None))
        .values(used_at=now)
    )
    return bool(claimed.rowcount == 1)


def unregister(conn: Connection, device_id: str) -> None:
    conn.execute(update(devices).where(devices.c.device_id == device_id).values(registered=False))


# -- certificates ---------------------------------------------------------------------------


def add_cert(conn: Connection, **values: Any) -> None:
    conn.execute(insert(device_certs).values(**values))


def cert(conn: Connection, serial: str) -> Row[Any] | None:
    return conn.execute(select(device_certs).where(device_certs.c.serial == serial)).first()


def newest_cert(conn: Connection, device_id: str, now: dt.datetime) -> Row[Any] | None:
    """The device's newest certificate that is not revoked (nor due to be)."""
    return conn.execute(
        select(device_certs)
        .where(device_certs.c.device_id == device_id)
        .where(device_certs.c.revoked_at.is_(None))
        .where(or_(device_certs.c.revoke_at.is_(None), device_certs.c.revoke_at > now))
        .order_by(device_certs.c.issued_at.desc())
        .limit(1)
    ).first()


def last_renewal(conn: Connection, device_id: str) -> dt.datetime | None:
    """When the device's certificate was last renewed (re-keys count)."""
    last: dt.datetime | None = conn.execute(
        select(func.max(device_certs.c.issued_at))
        .where(device_certs.c.device_id == device_id)
        .where(device_certs.c.renewed_from.is_not(None))
    ).scalar()
    return last


def revoke_certs(conn: Connection, device_id: str, now: dt.datetime) -> int:
    """Revoke every certificate of the device not revoked yet, at once; how many."""
    res = conn.execute(
        update(device_certs)
        .where(device_certs.c.device_id == device_id)
        .where(device_certs.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(res.rowcount)


def retire_others(
    conn: Connection, device_id: str, keep: str, now: dt.datetime, grace: dt.timedelta
) -> None:
    """Every other certificate of the device goes after ``grace`` (an earlier date already
    set stays), or at once without a grace."""
    others = (
        update(device_certs)
        .where(device_certs.c.device_id == device_id)
        .where(device_certs.c.serial != keep)
        .where(device_certs.c.revoked_at.is_(None))
    )
    if grace:
        conn.execute(
            others.where(
                or_(device_certs.c.revoke_at.is_(None), device_certs.c.revoke_at > now + grace)
            ).values(revoke_at=now + grace)
        )
    else:
        conn.execute(others.values(revoked_at=now, revoke_at=now))


def valid_certs(conn: Connection, now: dt.datetime) -> list[Row[Any]]:
    """Certificates neither revoked, due, nor expired, oldest first."""
    return list(
        conn.execute(
            select(device_certs)
            .where(device_certs.c.revoked_at.is_(None))
            .where(or_(device_certs.c.revoke_at.is_(None), device_certs.c.revoke_at > now))
            .where(device_certs.c.not_after > now)
            .order_by(device_certs.c.issued_at)
        )
    )


def revoke_due(conn: Connection, now: dt.datetime) -> None:
    """Replaced certificates whose grace is over are revoked as of their due date."""
    conn.execute(
        update(device_certs)
        .where(device_certs.c.revoked_at.is_(None))
        .where(device_certs.c.revoke_at <= now)
        .values(revoked_at=device_certs.c.revoke_at)
    )


def revocations(conn: Connection) -> list[tuple[int, dt.datetime]]:
    """(serial, when) of every revoked certificate: what the CRL lists."""
    rows = conn.execute(
        select(device_certs.c.serial, device_certs.c.revoked_at).where(
            device_certs.c.revoked_at.is_not(None)
        )
    )
    return [(int(r.serial, 16), r.revoked_at) for r in rows]


def revocations_due(conn: Connection, now: dt.datetime) -> bool:
    return (
        conn.execute(
            select(device_certs.c.serial)
            .where(device_certs.c.revoked_at.is_(None))
            .where(device_certs.c.revoke_at <= now)
            .limit(1)
        ).first()
        is not None
    )


# -- re-key requests ------------------------------------------------------------------------


def add_rekey(conn: Connection, **values: Any) -> None:
    conn.execute(insert(rekey_requests).values(**values))


def rekey(conn: Connection, request_id: str) -> Row[Any] | None:
    return conn.execute(
        select(rekey_requests).where(rekey_requests.c.request_id == request_id)
    ).first()


def rekey_for_key(conn: Connection, device_id: str, key_sha256: str) -> Row[Any] | None:
    """The device's newest request for this key."""
    return conn.execute(
        select(rekey_requests)
        .where(rekey_requests.c.device_id == device_id)
        .where(rekey_requests.c.key_sha256 == key_sha256)
        .order_by(rekey_requests.c.requested_at.desc())
    ).first()


def pending_rekey(conn: Connection, device_id: str) -> Row[Any] | None:
    return conn.execute(
        select(rekey_requests)
        .where(rekey_requests.c.device_id == device_id)
        .where(rekey_requests.c.state == "pending")
    ).first()


def rekeys(conn: Connection, state: str | None, limit: int) -> list[Row[Any]]:
    stmt = select(rekey_requests).order_by(rekey_requests.c.requested_at.desc())
    if state is not None:
        stmt = stmt.where(rekey_requests.c.state == state)
    return list(conn.execute(stmt.limit(limit)))


def decide_rekey(conn: Connection, request_id: str, **values: Any) -> None:
    conn.execute(
        update(rekey_requests).where(rekey_requests.c.request_id == request_id).values(**values)
    )


def close_rekeys(conn: Connection, device_id: str, by: str, now: dt.datetime) -> None:
    """A device revoked or enrolled anew: what its old certificate asked for is refused."""
    conn.execute(
        update(rekey_requests)
        .where(rekey_requests.c.device_id == device_id)
        .where(rekey_requests.c.state == "pending")
        .values(state="refused", decided_by=by, decided_at=now)
    )


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

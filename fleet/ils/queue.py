"""The durable queue of pushes to the library system, at central.

``enqueue`` writes one row in the caller's transaction: a registration, a renewal or an
erasure and its push commit together, so a push is never lost and never made for a change that
was rolled back, and the desk never waits for the library system. The worker (``worker.py``)
sends items in ``id`` order per reader (a later item of a reader waits for the earlier ones),
retries with capped, jittered backoff while the library system is down, and holds an item that
needs a person (a card number taken by someone else, data the library system refuses) until
``biblioedge central ils resync`` releases it. Rows hold no personal data: the push reads the
reader's current state when it is sent.

This module owns every statement on ``ils_queue`` and ``ils_links``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, and_, delete, func, insert, select, update

from biblioedge.fleet.db import ils_links, ils_queue, reader_profiles, readers
from biblioedge.fleet.ils.connector import ILS_OPS, IlsOp, IlsPatron
from biblioedge.fleet.readers import Readers, UnknownReader, open_name
from biblioedge.fleet.store import Db, engine_of
from biblioedge.fleet.store import guardians as guardian_rows
from biblioedge.protocol import utc_now

PENDING, HELD, DONE = "pending", "held", "done"


def enqueue(
    conn: Connection, patron_id: str, op: IlsOp, data: Mapping[str, str] | None = None
) -> int:
    """Queue ``op`` for ``patron_id`` in the caller's transaction; the queue item's id.

    ``data``: what the push needs once the reader is gone (an erasure: ``cardnumber``,
    ``citizen_ref``); anything else is read from the reader when the item is sent."""
    if op not in ILS_OPS:
        raise ValueError(f"op is one of {', '.join(ILS_OPS)}")
    now = utc_now()
    row = conn.execute(
        insert(ils_queue)
        .values(
            patron_id=patron_id,
            op=op,
            data={str(k): str(v) for k, v in (data or {}).items()},
            state=PENDING,
            attempts=0,
            next_at=now,
            created_at=now,
        )
        .returning(ils_queue.c.id)
    ).scalar_one()
    return int(row)


@dataclass(frozen=True)
class Snapshot:
    """A reader as central holds it when a push is sent (opened: name and profile)."""

    site: str
    status: str
    expires_at: str
    barcode: str
    name: str
    citizen_ref: str
    profile: dict[str, str]
    #: registered as a minor: the day she reaches majority (fleet/guardians.py)
    minor_until: date | None = None


@dataclass(frozen=True)
class Item:
    id: int
    patron_id: str
    op: IlsOp
    data: dict[str, str]
    attempts: int


def backoff_s(
    attempts: int, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Delay before attempt ``attempts + 1``: doubling from ``base_s``, capped at ``max_s``,
    jittered to between half and all of it (many readers queued in an outage do not all
    retry in the same second)."""
    full = min(max_s, base_s * 2 ** max(0, attempts - 1))
    jitter: float = (rng or random).random()
    return float(full * (0.5 + 0.5 * jitter))


class Queue:
    """The queue's rows and the links to the library system's patrons."""

    def __init__(self, db: Db, base_s: float = 2.0, max_s: float = 300.0) -> None:
        self.engine = engine_of(db)
        self.base_s = base_s
        self.max_s = max_s

    def enqueue(self, patron_id: str, op: IlsOp, data: Mapping[str, str] | None = None) -> int:
        with self.engine.begin() as conn:
            return enqueue(conn, patron_id, op, data)

    def due(self, limit: int = 50, now: datetime | None = None) -> list[Item]:
        """Items to send now: each reader's first unfinished item, if pending and due."""
        now = now or utc_now()
        earlier = ils_queue.alias("earlier")
        blocked_by_earlier = (
            select(earlier.c.id)
            .where(
                and_(
                    earlier.c.patron_id == ils_queue.c.patron_id,
                    earlier.c.state != DONE,
                    earlier.c.id < ils_queue.c.id,
                )
            )
            .exists()
        )
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ils_queue)
                .where(
                    (ils_queue.c.state == PENDING)
                    & (ils_queue.c.next_at <= now)
                    & ~blocked_by_earlier
                )
                .order_by(ils_queue.c.id)
                .limit(limit)
            ).all()
        return [Item(r.id, r.patron_id, r.op, dict(r.data or {}), r.attempts) for r in rows]

    def done(self, item: Item, link: IlsPatron | None) -> None:
        self.done_many([(item, link)])

    def done_many(self, finished: list[tuple[Item, IlsPatron | None]]) -> None:
        """The library system has them: the items are done and each link is what it holds
        (None: the patron is gone there, as asked). One transaction for a round's worth: a
        crash before it only means those are sent again, and found there."""
        if not finished:
            return
        now = utc_now()
        with self.engine.begin() as conn:
            for item, link in finished:
                conn.execute(
                    update(ils_queue)
                    .where(ils_queue.c.id == item.id)
                    .values(state=DONE, done_at=now, reason=None, detail=None)
                )
                if link is None:
                    conn.execute(delete(ils_links).where(ils_links.c.patron_id == item.patron_id))
                else:
                    self.link_in(conn, item.patron_id, link, now)

    @staticmethod
    def link_in(conn: Connection, patron_id: str, link: IlsPatron, now: datetime) -> None:
        values = {
            "ils_id": link.ils_id,
            "cardnumber": link.cardnumber,
            "ils_status": link.status,
            "synced_at": now,
            "checked_at": now,
        }
        if not conn.execute(
            update(ils_links).where(ils_links.c.patron_id == patron_id).values(**values)
        ).rowcount:
            conn.execute(insert(ils_links).values(patron_id=patron_id, **values))

    def failed(self, item: Item, reason: str, detail: str, *, retry: bool) -> float | None:
        """Try again after a backoff (``retry``), or hold it for a person; the delay or None."""
        now = utc_now()
        attempts = item.attempts + 1
        delay = backoff_s(attempts, self.base_s, self.max_s) if retry else None
        with self.engine.begin() as conn:
            conn.execute(
                update(ils_queue)
                .where(ils_queue.c.id == item.id)
                .values(
                    attempts=attempts,
                    state=PENDING if retry else HELD,
                    next_at=now + timedelta(seconds=delay or 0.0),
                    reason=reason[:64],
                    detail=detail[:300],
                )
            )
        return delay

    def release(self, patron_id: str | None = None) -> int:
        """Held items (and those waiting out a backoff) go again now: after a person fixed
        the cause. All readers' when ``patron_id`` is None."""
        cond = ils_queue.c.state != DONE
        if patron_id is not None:
            cond = cond & (ils_queue.c.patron_id == patron_id)
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    update(ils_queue).where(cond).values(state=PENDING, next_at=utc_now())
                ).rowcount
            )

    def resync(self, patron_id: str | None = None) -> int:
        """Release what waits, and queue an update of every reader (or one): the library
        system gets central's current state again (after an outage of its own, a restore).
        A reader the library system deleted is pushed again only when named."""
        self.release(patron_id)
        with self.engine.begin() as conn:
            q = select(readers.c.patron_id).order_by(readers.c.patron_id)
            if patron_id is not None:
                q = q.where(readers.c.patron_id == patron_id)
                # asked for by name: one the library system deleted is created there again
                conn.execute(
                    delete(ils_links).where(
                        (ils_links.c.patron_id == patron_id) & (ils_links.c.ils_status == "deleted")
                    )
                )
            ids = [r[0] for r in conn.execute(q)]
            for pid in ids:
                enqueue(conn, pid, "update")
        return len(ids)

    # -- the readers, as the pushes and status back read and change them ------------------

    def snapshot(self, registry: Readers, patron_id: str) -> Snapshot | None:
        """The reader with name and profile opened; None when she is gone (or has no
        profile: made through the API, not at a desk)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(readers).where(readers.c.patron_id == patron_id)).first()
            prof = conn.execute(
                select(reader_profiles).where(reader_profiles.c.patron_id == patron_id)
            ).first()
            adult_on = guardian_rows.adult_on(conn, patron_id)
        if row is None or prof is None:
            return None
        aead = registry.aead
        profile = orjson.loads(aead.decrypt(prof.nonce, prof.sealed, patron_id.encode()))
        return Snapshot(
            site=row.site,
            status=row.status,
            expires_at=row.expires_at,
            barcode=row.barcode or "",
            name=open_name(aead, patron_id, row.name_nonce, row.name_sealed),
            citizen_ref=prof.citizen_ref,
            profile={str(k): str(v) for k, v in dict(profile).items()},
            minor_until=date.fromisoformat(adult_on) if adult_on else None,
        )

    def set_reader(
        self,
        registry: Readers,
        patron_id: str,
        *,
        status: str | None = None,
        barcode: str | None = None,
    ) -> str | None:
        """Change the reader's status or barcode at central (through the readers' upsert, so
        her site's gallery log moves and kiosks hear of it); her site if anything changed."""
        with self.engine.begin() as conn:
            row = conn.execute(select(readers).where(readers.c.patron_id == patron_id)).first()
            if row is None:
                return None
            new_status = status or row.status
            new_barcode = barcode if barcode is not None else row.barcode
            if (new_status, new_barcode) == (row.status, row.barcode):
                return None
            name = registry.name_of(conn, patron_id)
            registry.upsert_in(
                conn, patron_id, row.site, name, new_status, row.expires_at, new_barcode
            )
        return str(row.site)

    def site_of(self, patron_id: str) -> str:
        """The reader's site, "" when she is gone."""
        with self.engine.connect() as conn:
            try:
                return Readers.site_of(conn, patron_id)
            except UnknownReader:
                return ""

    def link(self, patron_id: str) -> IlsPatron | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(ils_links).where(ils_links.c.patron_id == patron_id)).first()
        if r is None:
            return None
        return IlsPatron(r.ils_id, r.cardnumber, None, r.ils_status)

    def links(self, limit: int, after: str = "") -> list[tuple[str, str, str]]:
        """(patron id, ILS id, last status), in patron order from ``after``: the status poll."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ils_links.c.patron_id, ils_links.c.ils_id, ils_links.c.ils_status)
                .where(ils_links.c.patron_id > after)
                .order_by(ils_links.c.patron_id)
                .limit(limit)
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def links_of(self, ils_ids: list[str]) -> dict[str, tuple[str, str]]:
        """ILS id -> (patron id, last status) for those of ``ils_ids`` central linked."""
        out: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ils_ids), 500):
                for r in conn.execute(
                    select(ils_links.c.ils_id, ils_links.c.patron_id, ils_links.c.ils_status).where(
                        ils_links.c.ils_id.in_(ils_ids[start : start + 500])
                    )
                ):
                    out[r[0]] = (r[1], r[2])
        return out

    def set_status(self, patron_id: str, status: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(ils_links)
                .where(ils_links.c.patron_id == patron_id)
                .values(ils_status=status, checked_at=utc_now())
            )

    def summary(self) -> dict[str, Any]:
        """Counts by state, and the items that wait for a reason (held first): the dashboard
        and ``central ils status``."""
        with self.engine.connect() as conn:
            counts = {
                s: int(n)
                for s, n in conn.execute(
                    select(ils_queue.c.state, func.count()).group_by(ils_queue.c.state)
                )
            }
            stuck = conn.execute(
                select(ils_queue)
                .where((ils_queue.c.state != DONE) & ils_queue.c.reason.is_not(None))
                .order_by((ils_queue.c.state == HELD).desc(), ils_queue.c.id)
                .limit(20)
            ).all()
            oldest = conn.scalar(
                select(func.min(ils_queue.c.created_at)).where(ils_queue.c.state != DONE)
            )
            linked = int(conn.scalar(select(func.count()).select_from(ils_links)) or 0)
        return {
            "pending": counts.get(PENDING, 0),
            "held": counts.get(HELD, 0),
            "done": counts.get(DONE, 0),
            "linked": linked,
            "oldest_waiting": oldest.isoformat() if oldest else None,
            "waiting": [
                {
                    "id": r.id,
                    "patron_id": r.patron_id,
                    "op": r.op,
                    "state": r.state,
                    "attempts": r.attempts,
                    "reason": r.reason,
                    "detail": r.detail,
                    "next_at": r.next_at.isoformat(),
                }
                for r in stuck
            ],
        }

    def prune(self, older_than_s: float = 7 * 86400) -> int:
        """Done items go after a while (their trace is the link and the event log)."""
        cutoff = utc_now() - timedelta(seconds=older_than_s)
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    delete(ils_queue).where(
                        (ils_queue.c.state == DONE) & (ils_queue.c.done_at < cutoff)
                    )
                ).rowcount
            )

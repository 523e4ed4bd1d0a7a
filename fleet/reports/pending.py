"""Counting stored events into the report figures beside ingest, not inside it.

Ingest stores each new event and its id in ``report_pending`` in the one transaction that
acknowledges it. A ``Tally`` takes pending events in batches and, in one transaction per
batch, counts them (``Rollups.apply``) and deletes their ids: an event is counted exactly
once whatever crashes when, because the figures and the queue change together. A report
first counts whatever is pending, so it is as exact as if ingest had counted.

Why not in the ingest transaction (as until migration 0023): counting cost ~20 µs per event
beside the ~65 µs central spends storing one, and every kiosk's acknowledgement waited for
it (issue 23's ``ingest_ratio`` 0.7 on SQLite). Counted after a pause in ingest (``quiet_s``),
or once the oldest uncounted event has waited ``max_delay_s`` while ingest stays busy, the
work leaves the acknowledgements' path, and batches of thousands cost less per event than
runs of a few hundred (one look-up of the readers' last grants per batch).

On PostgreSQL every replica runs a tally: ``FOR UPDATE SKIP LOCKED`` gives each batch to one.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError

from biblioedge.fleet.reports.rollup import Rollups
from biblioedge.fleet.store import Db, engine_of

log = logging.getLogger("biblioedge.fleet.reports")

_TAKE = (
    "DELETE FROM report_pending WHERE event_id IN (SELECT event_id FROM report_pending "
    "ORDER BY event_id LIMIT {0}{1}) RETURNING event_id"
)
_TAKE_SQLITE = _TAKE.format("?", "")
_TAKE_PG = _TAKE.format("%s", " FOR UPDATE SKIP LOCKED")
# one statement for a run's names (a statement per name was a round trip per event on
# PostgreSQL); a name already queued (an event stored again after its row was removed by
# hand) is one
_QUEUE_SQLITE = (
    "INSERT INTO report_pending (event_id) SELECT value FROM json_each(?) WHERE true "
    "ON CONFLICT DO NOTHING"
)
_QUEUE_PG = "INSERT INTO report_pending (event_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING"


def queue(conn: Any, event_ids: list[str]) -> None:
    """Name events stored in this transaction as waiting to be counted (ingest's part)."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        if conn.dialect.name == "postgresql":
            cursor.execute(_QUEUE_PG, (event_ids,))
        else:
            cursor.execute(_QUEUE_SQLITE, (orjson.dumps(event_ids).decode(),))
    finally:
        cursor.close()


_EVENTS = "SELECT event_id, site, device_id, type, occurred_at, payload FROM events WHERE "
_EVENTS_SQLITE = _EVENTS + "event_id IN (SELECT value FROM json_each(?))"
_EVENTS_PG = _EVENTS + "event_id = ANY(%s)"


def _stored(conn: Any, ids: list[str], pg: bool) -> list[dict[str, Any]]:
    """The events of ``ids`` as ``Rollups.apply`` takes them, read on the driver's cursor
    (through SQLAlchemy's result processing this cost more than counting them)."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        if pg:
            cursor.execute(_EVENTS_PG, (ids,))
        else:
            cursor.execute(_EVENTS_SQLITE, (orjson.dumps(ids).decode(),))
        found = cursor.fetchall()
    finally:
        cursor.close()
    out = []
    for event_id, site, device, etype, stored_at, stored in found:
        payload = stored
        if isinstance(stored, str | bytes):
            try:
                payload = orjson.loads(stored)
            except orjson.JSONDecodeError:
                payload = None  # not an object: counted as nothing
        at = datetime.fromisoformat(stored_at) if isinstance(stored_at, str) else stored_at
        out.append(
            {
                "event_id": event_id,
                "site": site,
                "device_id": device,
                "type": etype,
                # SQLite keeps UTC without its zone
                "occurred_at": at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC),
                "payload": payload,
            }
        )
    return out


class Tally:
    """Counts the pending events of one database, in batches of ``batch``."""

    def __init__(
        self,
        db: Db,
        rollups: Rollups,
        batch: int = 5000,
        quiet_s: float = 0.2,
        max_delay_s: float = 5.0,
    ) -> None:
        self.engine, self.rollups, self.batch = engine_of(db), rollups, batch
        self.quiet_s, self.max_delay_s = quiet_s, max_delay_s
        self._woken = threading.Event()
        self._woken.set()  # events a stopped central left pending are counted at start
        self._last_store = 0.0
        self._waiting_since: float | None = time.monotonic()

    def stored(self) -> None:
        """Ingest has just committed events to count (called after each such commit)."""
        now = time.monotonic()
        self._last_store = now
        if self._waiting_since is None:
            self._waiting_since = now
        self._woken.set()

    def step(self, limit: int | None = None) -> int:
        """Count one batch of pending events in one transaction; how many it counted. In a
        context of its own: counting is derived from stored events, never a change central's
        journal should record (a report asked inside a journaled request drains too)."""
        return contextvars.Context().run(self._step, limit)

    def _step(self, limit: int | None) -> int:
        with self.engine.begin() as conn:
            pg = conn.dialect.name == "postgresql"
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(_TAKE_PG if pg else _TAKE_SQLITE, (limit or self.batch,))
                ids = [r[0] for r in cursor.fetchall()]
            finally:
                cursor.close()
            if not ids:
                return 0
            self.rollups.apply(conn, _stored(conn, ids, pg))
        return len(ids)

    def drain(self) -> int:
        """Count everything pending now (a report's first step); how many it counted."""
        done = 0
        while True:
            n = self.step_safely()
            done += n
            if n < self.batch:
                return done

    def pending(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM report_pending").scalar() or 0)

    def any_pending(self) -> bool:
        with self.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT 1 FROM report_pending LIMIT 1").first() is not None

    def run_blocking(self, stop: threading.Event) -> None:
        """Count as ingest leaves room: after ``quiet_s`` without a store, or when the oldest
        uncounted store has waited ``max_delay_s``; every ``max_delay_s`` anyway (another
        replica's events, a failed batch)."""
        while not stop.is_set():
            self._woken.wait(self.max_delay_s)
            self._woken.clear()
            while not stop.is_set():
                now = time.monotonic()
                waited = self._waiting_since
                if now - self._last_store >= self.quiet_s or (
                    waited is not None and now - waited >= self.max_delay_s
                ):
                    break
                stop.wait(self.quiet_s)
            if stop.is_set():
                return
            self._waiting_since = None  # a store from here on waits afresh
            try:
                while not stop.is_set() and self.step_safely() == self.batch:
                    if time.monotonic() - self._last_store < self.quiet_s:
                        self._woken.set()  # ingest is back: let it run, count again soon
                        self._waiting_since = self._waiting_since or time.monotonic()
                        break
            except DBAPIError as exc:  # the database is away: the events stay pending
                log.warning("cannot count the report figures now, will retry: %s", exc)
                stop.wait(self.max_delay_s)

    def step_safely(self) -> int:
        """``step``, and when a batch fails on something other than the database, its events
        one by one: an event that cannot be counted is left out (logged), never the rest."""
        try:
            return self.step()
        except DBAPIError:
            raise
        except Exception as exc:
            log.warning("a batch of report figures failed, counting it event by event: %s", exc)
        done = 0
        for _ in range(self.batch):
            try:
                n = self.step(1)
            except DBAPIError:
                raise
            except Exception as exc:
                n = self._drop_first(exc)
            if n == 0:
                break
            done += n
        return done

    def _drop_first(self, exc: Exception) -> int:
        with self.engine.begin() as conn:
            pg = conn.dialect.name == "postgresql"
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(_TAKE_PG if pg else _TAKE_SQLITE, (1,))
                dropped = [r[0] for r in cursor.fetchall()]
            finally:
                cursor.close()
        log.error("event %s left out of the report figures: %s", dropped, exc)
        return len(dropped)

    async def run(self) -> None:
        """``run_blocking`` in a thread of its own, for central's lifetime."""
        stop = threading.Event()
        try:
            await asyncio.to_thread(self.run_blocking, stop)
        finally:
            stop.set()
            self._woken.set()

"""The agent's local store: one SQLite file (WAL) through sqlite-utils.

Why these choices: WAL lets the sync loop read the outbox while a flow appends to it, and
``synchronous=FULL`` makes every commit durable before the call returns, so an event that a
flow was told is recorded survives kill -9 and power loss. Sequence numbers come from a counter
row bumped in the same transaction as the insert: they never repeat, even after the outbox
empties, which is what lets central spot a duplicate by (device, seq).

All methods are synchronous and must be called from one thread; :class:`AsyncStore` gives the
event loop a single-threaded executor in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson
import sqlite_utils

from biblioedge.names import greeting_name
from biblioedge.protocol import Event, utc_now, uuid7

P = ParamSpec("P")
T = TypeVar("T")


class StoreError(RuntimeError):
    """The local store cannot do what was asked."""


class NotRecorded(StoreError):
    """Nothing was written: whatever depended on recording it must not happen either."""


class OutboxFull(NotRecorded):
    """The outbox reached its configured bound; the event was not recorded."""


class DiskFull(NotRecorded):
    """The disk under the store is full (or failing): nothing more can be recorded now."""


def is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL, or an I/O error (how a WAL write that hits ENOSPC surfaces)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in (10, 13)


def as_store_error(exc: BaseException) -> BaseException:
    if is_disk_full(exc):
        return DiskFull(f"the disk is full: {exc}")
    return exc


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    event_id: str
    body: bytes


def _m1_initial(db: sqlite_utils.Database) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta (key, value) VALUES ('seq', '0')")
    db.execute(
        "CREATE TABLE outbox ("
        " seq INTEGER PRIMARY KEY,"
        " event_id TEXT NOT NULL UNIQUE,"
        " type TEXT NOT NULL,"
        " created_at REAL NOT NULL,"
        " body BLOB NOT NULL)"
    )
    db.execute(
        "CREATE TABLE desired_state ("
        " id INTEGER PRIMARY KEY CHECK (id = 1),"
        " version INTEGER NOT NULL,"
        " doc TEXT NOT NULL,"
        " applied_at REAL NOT NULL)"
    )
    db["patron_cache"].create(  # type: ignore[union-attr]
        {
            "patron_id": str,
            "barcode": str,
            "display_name": str,
            "status": str,
            "expires_at": str,
            "updated_at": float,
        },
        pk="patron_id",
    )
    db["patron_cache"].create_index(["barcode"], unique=True)  # type: ignore[union-attr]


def _m2_gallery(db: sqlite_utils.Database) -> None:
    # Face templates, encrypted (see agent/gallery_store.py); never stored in clear.
    db.execute(
        "CREATE TABLE gallery_templates ("
        " patron_id TEXT NOT NULL,"
        " slot INTEGER NOT NULL,"
        " model TEXT NOT NULL,"
        " nonce BLOB NOT NULL,"
        " ciphertext BLOB NOT NULL,"
        " updated_at REAL NOT NULL,"
        " PRIMARY KEY (patron_id, slot))"
    )


def _m3_gallery_sync(db: sqlite_utils.Database) -> None:
    db.execute("CREATE TABLE revoked_cards (jti TEXT PRIMARY KEY, added_at REAL NOT NULL)")
    db.execute("INSERT INTO meta (key, value) VALUES ('gallery_version', '0')")
    db.execute("INSERT INTO meta (key, value) VALUES ('card_keys', '{}')")


def _m4_answers(db: sqlite_utils.Database) -> None:
    # Central's answers to events that ask one (a desk registration -> patron and card),
    # written in the transaction that deletes the acked event: the answer cannot be lost
    # between the two. Purged after the desk has used it.
    db.execute(
        "CREATE TABLE answers ("
        " event_id TEXT PRIMARY KEY,"
        " type TEXT NOT NULL,"
        " body BLOB NOT NULL,"
        " received_at REAL NOT NULL)"
    )


def _m5_offline_circulation(db: sqlite_utils.Database) -> None:
    # Loans and returns a self-check made while the library system was away, in the order
    # they happened, until each is forwarded and its answer checked (agent/offline.py).
    db.execute(
        "CREATE TABLE offline_tx ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " tx_id TEXT NOT NULL UNIQUE,"
        " kind TEXT NOT NULL CHECK (kind IN ('checkout', 'checkin')),"
        " patron_id TEXT NOT NULL,"
        " item_id TEXT NOT NULL,"
        " at REAL NOT NULL,"
        " due TEXT NOT NULL,"
        " state TEXT NOT NULL DEFAULT 'pending',"
        " result TEXT NOT NULL DEFAULT '')"
    )
    db.execute("CREATE INDEX ix_offline_tx_pending ON offline_tx (state, seq)")


#: Ordered, append-only list of migrations. Never edit a shipped one; add the next.
def _m6_citizen_ref(db: sqlite_utils.Database) -> None:
    # A self-check finds a reader by the keyed hash of the ID number on the CCCD's QR.
    db.execute("ALTER TABLE patron_cache ADD COLUMN citizen_ref TEXT")
    db.execute("CREATE INDEX patron_cache_citizen_ref ON patron_cache (citizen_ref)")


def _m7_greeting_only(db: sqlite_utils.Database) -> None:
    # A kiosk keeps only the given name a gate greets with (biblioedge.names), never the full
    # name: cut down what older versions kept.
    rows = db.execute("SELECT patron_id, display_name FROM patron_cache").fetchall()
    db.conn.executemany(
        "UPDATE patron_cache SET display_name = ? WHERE patron_id = ?",
        [(greeting_name(name or ""), pid) for pid, name in rows],
    )


def _m8_kept(db: sqlite_utils.Database) -> None:
    # Events central acknowledged, kept for a while (outbox.keep_acked_h): if central is lost
    # and restored from a backup, it asks kiosks to send again what came after the backup.
    db.execute(
        "CREATE TABLE kept ("
        " seq INTEGER PRIMARY KEY,"
        " event_id TEXT NOT NULL UNIQUE,"
        " type TEXT NOT NULL,"
        " acked_at REAL NOT NULL,"
        " body BLOB NOT NULL)"
    )
    db.execute("CREATE INDEX kept_acked_at ON kept (acked_at)")


MIGRATIONS: list[tuple[int, Callable[[sqlite_utils.Database], None]]] = [
    (1, _m1_initial),
    (2, _m2_gallery),
    (3, _m3_gallery_sync),
    (4, _m4_answers),
    (5, _m5_offline_circulation),
    (6, _m6_citizen_ref),
    (7, _m7_greeting_only),
    (8, _m8_kept),
]

#: Event ids per statement when acked events are moved and deleted (SQLite allows 32766
#: parameters; a few hundred keeps each statement cheap to prepare).
_IN_CHUNK = 500

#: Event types whose acks carry an answer the device keeps (see ``answers``).
ANSWERED_TYPES = ("desk.registration",)
SCHEMA_VERSION = MIGRATIONS[-1][0]


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=10000")
        # what is deleted or cut down (an erased reader, a name shortened) leaves no bytes
        self.conn.execute("PRAGMA secure_delete=ON")
        self.db = sqlite_utils.Database(self.conn)
        #: acknowledged events move to ``kept`` instead of being deleted (see _m8_kept)
        self.keep_acked = True
        self._migrate()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT. On failure it rolls back only a transaction that is
        still open: SQLite ends one itself on SQLITE_FULL, and a blind ROLLBACK would then
        raise "no transaction is active" and hide the real cause. A full disk is DiskFull."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            err = as_store_error(exc)
            if err is exc:
                raise
            raise err from exc

    # -- schema -------------------------------------------------------------------------

    def _migrate(self) -> None:
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        for version, step in MIGRATIONS:
            with self.transaction():
                done = self.conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                ).fetchone()
                if not done:
                    step(self.db)
                    self.conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time())
                    )
        newest = self.schema_version()
        if newest > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema {newest}, newer than this software ({SCHEMA_VERSION})"
            )

    def schema_version(self) -> int:
        row = self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def probe(self, size: int = 64 * 1024) -> None:
        """A real write and fsync of ``size`` bytes, undone: DiskFull unless the disk has room."""
        with self.transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', hex(randomblob(?)))",
                (size // 2,),
            )
            self.conn.execute("DELETE FROM meta WHERE key = 'probe'")

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    # -- outbox -------------------------------------------------------------------------

    def append(
        self,
        items: Sequence[tuple[str, dict[str, Any]]],
        *,
        device_id: str,
        site: str,
        max_events: int | None = None,
    ) -> list[Event]:
        """Record events durably; returns them with id and sequence assigned.

        All or nothing: either every item is committed or none is.
        """
        if not items:
            return []
        now = time.time()
        with self.transaction():
            if max_events is not None:
                depth = self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
                if depth + len(items) > max_events:
                    raise OutboxFull(f"outbox holds {depth} of at most {max_events} events")
            (last,) = self.conn.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'seq'"
                " RETURNING CAST(value AS INTEGER)",
                (len(items),),
            ).fetchone()
            first = int(last) - len(items) + 1
            events: list[Event] = []
            rows = []
            stamp = utc_now()
            for offset, (etype, payload) in enumerate(items):
                event = Event(
                    event_id=uuid7(),
                    device_id=device_id,
                    site=site,
                    type=etype,
                    seq=first + offset,
                    occurred_at=stamp,
                    payload=payload,
                )
                events.append(event)
                body = orjson.dumps(event.model_dump(mode="json"))
                rows.append((event.seq, event.event_id, etype, now, body))
            self.conn.executemany(
                "INSERT INTO outbox (seq, event_id, type, created_at, body) VALUES (?,?,?,?,?)",
                rows,
            )
        return events

    def read_batch(self, after_seq: int, limit: int, max_bytes: int) -> list[OutboxRow]:
        rows = self.conn.execute(
            "SELECT seq, event_id, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        out: list[OutboxRow] = []
        size = 0
        for seq, event_id, body in rows:
            size += len(body) + 1
            if out and size > max_bytes:
                break
            out.append(OutboxRow(seq, event_id, bytes(body)))
        return out

    def delete_acked(
        self,
        event_ids: Iterable[str],
        answers: Mapping[str, dict[str, Any]] | None = None,
    ) -> int:
        """Delete acked events; keep central's answers to those of ``ANSWERED_TYPES`` in the
        same transaction (``{"rejected": reason}`` for a refused one)."""
        ids = [(i,) for i in event_ids]
        if not ids:
            return 0
        answers = answers or {}
        now = time.time()
        with self.transaction():
            if answers:
                marks = ",".join("?" * len(answers))
                kinds = dict(
                    self.conn.execute(
                        f"SELECT event_id, type FROM outbox WHERE event_id IN ({marks})",  # noqa: S608
                        list(answers),
                    ).fetchall()
                )
                self.conn.executemany(
                    "INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?)",
                    [
                        (eid, kinds[eid], orjson.dumps(body), now)
                        for eid, body in answers.items()
                        if kinds.get(eid) in ANSWERED_TYPES
                    ],
                )
            deleted = 0
            for start in range(0, len(ids), _IN_CHUNK):  # one statement per chunk: fast
                chunk = [i for (i,) in ids[start : start + _IN_CHUNK]]
                marks = ",".join("?" * len(chunk))
                if self.keep_acked:
                    self.conn.execute(
                        "INSERT OR IGNORE INTO kept (seq, event_id, type, acked_at, body)"
                        " SELECT seq, event_id, type, ?, body FROM outbox"
                        f" WHERE event_id IN ({marks})",  # noqa: S608
                        [now, *chunk],
                    )
                deleted += self.conn.execute(
                    f"DELETE FROM outbox WHERE event_id IN ({marks})",  # noqa: S608
                    chunk,
                ).rowcount
        return deleted

    # -- kept (acknowledged) events -----------------------------------------------------

    def requeue_kept(self, after_seq: int) -> int:
        """Put acknowledged events after ``after_seq`` back into the outbox, to be sent again
        (central restored from a backup asks for them; its ingest is exactly-once)."""
        with self.transaction():
            before = self.conn.total_changes
            self.conn.execute(
                "INSERT OR IGNORE INTO outbox (seq, event_id, type, created_at, body)"
                " SELECT seq, event_id, type, ?, body FROM kept WHERE seq > ?",
                (time.time(), after_seq),
            )
            moved = self.conn.total_changes - before
            self.conn.execute("DELETE FROM kept WHERE seq > ?", (after_seq,))
        return moved

    def prune_kept(self, older_than: float) -> int:
        """Forget acknowledged events acked before ``older_than`` (epoch seconds)."""
        cur = self.conn.execute("DELETE FROM kept WHERE acked_at < ?", (older_than,))
        return cur.rowcount

    def drop_kept(self) -> int:
        """All of them: the first thing to give up when the disk fills."""
        return self.conn.execute("DELETE FROM kept").rowcount

    def kept_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM kept").fetchone()[0])

    def answer(self, event_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT body FROM answers WHERE event_id = ?", (event_id,)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    def answered(self, etype: str) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT event_id FROM answers WHERE type = ? ORDER BY received_at", (etype,)
            )
        ]

    def forget_answer(self, event_id: str) -> None:
        self.conn.execute("DELETE FROM answers WHERE event_id = ?", (event_id,))

    def pending(self, etype: str) -> list[str]:
        """Event ids of ``etype`` still waiting in the outbox."""
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT event_id FROM outbox WHERE type = ? ORDER BY seq", (etype,)
            )
        ]

    def outbox_depth(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def last_seq(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        return int(row[0])

    # -- desired state ------------------------------------------------------------------

    def save_desired(self, version: int, doc: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT INTO desired_state (id, version, doc, applied_at) VALUES (1, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET version = excluded.version, doc = excluded.doc,"
            " applied_at = excluded.applied_at",
            (version, orjson.dumps(doc).decode(), time.time()),
        )

    # -- patron cache -------------------------------------------------------------------

    def upsert_patrons(self, patrons: Iterable[Patron]) -> int:
        """Store readers, each with only the given name of ``display_name`` (the greeting)."""
        rows = [
            {
                **{f: getattr(p, f) for f in Patron.__slots__},
                "display_name": greeting_name(p.display_name),
                "updated_at": time.time(),
            }
            for p in patrons
        ]
        with self.transaction():
            self.db["patron_cache"].upsert_all(rows, pk="patron_id")  # type: ignore[union-attr]
        return len(rows)

    def remove_patrons(self, patron_ids: Iterable[str]) -> int:
        ids = [(i,) for i in patron_ids]
        with self.transaction():
            before = self.conn.total_changes
            self.conn.executemany("DELETE FROM patron_cache WHERE patron_id = ?", ids)
            return self.conn.total_changes - before

    def patron_by_barcode(self, barcode: str) -> Patron | None:
        row = self.conn.execute(
            "SELECT patron_id, barcode, display_name, status, expires_at FROM patron_cache"
            " WHERE barcode = ?",
            (barcode,),
        ).fetchone()
        return Patron(*row) if row else None

    def load_desired(self) -> tuple[int, dict[str, Any]] | None:
        row = self.conn.execute("SELECT version, doc FROM desired_state WHERE id = 1").fetchone()
        if row is None:
            return None
        return int(row[0]), orjson.loads(row[1])


@dataclass(frozen=True, slots=True)
class Patron:
    """What a kiosk may know offline about a reader: enough to decide, nothing more."""

    patron_id: str
    barcode: str
    display_name: str  # the given name a gate greets with, never the full name
    status: str  # "active" | "blocked" | "expired"
    expires_at: str  # ISO date


class AsyncStore:
    """Runs every store call on one dedicated thread so fsyncs never block the event loop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        #: called with the error whenever a call finds the disk full (the runtime's guard)
        self.on_full: Callable[[DiskFull], None] | None = None

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except (sqlite3.Error, DiskFull) as exc:
            err = as_store_error(exc)
            if isinstance(err, DiskFull):
                if self.on_full is not None:
                    self.on_full(err)
                if err is not exc:
                    raise err from exc
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()

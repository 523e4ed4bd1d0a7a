"""Central replicas' tables (PostgreSQL only): the leader's lease with its fencing epoch
(``central_lease``) and the replicas that have run (``central_replicas``); the schema check's
reads under the migration lock. The decisions are fleet/replicas.py's."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text

from biblioedge.fleet.db import make_engine
from biblioedge.fleet.store import Db, engine_of

LEASE = "central"
#: pg_advisory_lock key held while a replica checks the schema and migrates
MIGRATE_LOCK = 0x62696230  # "bib0"


class SchemaCheck:
    """Reads for the schema check, on the connection that holds the migration lock."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def revision(self) -> str | None:
        if self.conn.execute(text("SELECT to_regclass('alembic_version')")).scalar() is None:
            return None
        row = self.conn.execute(text("SELECT version_num FROM alembic_version")).first()
        return None if row is None else str(row[0])

    def live(self, within_s: float) -> list[tuple[str, str, float]]:
        """(replica, schema, seconds since seen) of the replicas seen within ``within_s``."""
        if self.conn.execute(text("SELECT to_regclass('central_replicas')")).scalar() is None:
            return []
        rows = self.conn.execute(
            text(
                "SELECT replica_id, schema_rev, EXTRACT(EPOCH FROM now() - seen_at) "
                "FROM central_replicas WHERE seen_at > now() - make_interval(secs => :s)"
            ),
            {"s": within_s},
        )
        return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]

    def register(self, replica_id: str, schema: str) -> None:
        self.conn.execute(
            text(
                "INSERT INTO central_replicas (replica_id, schema_rev, started_at, seen_at) "
                "VALUES (:r, :s, now(), now()) ON CONFLICT (replica_id) DO UPDATE "
                "SET schema_rev = :s, started_at = now(), seen_at = now()"
            ),
            {"r": replica_id, "s": schema},
        )
        self.conn.commit()


class ReplicaStore:
    def __init__(self, db: Db) -> None:
        self.engine = engine_of(db)

    @contextlib.contextmanager
    def migration_lock(self) -> Iterator[SchemaCheck]:
        """One replica at a time checks the schema, migrates and registers."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATE_LOCK})
            conn.commit()
            try:
                yield SchemaCheck(conn)
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATE_LOCK})
                conn.commit()

    def replica_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            if conn.execute(text("SELECT to_regclass('central_replicas')")).scalar() is None:
                return []
            rows = conn.execute(text("SELECT replica_id FROM central_replicas ORDER BY 1"))
            return [str(r[0]) for r in rows]

    def status(self) -> dict[str, Any]:
        """Who leads (and in which epoch) and which replicas were seen when."""
        with self.engine.connect() as conn:
            lease = conn.execute(
                text("SELECT holder, epoch, expires_at > now() FROM central_lease WHERE name = :n"),
                {"n": LEASE},
            ).first()
            seen = conn.execute(
                text(
                    "SELECT replica_id, schema_rev, EXTRACT(EPOCH FROM now() - seen_at) "
                    "FROM central_replicas ORDER BY 1"
                )
            ).all()
        return {
            "leader": lease[0] if lease is not None and lease[2] else None,
            "epoch": int(lease[1]) if lease is not None else 0,
            "replicas": [
                {"id": r[0], "schema": r[1], "seen_s_ago": round(float(r[2]), 1)} for r in seen
            ],
        }


class LeaseStore:
    """The lease's statements, on a small engine of its own: a renewal never waits behind
    ingest for a pooled connection, and a dead database fails it in seconds, not minutes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fenced: list[Engine] = []
        self.engine = create_engine(
            url,
            pool_size=2,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": 3,
                "options": "-c statement_timeout=3000 -c idle_in_transaction_session_timeout=10000",
            },
        )

    def hold(self, holder: str, lease_s: float, epoch: int | None) -> int | None:
        """Renew the lease held in ``epoch``, or take it if it has expired (the epoch goes
        up); notes the replica seen. The epoch held now, or None."""
        with self.engine.begin() as conn:
            row = conn.execute(
                text(
                    "INSERT INTO central_lease AS l (name, holder, epoch, expires_at) "
                    "VALUES (:n, :h, 1, now() + make_interval(secs => :s)) "
                    "ON CONFLICT (name) DO UPDATE SET holder = :h, "
                    "  epoch = CASE WHEN l.holder = :h AND l.epoch = :e THEN l.epoch "
                    "               ELSE l.epoch + 1 END, "
                    "  expires_at = now() + make_interval(secs => :s) "
                    "WHERE (l.holder = :h AND l.epoch = :e) OR l.expires_at < now() "
                    "RETURNING epoch"
                ),
                {"n": LEASE, "h": holder, "s": lease_s, "e": -1 if epoch is None else epoch},
            ).first()
            conn.execute(
                text("UPDATE central_replicas SET seen_at = now() WHERE replica_id = :r"),
                {"r": holder},
            )
        return None if row is None else int(row[0])

    def release(self, holder: str, epoch: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE central_lease SET expires_at = now() - interval '1 second' "
                    "WHERE name = :n AND holder = :h AND epoch = :e"
                ),
                {"n": LEASE, "h": holder, "e": epoch},
            )

    @staticmethod
    def still_held(conn: Connection, holder: str, epoch: int) -> bool:
        """In the caller's transaction: the lease is ``holder``'s, in ``epoch``, unexpired;
        ``FOR SHARE`` holds a takeover off until that transaction ends."""
        row = conn.exec_driver_sql(
            "SELECT 1 FROM central_lease WHERE name = %(n)s AND holder = %(h)s "
            "AND epoch = %(e)s AND expires_at > now() FOR SHARE",
            {"n": LEASE, "h": holder, "e": epoch},
        ).first()
        return row is not None

    def fenced_engine(self, check: Callable[[Connection], None]) -> Engine:
        """An engine whose every transaction starts with ``check`` (which raises to refuse)."""
        engine = make_engine(self.url)
        event.listen(engine, "begin", check)
        self._fenced.append(engine)
        return engine

    def close(self) -> None:
        for engine in (self.engine, *self._fenced):
            engine.dispose()


def fenced_repo(repo: Any, engine: Engine) -> Any:
    """A copy of ``repo`` (its settings and hooks) whose statements go through ``engine``."""
    made = copy.copy(repo)
    made.engine = engine
    return made

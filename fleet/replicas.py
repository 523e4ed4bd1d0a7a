"""Central replicas on PostgreSQL: every replica runs the API and a share of the bridge's
ingest; one leader, holding a lease with a fencing epoch, runs what must run once.

Why a lease in a table rather than a session advisory lock: a leader that is paused (a VM
stall, SIGSTOP, a long GC) keeps its TCP connection and so its advisory lock, and nobody
takes over; a lease expires on the database's clock whatever the holder does. The epoch is
raised at every change of holder; the leader's own database writes go through an engine that
checks, at the start of each transaction, that the lease is still its own, unexpired and of
its epoch (``FOR SHARE``: a takeover waits for that transaction to end). A leader back from a
pause therefore writes nothing: its first transaction is refused (``Fenced``), and its local
deadline (taken before each renewal was sent, so always earlier than the database's expiry)
has already stopped its jobs.

SQLite stays one process: replicas need PostgreSQL (``check_replica_config``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from pydantic import Field, model_validator
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

from biblioedge.fleet import migrations
from biblioedge.settings import ConfigError, StrictModel

log = logging.getLogger("biblioedge.fleet.replicas")

LEASE = "central"
#: pg_advisory_lock key held while a replica checks the schema and migrates (two replicas
#: starting together must not both run the migrations)
MIGRATE_LOCK = 0x62696230  # "bib0"


class ReplicaConfig(StrictModel):
    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,30}$",
        description="This replica's name (one per process; its bridge connects to the broker "
        "as central-bridge-<id>)",
    )
    lease_s: float = Field(
        default=6.0,
        ge=2.0,
        le=120.0,
        description="The leader's lease: another replica takes over this long after the "
        "leader's last renewal (takeover within lease_s + renew_s)",
    )
    renew_s: float = Field(
        default=1.0, gt=0, le=40.0, description="Replicas renew or try the lease this often"
    )
    group: str = Field(
        default="central",
        pattern=r"^[a-z0-9-]{1,32}$",
        description="MQTT shared-subscription group the replicas' bridges share events in",
    )

    @model_validator(mode="after")
    def _renew_within_lease(self) -> ReplicaConfig:
        if self.renew_s * 3 > self.lease_s:
            raise ValueError("replica.renew_s must be at most a third of replica.lease_s")
        return self

    @property
    def bridge_id(self) -> str:
        from biblioedge.provisioning.pki import BRIDGE_ID

        return f"{BRIDGE_ID}-{self.id}"


def check_replica_config(db_url: str, replica: ReplicaConfig | None) -> None:
    if replica is not None and not db_url.startswith("postgresql"):
        raise ConfigError(
            "[replica] needs PostgreSQL (database_url = postgresql+psycopg://...): on SQLite "
            "central stays one process, since SQLite has one writer and lives on one disk"
        )


class Fenced(RuntimeError):
    """A write by a replica that no longer holds the lease (it was paused, or cut off)."""


class SchemaMismatch(ConfigError):
    """This replica's code and the database (or a running replica) disagree on the schema."""


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}


def _db_revision(conn: Connection) -> str | None:
    exists = conn.execute(text("SELECT to_regclass('alembic_version')")).scalar()
    if exists is None:
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def _live_replicas(conn: Connection, within_s: float) -> list[tuple[str, str, float]]:
    if conn.execute(text("SELECT to_regclass('central_replicas')")).scalar() is None:
        return []
    rows = conn.execute(
        text(
            "SELECT replica_id, schema_rev, EXTRACT(EPOCH FROM now() - seen_at) "
            "FROM central_replicas WHERE seen_at > now() - make_interval(secs => :s)"
        ),
        {"s": within_s},
    )
    return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]


def prepare_schema(engine: Engine, replica: ReplicaConfig, migrate: Callable[[], None]) -> str:
    """Check the schema and migrate, one replica at a time; registers this replica.

    Refused, before anything is written: a database at a revision this code does not know
    (a newer central migrated it), and a migration while another replica on the old schema
    is alive (it would run on tables it does not know)."""
    head = head_revision()
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATE_LOCK})
        conn.commit()
        try:
            current = _db_revision(conn)
            if current is not None and current not in known_revisions():
                raise SchemaMismatch(
                    f"replica {replica.id}: the database's schema is at revision {current}, "
                    f"which this central (schema {head}) does not know: a newer central "
                    "migrated it. Run the same biblioedge version on every replica"
                )
            others = [
                r
                for r in _live_replicas(conn, replica.lease_s * 3)
                if r[0] != replica.id and r[1] != head
            ]
            if current != head and others:
                who = ", ".join(f"{r} (schema {s}, seen {age:.0f} s ago)" for r, s, age in others)
                raise SchemaMismatch(
                    f"replica {replica.id} would migrate the schema from {current} to {head} "
                    f"while other replicas run the old one: {who}. Stop them first, then "
                    "start the upgraded replicas"
                )
            conn.rollback()
            migrate()
            conn.execute(
                text(
                    "INSERT INTO central_replicas (replica_id, schema_rev, started_at, seen_at) "
                    "VALUES (:r, :s, now(), now()) ON CONFLICT (replica_id) DO UPDATE "
                    "SET schema_rev = :s, started_at = now(), seen_at = now()"
                ),
                {"r": replica.id, "s": head},
            )
            conn.commit()
        finally:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATE_LOCK})
            conn.commit()
    return head


def replica_bridges(engine: Engine) -> list[str]:
    """The bridge users of every replica that has run on this database (the broker's ACL)."""
    from biblioedge.provisioning.pki import BRIDGE_ID

    with engine.connect() as conn:
        if conn.execute(text("SELECT to_regclass('central_replicas')")).scalar() is None:
            return []
        rows = conn.execute(text("SELECT replica_id FROM central_replicas ORDER BY 1"))
        return [f"{BRIDGE_ID}-{r[0]}" for r in rows]


def replicas_status(engine: Engine) -> dict[str, Any]:
    """Who leads (and since which epoch) and which replicas were seen when: for /health."""
    with engine.connect() as conn:
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


def lease_engine(url: str) -> Engine:
    """A small engine of its own for the lease: a renewal never waits behind ingest for a
    pooled connection, and a dead database fails it in seconds, not minutes."""
    return create_engine(
        url,
        pool_size=2,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": 3,
            "options": "-c statement_timeout=3000 -c idle_in_transaction_session_timeout=10000",
        },
    )


class Lease:
    """The leader's lease (``central_lease``): held, renewed, lost, with its epoch."""

    def __init__(self, engine: Engine, holder: str, lease_s: float) -> None:
        self.engine = engine
        self.holder = holder
        self.lease_s = lease_s
        #: the epoch this replica leads in; None when it does not lead
        self.epoch: int | None = None
        self._valid_until = 0.0

    def held(self) -> bool:
        """Leading now, by the local clock: false from (before) the moment another replica
        could take over, even if the database has not been reached since."""
        return self.epoch is not None and time.monotonic() < self._valid_until

    def try_hold(self) -> bool:
        """Renew the lease, or take it if it has expired. Returns whether this replica leads."""
        sent = time.monotonic()
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
                {"n": LEASE, "h": self.holder, "s": self.lease_s, "e": self.epoch or -1},
            ).first()
            conn.execute(
                text("UPDATE central_replicas SET seen_at = now() WHERE replica_id = :r"),
                {"r": self.holder},
            )
        if row is None:
            self.epoch = None
            return False
        self.epoch = int(row[0])
        # the renewal was sent before the database read now(): this deadline comes first
        self._valid_until = sent + self.lease_s - 0.5
        return True

    def give_up(self) -> None:
        """On a clean stop: let another replica take over at once rather than in lease_s."""
        epoch, self.epoch = self.epoch, None
        if epoch is None:
            return
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE central_lease SET expires_at = now() - interval '1 second' "
                    "WHERE name = :n AND holder = :h AND epoch = :e"
                ),
                {"n": LEASE, "h": self.holder, "e": epoch},
            )

    def fence(self, conn: Connection) -> None:
        """Refuse this transaction unless the lease is still ours (same epoch, unexpired);
        ``FOR SHARE`` holds a takeover off until the transaction ends."""
        epoch = self.epoch
        ok = (
            epoch is not None
            and conn.exec_driver_sql(
                "SELECT 1 FROM central_lease WHERE name = %(n)s AND holder = %(h)s "
                "AND epoch = %(e)s AND expires_at > now() FOR SHARE",
                {"n": LEASE, "h": self.holder, "e": epoch},
            ).first()
        )
        if not ok:
            raise Fenced(f"replica {self.holder} no longer holds the lease (epoch {epoch})")

    def fenced_engine(self, url: str) -> Engine:
        """An engine for the leader's jobs: every transaction starts with ``fence``."""
        from biblioedge.fleet.db import make_engine

        engine = make_engine(url)

        @event.listens_for(engine, "begin")
        def _check(conn: Connection) -> None:
            self.fence(conn)

        return engine


Job = tuple[str, Callable[[], Awaitable[None]]]


class Leadership:
    """Try the lease every ``renew_s``; while it is held, run the leader's jobs; stop them
    the moment it is not (lost at renewal, or the local deadline passed unrenewed)."""

    def __init__(self, lease: Lease, renew_s: float, jobs: list[Job]) -> None:
        self.lease = lease
        self.renew_s = renew_s
        self.jobs = jobs
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: set while leading, cleared when not: what the bridge's state subscription follows
        self.leading = asyncio.Event()

    def _start(self) -> None:
        log.warning("replica %s leads (epoch %s)", self.lease.holder, self.lease.epoch)
        self.leading.set()
        for name, job in self.jobs:
            self._tasks[name] = asyncio.create_task(run_job(job), name=f"leader:{name}")

    def _stop(self, why: str) -> None:
        if self._tasks or self.leading.is_set():
            log.warning("replica %s no longer leads: %s", self.lease.holder, why)
        self.leading.clear()
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    async def run(self) -> None:
        pending: asyncio.Future[bool] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(asyncio.to_thread(self.lease.try_hold))
                left = self.lease._valid_until - time.monotonic() if self._tasks else None
                wait = self.renew_s if left is None else max(0.05, min(self.renew_s, left))
                done, _ = await asyncio.wait({pending}, timeout=wait)
                if pending in done:
                    try:
                        pending.result()
                    except (SQLAlchemyError, OSError) as exc:
                        log.warning("cannot reach the lease: %s", exc)
                    pending = None
                if self.lease.held():
                    if not self._tasks:
                        self._start()
                    for name, task in list(self._tasks.items()):
                        if task.done():  # a job that ended or failed: log it, run it again
                            if not task.cancelled() and task.exception() is not None:
                                log.error("leader job %s failed", name, exc_info=task.exception())
                            self._tasks[name] = asyncio.create_task(
                                run_job(dict(self.jobs)[name]), name=f"leader:{name}"
                            )
                elif self._tasks:
                    self._stop("the lease was lost or not renewed in time")
                if pending is None:
                    await asyncio.sleep(self.renew_s)
        finally:
            self._stop("stopping")
            if pending is not None:
                pending.cancel()
            with contextlib.suppress(SQLAlchemyError, OSError):
                await asyncio.to_thread(self.lease.give_up)


async def run_job(job: Callable[[], Awaitable[None]]) -> None:
    await job()


@contextlib.contextmanager
def suppress_fenced() -> Iterator[None]:
    try:
        yield
    except Fenced as exc:
        log.warning("%s: write refused", exc)

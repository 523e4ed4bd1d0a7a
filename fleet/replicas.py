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
import fcntl
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from pydantic import Field, model_validator
from sqlalchemy import Connection

from biblioedge.fleet import migrations
from biblioedge.fleet.store.replicas import LeaseStore, ReplicaStore, fenced_repo
from biblioedge.settings import ConfigError, StrictModel

if TYPE_CHECKING:
    from biblioedge.fleet.repo import Repo
    from biblioedge.fleet.store import Db

log = logging.getLogger("biblioedge.fleet.replicas")


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


def _scripts() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None
    return head


def prepare_schema(repo: Db, replica: ReplicaConfig, migrate: Callable[[], None]) -> str:
    """Check the schema and migrate, one replica at a time; registers this replica.

    Refused, before anything is written: a database at a revision this code does not know
    (a newer central migrated it), and a migration while another replica on the old schema
    is alive (it would run on tables it does not know)."""
    head = head_revision()
    with ReplicaStore(repo).migration_lock() as check:
        current = check.revision()
        if current is not None and current not in {s.revision for s in _scripts().walk_revisions()}:
            raise SchemaMismatch(
                f"replica {replica.id}: the database's schema is at revision {current}, "
                f"which this central (schema {head}) does not know: a newer central "
                "migrated it. Run the same biblioedge version on every replica"
            )
        others = [r for r in check.live(replica.lease_s * 3) if r[0] != replica.id and r[1] != head]
        if current != head and others:
            who = ", ".join(f"{r} (schema {s}, seen {age:.0f} s ago)" for r, s, age in others)
            raise SchemaMismatch(
                f"replica {replica.id} would migrate the schema from {current} to {head} "
                f"while other replicas run the old one: {who}. Stop them first, then "
                "start the upgraded replicas"
            )
        check.conn.rollback()
        migrate()
        check.register(replica.id, head)
    return head


def replica_bridges(repo: Db) -> list[str]:
    """The bridge users of every replica that has run on this database (the broker's ACL)."""
    from biblioedge.provisioning.pki import BRIDGE_ID

    return [f"{BRIDGE_ID}-{r}" for r in ReplicaStore(repo).replica_ids()]


def replicas_status(repo: Db) -> dict[str, Any]:
    """Who leads (and since which epoch) and which replicas were seen when."""
    return ReplicaStore(repo).status()


class Lease:
    """The leader's lease (``central_lease``): held, renewed, lost, with its epoch."""

    def __init__(self, url: str, holder: str, lease_s: float) -> None:
        self.store = LeaseStore(url)
        self.holder = holder
        self.lease_s = lease_s
        #: the epoch this replica leads in; None when it does not lead
        self.epoch: int | None = None
        self.valid_until = 0.0

    def held(self) -> bool:
        """Leading now, by the local clock: false from (before) the moment another replica
        could take over, even if the database has not been reached since."""
        return self.epoch is not None and time.monotonic() < self.valid_until

    def try_hold(self) -> bool:
        """Renew the lease, or take it if it has expired. Returns whether this replica leads."""
        sent = time.monotonic()
        self.epoch = self.store.hold(self.holder, self.lease_s, self.epoch)
        if self.epoch is None:
            return False
        # the renewal was sent before the database read now(): this deadline comes first
        self.valid_until = sent + self.lease_s - 0.5
        return True

    def give_up(self) -> None:
        """On a clean stop: let another replica take over at once rather than in lease_s."""
        epoch, self.epoch = self.epoch, None
        if epoch is not None:
            self.store.release(self.holder, epoch)

    def fence(self, conn: Connection) -> None:
        """Refuse this transaction unless the lease is still ours (same epoch, unexpired)."""
        epoch = self.epoch
        if epoch is None or not self.store.still_held(conn, self.holder, epoch):
            raise Fenced(f"replica {self.holder} no longer holds the lease (epoch {epoch})")

    def fenced(self, repo: Repo) -> Repo:
        """``repo`` for the leader's jobs: every transaction starts with ``fence``."""
        made: Repo = fenced_repo(repo, self.store.fenced_engine(self.fence))
        return made

    def close(self) -> None:
        self.store.close()


class DirLock:
    """A reentrant lock over every thread of every process on one data directory.

    Why: central replicas share the data directory, and two of them writing the broker's
    ACL and CRL, or re-signing the TUF timestamp, each from what it read before, could leave
    the older view on disk (a paused leader that resumes writes a CRL without the revocation
    made meanwhile; two timestamps of one version). Under this lock a writer reads what it
    writes from, so the last write is always made from the latest state. ``flock`` goes with
    the process: a replica killed while holding it holds nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """As ``threading.Lock.acquire``: False when ``blocking`` is off and it is held."""
        if not self._lock.acquire(blocking):
            return False
        try:
            if self._depth == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                except BlockingIOError:
                    os.close(fd)
                    self._lock.release()
                    return False
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
        except BaseException:
            self._lock.release()
            raise
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
        self._lock.release()

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


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
                left = self.lease.valid_until - time.monotonic() if self._tasks else None
                wait = self.renew_s if left is None else max(0.05, min(self.renew_s, left))
                done, _ = await asyncio.wait({pending}, timeout=wait)
                if pending in done:
                    try:
                        pending.result()
                    except Exception as exc:  # the database away: the deadline decides
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
            with contextlib.suppress(Exception):  # it expires by itself then
                await asyncio.to_thread(self.lease.give_up)


async def run_job(job: Callable[[], Awaitable[None]]) -> None:
    await job()

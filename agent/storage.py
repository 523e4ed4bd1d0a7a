"""The free-space guard: a kiosk whose disk fills keeps running, degraded, and says so.

A kiosk promises that what it did is recorded (the gate opened, a loan, a consent). On a full
disk it cannot keep that promise, so it stops doing what it would have to record: the gate
shows out of service instead of opening, the desk refuses a new registration. Everything
already committed stays in the outbox and is still delivered. The guard enters this state
before SQLite fails (free space below ``storage.reserve_mb``) or when a write found the disk
full, and leaves it by itself once space is back and a probe write succeeds. The state
report carries ``degraded: ["disk_full"]`` meanwhile, so IT sees it at central.

Emergency space: the data dir holds two ballast files. When the disk fills while the kiosk
runs, the guard deletes the larger one (``storage.ballast_mb``), so SQLite still has room to
delete what central acknowledged and to record the kiosk's own few notes. The smaller one
(1 MiB) is given back only at start, before the store opens: a closed WAL store needs new
files to reopen, and a kiosk restarted on a disk that stayed full must still start, degraded,
and deliver what it holds. The kiosk stays degraded until both fit again beside the reserve,
then recreates them and resumes: a disk that is merely near full never flaps in and out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.metrics import AgentMetrics
from biblioedge.agent.store import AsyncStore, DiskFull, Store, StoreError
from biblioedge.agent.supervisor import Context

log = logging.getLogger("biblioedge.agent.storage")

DISK_FULL = "disk_full"
BALLAST = ".emergency-space"
RESTART = ".restart-space"
RESTART_BYTES = 1024 * 1024


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def release_ballast(cfg: AgentConfig) -> bool:
    """At start, before the store opens: give both ballast files back if the disk is short of
    the reserve. True when any was released."""
    released = False
    try:
        if _free(cfg.data_dir) >= cfg.storage.reserve_mb * 1024 * 1024:
            return False
        for name in (BALLAST, RESTART):
            ballast = cfg.data_dir / name
            if ballast.exists():
                ballast.unlink()
                released = True
                log.error("disk nearly full at start: released the %s emergency space", name)
    except OSError as exc:
        log.error("cannot release the emergency space: %s", exc)
    return released


def _make_ballast(path: Path, size: int) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)  # real blocks, not a sparse promise
        except OSError as exc:
            if exc.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: write zeros instead
                raise
            chunk = b"\0" * (1024 * 1024)
            for done in range(0, size, len(chunk)):
                os.write(fd, chunk[: size - done])
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    tmp.replace(path)


class StorageGuard:
    name = "storage"

    def __init__(
        self,
        config: Callable[[], AgentConfig],
        store: AsyncStore,
        metrics: AgentMetrics,
        changed: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.changed = changed
        self.full = False
        self.cause = ""
        self.since = 0.0
        self._shed_due = False
        store.on_full = self.failed

    @property
    def can_record(self) -> bool:
        return not self.full

    def free_bytes(self) -> int:
        return _free(Path(self.config().data_dir))

    def _ballast(self) -> tuple[Path, int]:
        cfg = self.config()
        return cfg.data_dir / BALLAST, int(cfg.storage.ballast_mb * 1024 * 1024)

    def _missing(self) -> list[tuple[Path, int]]:
        """The ballast files that should exist and do not, with their sizes."""
        path, size = self._ballast()
        if not size:
            return []
        files = [(path, size), (path.with_name(RESTART), RESTART_BYTES)]
        return [(p, n) for p, n in files if not p.exists()]

    @staticmethod
    def _make(missing: list[tuple[Path, int]]) -> None:
        for path, size in missing:
            _make_ballast(path, size)

    def _release(self) -> None:
        path, size = self._ballast()
        if size and path.exists():
            path.unlink(missing_ok=True)
            log.error("released %d MiB of emergency space for the store", size // 2**20)

    def _shed(self) -> None:
        """Acknowledged events kept for a restored central are the first thing to give up
        (central has them; only its loss and restore would need them)."""
        try:
            dropped = self.store.store.drop_kept()
        except (StoreError, sqlite3.Error) as exc:
            log.error("cannot drop the kept acknowledged events: %s", exc)
            return
        if dropped:
            log.error("dropped %d acknowledged events kept for a restored central", dropped)

    def failed(self, exc: DiskFull) -> None:
        """A write found the disk full: degrade now rather than at the next check, and give
        the store the emergency space to finish what it holds."""
        self._enter(str(exc))
        try:
            self._release()
        except OSError as err:
            log.error("cannot release the emergency space: %s", err)
        self._shed_due = True  # on the store's own thread, at the next check

    def _enter(self, cause: str) -> None:
        if self.full:
            return
        self.full, self.cause, self.since = True, cause, time.monotonic()
        self.metrics.storage_full.set(1)
        log.error("storage full, recording stops until space returns: %s", cause)
        if self.changed is not None:
            self.changed(True)

    def _leave(self) -> None:
        self.full = False
        self.metrics.storage_full.set(0)
        log.warning(
            "storage has room again after %.0f s: recording resumes",
            time.monotonic() - self.since,
        )
        if self.changed is not None:
            self.changed(False)

    async def check(self) -> None:
        """One look at the disk: enter or leave the degraded state."""
        if self._shed_due:
            self._shed_due = False
            await self.store.call(self._shed)
        cfg = self.config().storage
        reserve = int(cfg.reserve_mb * 1024 * 1024)
        try:
            free = await asyncio.to_thread(self.free_bytes)
            missing = await asyncio.to_thread(self._missing)
        except OSError as exc:  # the data dir itself is gone or unreadable
            self._enter(f"cannot stat the data dir: {exc}")
            return
        self.metrics.storage_free.set(free)
        if not self.full:
            if free < reserve:
                self._enter(f"{free // 1024} KiB free, below the reserve of {reserve // 1024} KiB")
                await asyncio.to_thread(self._release)
                self._shed_due = True
            elif missing:  # first start, or a start after the ballast was released
                if free >= reserve + sum(n for _, n in missing):
                    await asyncio.to_thread(self._make, missing)
                else:
                    self._enter(f"{free // 1024} KiB free: no room for the emergency space")
            return
        if free < reserve + sum(n for _, n in missing):
            return
        try:
            await asyncio.to_thread(self._make, missing)
            await self.store.call(Store.probe, self.store.store)
        except (StoreError, sqlite3.Error, OSError) as exc:
            log.debug("storage probe still fails: %s", exc)
            return
        self._leave()

    async def run(self, ctx: Context) -> None:
        while True:
            ctx.heartbeat()
            await self.check()
            await asyncio.sleep(self.config().storage.check_s)

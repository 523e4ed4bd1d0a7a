"""What every kind of update on a kiosk shares: a wanted release, the rules that hold an
install back (a reader mid-transaction, the maintenance window, a retry delay), the state
report central reads, and one loop under the supervisor.

The software updater (``agent.updater``) and the model and configuration updaters
(``agent.artifact_update``) each add only how their kind is fetched and staged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from biblioedge.agent.release_client import ReleaseClient
from biblioedge.agent.window import in_window
from biblioedge.protocol import UpdateReport

log = logging.getLogger("biblioedge.agent.updater")

Note = Callable[[str, dict[str, Any]], Awaitable[None]]
#: failures worth retrying soon; anything else waits ten times longer (or another release)
TRANSIENT = {"unreachable", "expired_metadata", "local_error", "disk", "disk_full"}


@dataclass
class UpdateSettings:
    arch: str
    role: str
    retry_s: float = 60.0
    window: Callable[[], str | None] = lambda: None
    busy: Callable[[], bool] = lambda: False
    #: another kind of release on trial holds this one back (one trial at a time): its name
    held: Callable[[], str | None] = lambda: None
    compile_bytecode: bool = True
    now: Callable[[], datetime] = datetime.now
    #: installs that may run at once in this process (the fleet simulator shares one between
    #: its kiosks, as real kiosks each have their own CPU); None: no limit
    install_slots: asyncio.Semaphore | None = None


@dataclass
class Progress:
    done: int = 0
    total: int = 0
    last_said: float = field(default=0.0)


class UpdateLoop:
    """Subclasses implement ``step``; ``want`` wakes the loop."""

    name = "updater"
    kind = "software"

    def __init__(
        self,
        client: Callable[[], ReleaseClient],
        settings: UpdateSettings,
        note: Note,
        restart: Callable[[], None],
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._client_factory = client
        self._client: ReleaseClient | None = None
        self.settings = settings
        self.note = note
        self.restart = restart
        self.changed = changed
        self.report = UpdateReport()
        self._wake = asyncio.Event()
        self._next_try = 0.0
        self.bytes_downloaded = 0

    def client(self) -> ReleaseClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def wake(self) -> None:
        self._next_try = 0.0
        self._wake.set()

    def _phase(self, phase: str, reason: str | None = None, detail: str | None = None) -> None:
        before = (self.report.phase, self.report.reason)
        self.report = self.report.model_copy(
            update={"phase": phase, "reason": reason, "detail": detail and detail[:500]}
        )
        if (phase, reason) != before:
            wanted = self.report.wanted
            if phase == "failed":
                log.warning("%s update to %s: %s (%s)", self.kind, wanted, reason, detail)
            else:
                why = f" ({reason})" if reason else ""
                log.info("%s update to %s: %s%s", self.kind, wanted, phase, why)
            self.changed()

    def may_start(self) -> bool:
        """Whether an install may start now; says why not in the report."""
        if time.monotonic() < self._next_try:
            return False
        if self.settings.busy():
            self._phase("waiting", "busy", "a reader is mid-transaction")
            return False
        held = self.settings.held()
        if held is not None:
            self._phase("waiting", "other_trial", f"{held} release on trial first")
            return False
        window = self.settings.window()
        if not in_window(window, self.settings.now()):
            self._phase("waiting", "maintenance_window", f"installs only during {window}")
            return False
        return True

    async def failed(self, version: str, reason: str, detail: str) -> None:
        self._phase("failed", reason, detail)
        self._next_try = time.monotonic() + (
            self.settings.retry_s if reason in TRANSIENT else self.settings.retry_s * 10
        )
        payload = {"version": version, "reason": reason, "detail": detail[:500]}
        if self.kind != "software":
            payload["kind"] = self.kind
        await self.note("device.update_failed", payload)

    def progress(self, what: str, total: int) -> tuple[Progress, Callable[[int], None]]:
        """A byte counter for a download, reported in the state and the log."""
        progress = Progress(total=total)
        self.report = self.report.model_copy(update={"done_bytes": 0, "total_bytes": total})
        self.changed()

        def seen(n: int) -> None:
            progress.done += n
            self.bytes_downloaded += n
            now = time.monotonic()
            if now - progress.last_said > 1.0:
                progress.last_said = now
                self.report = self.report.model_copy(update={"done_bytes": progress.done})
                log.info("downloading %s: %d of %d bytes", what, progress.done, progress.total)

        return progress, seen

    async def step(self) -> None:
        raise NotImplementedError

    async def run(self, ctx: Any = None) -> None:
        async def beating() -> None:  # an install takes minutes; the supervisor must not
            while ctx is not None:  # take that for a stall
                ctx.heartbeat()
                await asyncio.sleep(2.0)

        beat = asyncio.create_task(beating())
        try:
            await self._loop()
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad step costs that step, never the kiosk
                log.exception("%s update step failed", self.kind)
                self._phase("failed", "internal", str(exc))
                self._next_try = time.monotonic() + self.settings.retry_s
            self._wake.clear()
            try:
                async with asyncio.timeout(min(self.settings.retry_s, 5.0)):
                    await self._wake.wait()
            except TimeoutError:
                pass

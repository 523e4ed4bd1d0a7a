"""The agent process: store, metrics, sync and the kiosk's roles under one supervisor.

The runtime is the frame the parts hang in: events (:mod:`.events`), desired state
(:mod:`.desired`), updates and the release trial (:mod:`.updates`, :mod:`.selftest`), the
kiosk's identity (:mod:`.renewal`) and its roles (:mod:`.role`, one package each). It holds a
list of roles and never asks one what it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from typing import Any

from biblioedge import __version__
from biblioedge.agent.config import AgentConfig
from biblioedge.agent.desired import Desired
from biblioedge.agent.events import Events, OutboxWatch
from biblioedge.agent.gallery_store import GalleryStore, load_or_create_key
from biblioedge.agent.gallery_sync import GallerySync
from biblioedge.agent.metrics import AgentMetrics
from biblioedge.agent.models_report import reported_models
from biblioedge.agent.renewal import Renewal, check_identity
from biblioedge.agent.role import Extras, GalleryNeeds, Role, RoleHost
from biblioedge.agent.roles import roles_for
from biblioedge.agent.selftest import kiosk_checks
from biblioedge.agent.storage import DISK_FULL, StorageGuard, release_ballast
from biblioedge.agent.store import AsyncStore, Store
from biblioedge.agent.supervisor import Component, Supervisor
from biblioedge.agent.sync import Sync, reported_state
from biblioedge.agent.updates import Updates
from biblioedge.logs import fields
from biblioedge.protocol import DesiredState, Event, GalleryDelta, ReportedState

log = logging.getLogger("biblioedge.agent")

__all__ = ["AgentRuntime", "check_identity"]


class AgentRuntime:
    """One kiosk's agent. ``extras`` are what the tools add beside the roles (the simulator
    and the demo's actors from :mod:`biblioedge.sim`); the runtime imports none of them."""

    def __init__(self, config: AgentConfig, extras: Sequence[Extras] = ()) -> None:
        self.config = config
        self.extras = list(extras)
        self.metrics = AgentMetrics()
        release_ballast(config)  # a store reopened on a full disk needs room for its WAL
        self.store = AsyncStore(Store(config.store_path))
        self.started_at = time.time()
        self.metrics_port: int | None = None
        self.gallery_sync: GallerySync | None = None
        self.gallery_version = 0
        self.events = Events(
            lambda: self.config, self.store, self.metrics, lambda: self.storage, self._wake_sync
        )
        self.host = RoleHost(
            config=lambda: self.config,
            store=self.store,
            emit=self.events.emit,
            registry=self.metrics.registry,
            can_record=lambda: self.storage.can_record,
            gallery=lambda: self.gallery_sync,
        )
        self.roles: list[Role] = roles_for(config, self.host)
        self.updates: Updates | None = None
        self.desired = Desired(
            lambda: self.config,
            self._set_config,
            self.store,
            self.metrics,
            lambda: self.updates,
            self.note,
            self._state_changed,
        )
        holds_gallery = any(role.gallery_needs is not None for role in self.roles)
        self.sync = Sync(
            lambda: self.config,
            self.store,
            self.metrics,
            self.state,
            self.desired.apply,
            self.apply_gallery if holds_gallery else None,
        )
        self.host.answer_listeners = self.sync.answer_listeners
        self.storage = StorageGuard(
            lambda: self.config, self.store, self.metrics, self._storage_changed
        )
        self.supervisor: Supervisor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.crash_count = 0
        self.exit_code = 0
        self._stop: asyncio.Event | None = None

    # -- events -------------------------------------------------------------------------

    async def emit(self, etype: str, payload: dict[str, Any], *, critical: bool = False) -> Event:
        """Record one event durably and nudge sync (:meth:`.events.Events.emit`)."""
        return await self.events.emit(etype, payload, critical=critical)

    async def note(self, etype: str, payload: dict[str, Any]) -> None:
        """The device's own bookkeeping; costs only this record when it cannot be kept."""
        await self.events.note(etype, payload)

    def _wake_sync(self) -> None:
        self.sync.wake()

    def _state_changed(self) -> None:
        self.sync.state_changed()

    def _set_config(self, config: AgentConfig) -> None:
        self.config = config

    # -- state --------------------------------------------------------------------------

    def state(self) -> ReportedState:
        health = dict(self.supervisor.health) if self.supervisor else {}
        up = self.updates
        return reported_state(
            self.config,
            started_at=self.started_at,
            desired_version=self.desired.version,
            desired_error=self.desired.error,
            outbox_depth=self.events.outbox_depth,
            components=health,
            gallery_version=self.gallery_version,
            degraded=[DISK_FULL] if self.storage.full else [],
            update=None if up is None or up.updater is None else up.updater.report,
            models=reported_models(self.config, {} if up is None else up.active_models()),
            model_update=None
            if up is None or up.model_updater is None
            else up.model_updater.report,
            config_release=None if up is None else up.config_release(),
            config_update=None
            if up is None or up.config_updater is None
            else up.config_updater.report,
        )

    def busy(self) -> bool:
        """A reader is mid-transaction: a gate passage, a loan, a registration."""
        return any(role.busy() for role in self.roles)

    async def apply_desired(self, desired: DesiredState, *, from_store: bool = False) -> None:
        """Apply a newer desired-state document (:meth:`.desired.Desired.apply`)."""
        await self.desired.apply(desired, from_store=from_store)

    async def apply_gallery(self, delta: GalleryDelta) -> None:
        """Store a site gallery delta atomically, then update the running roles."""
        synced = self.gallery_sync
        if synced is None:
            return
        applied = await self.store.call(synced.apply, delta)
        if not applied:
            if delta.base != self.gallery_version:
                self.sync.state_changed()  # tell central where we are; it resends from there
            return
        self.gallery_version = delta.version
        for role in self.roles:
            role.apply_gallery(delta, synced.accepted)
        self.sync.state_changed()

    def _storage_changed(self, full: bool) -> None:
        self.sync.state_changed()
        state = "raised" if full else "cleared"
        task = asyncio.get_running_loop().create_task(
            self.note("device.storage_full", {"state": state, "cause": self.storage.cause[:200]})
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_crash(self, component: str, reason: str) -> None:
        self.crash_count += 1
        await self.note("device.component_crashed", {"component": component, "reason": reason})
        self.sync.state_changed()

    # -- lifecycle ----------------------------------------------------------------------

    def components(self) -> list[Component]:
        comps: list[Component] = [
            self.sync,
            self.storage,
            OutboxWatch(self.events, lambda: self.config),
            Renewal(lambda: self.config, self.sync),
        ]
        if self.updates is not None:
            comps.extend(self.updates.components())
        comps.extend(self.roles)
        for extra in self.extras:
            comps.extend(extra(lambda: self.config, self.events.emit, self.roles))
        return comps

    async def _open_gallery(self, needs: GalleryNeeds) -> None:
        key = load_or_create_key(self.config.data_dir / "keys" / "template.key")
        self.gallery_sync = GallerySync(
            self.store.store,
            GalleryStore(self.store.store, key),
            keep_citizen_ref=needs.keep_citizen_ref,
            purpose=needs.purpose,
            keep_name=needs.keep_name,
        )
        self.gallery_version = await self.store.call(self.gallery_sync.version)

    def _build_updates(self) -> Updates:
        return Updates(
            lambda: self.config,
            self.note,
            self.busy,
            self.exit_for_restart,
            self.sync.state_changed,
            lambda: self.crash_count,
            kiosk_checks(
                self.store,
                lambda: self.sync.status.connected,
                lambda: self.supervisor.health if self.supervisor else {},
                lambda: self.roles,
            ),
        )

    async def run(self, stop: asyncio.Event | None = None) -> int:
        """Run until SIGTERM/SIGINT (or ``stop``); returns the process exit code."""
        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        self._stop = stop
        cfg = self.config
        check_identity(cfg)
        self.updates = updates = self._build_updates()
        await self.desired.restore()
        self.config = updates.start_config_release(self.config)
        needs = next((r.gallery_needs for r in self.roles if r.gallery_needs is not None), None)
        if needs is not None:  # one gallery per kiosk, the slice its role keeps
            await self._open_gallery(needs)
        if cfg.metrics.enabled:
            self.metrics_port = self.metrics.serve(cfg.metrics.host, cfg.metrics.port)
        log.info(
            "agent %s (%s at %s) starting",
            cfg.device_id,
            cfg.role,
            cfg.site,
            extra=fields(version=__version__, metrics_port=self.metrics_port),
        )
        await self.storage.check()  # a kiosk that starts on a full disk starts degraded
        await self.note("device.started", {"software": __version__, "role": cfg.role})
        self.supervisor = Supervisor(
            self.components(),
            self.metrics,
            restart_budget=cfg.supervisor.restart_budget,
            budget_window_s=cfg.supervisor.budget_window_s,
            stall_timeout_s=cfg.supervisor.stall_timeout_s,
            on_crash=self._on_crash,
        )
        sup_task = asyncio.create_task(self.supervisor.run(), name="supervisor")
        stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait({sup_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if sup_task in done:
            stop_task.cancel()
            exc = sup_task.exception()
            log.error("agent giving up: %s", exc)
            code = 1
        else:
            log.info("stopping")
            sup_task.cancel()
            try:
                async with asyncio.timeout(cfg.supervisor.shutdown_timeout_s):
                    with contextlib.suppress(asyncio.CancelledError):
                        await sup_task
            except TimeoutError:
                log.error(
                    "components did not stop within %.1f s", cfg.supervisor.shutdown_timeout_s
                )
        for role in self.roles:
            role.stop()
        self.store.close()
        log.info("stopped")
        return self.exit_code or code

    # -- releases -----------------------------------------------------------------------

    def exit_for_restart(self, code: int) -> None:
        """Stop the agent with ``code``: systemd starts whatever ``current`` now is."""
        self.exit_code = code
        if self._stop is not None:
            self._stop.set()

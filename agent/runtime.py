"""The agent process: store, metrics, sync and the role's components under one supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import TYPE_CHECKING, Any

from biblioedge import __version__
from biblioedge.agent.config import AgentConfig, apply_tunables
from biblioedge.agent.metrics import AgentMetrics
from biblioedge.agent.simulate import Simulator
from biblioedge.agent.storage import DISK_FULL, StorageGuard, release_ballast
from biblioedge.agent.store import AsyncStore, DiskFull, NotRecorded, OutboxFull, Store
from biblioedge.agent.supervisor import Component, Context, Supervisor
from biblioedge.agent.sync import Sync, reported_state
from biblioedge.logs import fields
from biblioedge.protocol import DesiredState, Event, GalleryDelta, ReportedState
from biblioedge.retry import Backoff
from biblioedge.settings import ConfigError

if TYPE_CHECKING:
    from biblioedge.provisioning.enroll import IdentityFiles

log = logging.getLogger("biblioedge.agent")


class OutboxWatch:
    """Keeps the outbox gauges fresh and raises one alarm event per excursion above the mark."""

    name = "outbox"

    def __init__(self, runtime: AgentRuntime) -> None:
        self.rt = runtime
        self.alarmed = False

    async def run(self, ctx: Context) -> None:
        while True:
            ctx.heartbeat()
            depth = await self.rt.store.call(Store.outbox_depth, self.rt.store.store)
            cfg = self.rt.config.outbox
            fill = depth / cfg.max_events
            self.rt.metrics.outbox_depth.set(depth)
            self.rt.metrics.outbox_fill.set(fill)
            self.rt.outbox_depth = depth
            if fill >= cfg.alarm_ratio and not self.alarmed:
                self.alarmed = True
                log.warning(
                    "outbox %.0f%% full (%d events): central unreachable for long?",
                    fill * 100,
                    depth,
                )
                await self.rt.note(
                    "device.outbox_alarm",
                    {"depth": depth, "max_events": cfg.max_events, "state": "raised"},
                )
            elif fill < cfg.alarm_ratio * 0.9 and self.alarmed:
                self.alarmed = False
                log.info("outbox back to %d events", depth)
                await self.rt.note(
                    "device.outbox_alarm",
                    {"depth": depth, "max_events": cfg.max_events, "state": "cleared"},
                )
            await asyncio.sleep(0.5)


def check_identity(cfg: AgentConfig) -> None:
    """With ``security.require``: an enrolled kiosk on a TLS broker, or a clear refusal."""
    from biblioedge.provisioning.enroll import IdentityFiles

    if not cfg.security.require:
        log.warning(
            "security.require is off: this kiosk does not prove who it is and does not check "
            "what central sends (demo without mosquitto only)"
        )
        return
    problems = []
    if not cfg.broker.tls:
        problems.append(f"broker {cfg.broker.url} is not mqtts://")
    if not IdentityFiles(cfg.identity_dir).present():
        problems.append(f"no identity in {cfg.identity_dir}")
    if not cfg.security.control_keys:
        problems.append("no security.control_keys")
    if problems:
        raise ConfigError(
            "security.require: " + "; ".join(problems) + " (enroll the kiosk first: "
            "biblioedge enroll --central URL --token T)"
        )


class Renewal:
    """Renews the kiosk's certificate (same key) when two thirds of its life have passed, or
    fetches the one IT approved for a re-key, then makes sync reconnect with the new one. A
    failed attempt is logged and retried next check.

    When the broker refuses the certificate (someone renewed it with a stolen key and central
    revoked ours after the grace), it asks central again with the certificate it has: central
    answers with the newest certificate for this same key, or ``revoked`` if IT revoked the
    kiosk; then it stops asking and says so once. Those asks are rate-limited by a backoff
    (``RECOVERY_BACKOFF``: the first at once, then minutes apart)."""

    name = "renewal"

    #: (base, cap) in seconds of the backoff between asks after a refused certificate
    RECOVERY_BACKOFF = (240.0, 1800.0)

    def __init__(self, runtime: AgentRuntime) -> None:
        self.rt = runtime
        self._recovery = Backoff(*self.RECOVERY_BACKOFF)
        self._next_recovery = 0.0
        #: the certificate central said is revoked: no more asks until it changes
        self._revoked_cert: bytes | None = None

    async def run(self, ctx: Context) -> None:
        from biblioedge.provisioning.enroll import (
            EnrollError,
            IdentityFiles,
            due_for_renewal,
            renew,
        )

        files = IdentityFiles(self.rt.config.identity_dir)
        while True:
            ctx.heartbeat()
            sec = self.rt.config.security
            present = sec.central_url and files.present()
            # a new key asked for (biblioedge rekey): fetch the certificate once IT approved
            # it; then the plain renewal of the key in use, which never waits for IT
            for rekey in (True, False):
                if not present or not (
                    files.pending_key.exists() if rekey else due_for_renewal(files, sec.renew_after)
                ):
                    continue
                try:
                    until = await asyncio.to_thread(renew, str(sec.central_url), files, 10.0, rekey)
                except (EnrollError, OSError, ValueError) as exc:
                    log.warning("certificate renewal failed (will retry): %s", exc)
                else:
                    log.info("certificate renewed, valid until %s", until)
                    self.rt.sync.reconnect()
            if present and self._recovery_due(files.cert.read_bytes()):
                await self._recover(str(sec.central_url), files)
            end = time.monotonic() + sec.renew_check_s
            while (left := end - time.monotonic()) > 0 and not self._recovery_waiting():
                ctx.heartbeat()
                await asyncio.sleep(min(left, 1.0))

    def _recovery_waiting(self) -> bool:
        return self.rt.sync.cert_refused.is_set() and time.monotonic() >= self._next_recovery

    def _recovery_due(self, cert: bytes) -> bool:
        if not self._recovery_waiting():
            return False
        self.rt.sync.cert_refused.clear()
        return cert != self._revoked_cert

    async def _recover(self, central: str, files: IdentityFiles) -> None:
        """Ask central for the certificate that replaced ours (same key) after the broker
        refused it."""
        from biblioedge.provisioning.enroll import EnrollError, renew

        self._next_recovery = time.monotonic() + self._recovery.next_delay()
        log.warning("the broker refused this kiosk's certificate: asking central for its newest")
        try:
            until = await asyncio.to_thread(renew, central, files, 10.0, False)
        except (EnrollError, OSError, ValueError) as exc:
            if str(exc).startswith("central refused: revoked:"):
                self._revoked_cert = files.cert.read_bytes()
                log.error(
                    "this kiosk's certificate is revoked by IT: staying off the fleet until it "
                    "is enrolled again (biblioedge enroll --central URL --token T)"
                )
            else:
                log.warning("asking central for a certificate failed (will retry): %s", exc)
            return
        log.info("central issued this kiosk's key a certificate valid until %s", until)
        self._recovery.reset()
        self._next_recovery = time.monotonic() + self._recovery.next_delay()
        self.rt.sync.reconnect()


class _LazyGate:
    """Builds the gate flow inside its own component: loading the face engine and gallery
    takes seconds, and the agent should be connected and syncing meanwhile."""

    name = "gate"

    def __init__(self, runtime: AgentRuntime) -> None:
        self.rt = runtime
        self.flow: Any = None

    async def run(self, ctx: Context) -> None:
        if self.flow is None:
            from biblioedge.agent.gate_build import build_gate

            self.flow, closables = await build_gate(
                self.rt.config,
                self.rt.store.store,
                self.rt.gallery_sync,
                self.rt.emit,
                self.rt.metrics.registry,
            )
            self.flow.can_record = lambda: self.rt.storage.can_record
            self.rt._closables.extend(closables)
        await self.flow.run(ctx)


class _LazyDesk:
    """The desk flow, built inside its component like the gate (the face engine loads)."""

    name = "desk"

    def __init__(self, runtime: AgentRuntime) -> None:
        self.rt = runtime
        self.flow: Any = None

    async def run(self, ctx: Context) -> None:
        if self.flow is None:
            from biblioedge.agent.desk_build import build_desk

            self.flow, closables = await build_desk(
                self.rt.config, self.rt.store, self.rt.emit, self.rt.metrics.registry
            )
            self.flow.can_record = lambda: self.rt.storage.can_record
            self.rt._closables.extend(closables)
            self.rt.sync.answer_listeners.append(self.flow.answers_arrived)
        await self.flow.run(ctx)


class _LazySelfcheck:
    """The self-check station, built inside its component: it opens the RFID reader and the
    library system's connection, which may take a while or fail and be retried."""

    name = "selfcheck"

    def __init__(self, runtime: AgentRuntime) -> None:
        self.rt = runtime
        self.flow: Any = None

    async def run(self, ctx: Context) -> None:
        if self.flow is None:
            from biblioedge.agent.selfcheck_build import build_selfcheck

            self.flow, closables = await build_selfcheck(
                lambda: self.rt.config,
                self.rt.emit,
                self.rt.gallery_sync,
                lambda: self.rt.storage.can_record,
            )
            self.rt._closables.extend(closables)
        if self.flow.face_watch is None:
            await self.flow.run(ctx)
        else:  # the camera watches beside the station, under the same supervision
            await asyncio.gather(self.flow.run(ctx), self.flow.face_watch.run(ctx))


class _LazyExitgate:
    """The exit gate, built inside its component: it opens the reader, the relay, the
    passage counter and the library system's connection."""

    name = "exitgate"

    def __init__(self, runtime: AgentRuntime) -> None:
        self.rt = runtime
        self.flow: Any = None

    async def run(self, ctx: Context) -> None:
        if self.flow is None:
            from biblioedge.agent.exitgate_build import build_exitgate, settings_of

            self.flow, closables = await build_exitgate(
                self.rt.config, self.rt.emit, self.rt.metrics.registry
            )
            self.flow.settings_source = lambda: settings_of(self.rt.config)  # desired state
            self.rt._closables.extend(closables)
        await self.flow.run(ctx)


class AgentRuntime:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.metrics = AgentMetrics()
        release_ballast(config)  # a store reopened on a full disk needs room for its WAL
        self.store = AsyncStore(Store(config.store_path))
        self.started_at = time.time()
        self.desired_version = 0
        self.desired_error: str | None = None
        self.outbox_depth = 0
        self.metrics_port: int | None = None
        self.gallery_sync: Any = None
        self.gallery_version = 0
        holds_gallery = (config.role == "gate" and config.gate.enabled) or (
            config.role == "selfcheck" and config.selfcheck.enabled
        )
        self.sync = Sync(
            lambda: self.config,
            self.store,
            self.metrics,
            self.state,
            self.apply_desired,
            self.apply_gallery if holds_gallery else None,
        )
        self.storage = StorageGuard(
            lambda: self.config, self.store, self.metrics, self._storage_changed
        )
        self.supervisor: Supervisor | None = None
        self.gate: Component | None = None
        self.desk: _LazyDesk | None = None
        self.selfcheck: _LazySelfcheck | None = None
        self.exitgate: _LazyExitgate | None = None
        self._closables: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.crash_count = 0
        self.exit_code = 0
        self._stop: asyncio.Event | None = None
        self.updater: Any = None
        self.model_updater: Any = None
        self.config_updater: Any = None
        self.model_track: Any = None
        self.config_track: Any = None
        self.trial: Any = None
        self._client: Any = None

    # -- events -------------------------------------------------------------------------

    async def emit(self, etype: str, payload: dict[str, Any], *, critical: bool = False) -> Event:
        """Record one event durably and nudge sync. Raises OutboxFull at the bound.

        ``critical`` events (the device's own alarms and state changes, a handful per day)
        bypass the bound: the alarm that says the outbox is full must not be refused by it.
        """
        (event,) = await self.emit_many([(etype, payload)], critical=critical)
        return event

    async def note(self, etype: str, payload: dict[str, Any]) -> None:
        """The device's own bookkeeping (started, alarms, desired state): past the outbox
        bound, and on a full disk it costs only this record, never the caller."""
        try:
            await self.emit_many([(etype, payload)], critical=True)
        except NotRecorded as exc:
            log.error("could not record %s: %s", etype, exc)

    async def emit_many(
        self, items: list[tuple[str, dict[str, Any]]], *, critical: bool = False
    ) -> list[Event]:
        if self.storage.full and not critical:  # refuse what cannot be kept, and say why
            self.metrics.events_refused.labels("disk_full").inc(len(items))
            raise DiskFull(f"the disk is full: {self.storage.cause}")
        try:
            events = await self.store.call(
                self.store.store.append,
                items,
                device_id=self.config.device_id,
                site=self.config.site,
                max_events=None if critical else self.config.outbox.max_events,
            )
        except OutboxFull:
            self.metrics.events_refused.labels("outbox_full").inc(len(items))
            log.error("outbox full: %d events refused", len(items))
            raise
        except DiskFull:
            self.metrics.events_refused.labels("disk_full").inc(len(items))
            raise
        for etype, _ in items:
            self.metrics.events_recorded.labels(etype).inc()
        self.sync.wake()
        return events

    # -- state --------------------------------------------------------------------------

    def state(self) -> ReportedState:
        health = dict(self.supervisor.health) if self.supervisor else {}
        return reported_state(
            self.config,
            started_at=self.started_at,
            desired_version=self.desired_version,
            desired_error=self.desired_error,
            outbox_depth=self.outbox_depth,
            components=health,
            gallery_version=self.gallery_version,
            degraded=[DISK_FULL] if self.storage.full else [],
            update=None if self.updater is None else self.updater.report,
            models=self._active_models(),
            model_update=None if self.model_updater is None else self.model_updater.report,
            config_release=None if self.config_track is None else self.config_track.effective(),
            config_update=None if self.config_updater is None else self.config_updater.report,
        )

    def busy(self) -> bool:
        """A reader is mid-transaction: a gate passage, a loan, a registration."""
        for comp in (self.gate, self.desk, self.selfcheck, self.exitgate):
            view = getattr(getattr(comp, "flow", None), "view", None)
            where = getattr(view, "step", None) or getattr(view, "mode", None)
            if where is not None and where not in ("idle", "out_of_service"):
                return True
        return False

    async def apply_desired(self, desired: DesiredState, *, from_store: bool = False) -> None:
        """Apply a newer desired-state document; keep the old config if it does not validate."""
        if desired.version < self.desired_version and not from_store:
            # An older document than the one applied: a restored broker or a central restored
            # from backup. Keep what we have and say so once per message.
            self.metrics.bad_messages.labels("stale_desired").inc()
            log.warning(
                "ignoring desired state %d older than applied %d",
                desired.version,
                self.desired_version,
            )
            return
        if desired.version == self.desired_version and not from_store:
            return  # the retained copy of what we already run
        try:
            new_config = self._with_config_release(apply_tunables(self.config, desired.config))
        except ConfigError as exc:
            self.desired_error = f"version {desired.version}: {exc}"
            log.warning("refused desired state %d: %s", desired.version, exc)
            if not from_store:
                await self.note(
                    "device.desired_rejected", {"version": desired.version, "error": str(exc)}
                )
                self.sync.state_changed()
            return
        self.config = new_config
        self.desired_version = desired.version
        self.desired_error = None
        if self.updater is not None:
            self.updater.want(desired.software, desired.software_floor)
        if self.model_updater is not None:
            self.model_updater.want(dict(desired.models))
        if self.config_updater is not None:
            self.config_updater.want(desired.config_release)
        logging.getLogger().setLevel(new_config.log.level)
        self.metrics.desired_version.set(desired.version)
        if from_store:
            return
        await self.store.call(
            self.store.store.save_desired, desired.version, desired.model_dump(mode="json")
        )
        log.info("applied desired state %d", desired.version)
        await self.note("device.desired_applied", {"version": desired.version})
        self.sync.state_changed()

    async def apply_gallery(self, delta: GalleryDelta) -> None:
        """Store a site gallery delta atomically, then update the running gate."""
        if self.gallery_sync is None:
            return
        applied = await self.store.call(self.gallery_sync.apply, delta)
        if not applied:
            if delta.base != self.gallery_version:
                self.sync.state_changed()  # tell central where we are; it resends from there
            return
        self.gallery_version = delta.version
        flow = getattr(self.gate, "flow", None) or self._selfcheck_face()
        if flow is not None:
            model = flow.face.embedder_name
            accepted = self.gallery_sync.accepted
            for reader in delta.upserts:
                templates = accepted.get(reader.patron_id)
                if templates is not None and reader.model == model:
                    flow.gallery.replace(reader.patron_id, templates)
                elif reader.patron_id in flow.gallery:
                    flow.gallery.remove(reader.patron_id)
            for pid in delta.removes:
                if pid in flow.gallery:
                    flow.gallery.remove(pid)
        if flow is not None and hasattr(flow, "verifier"):
            flow.verifier.revoked.update(delta.revoked_cards)
            if delta.card_keys:
                from biblioedge.cardtoken import load_public_key

                flow.verifier.keys.update(
                    {kid: load_public_key(k) for kid, k in delta.card_keys.items()}
                )
        self.sync.state_changed()

    def _selfcheck_face(self) -> Any:
        station = getattr(self.selfcheck, "flow", None)
        return getattr(station, "face_watch", None)

    async def _restore_desired(self) -> None:
        saved = await self.store.call(self.store.store.load_desired)
        if saved is None:
            return
        version, doc = saved
        try:
            await self.apply_desired(DesiredState.model_validate(doc), from_store=True)
        except ValueError as exc:
            log.warning("ignoring stored desired state %d: %s", version, exc)

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
            OutboxWatch(self),
            Renewal(self),
            Simulator(lambda: self.config, self.emit),
        ]
        if self.trial is not None:
            comps.append(self.trial)
        for updater in (self.updater, self.model_updater, self.config_updater):
            if updater is not None:
                comps.append(updater)
        if self.gate is not None:
            comps.append(self.gate)
        if self.selfcheck is not None:
            comps.append(self.selfcheck)
            if self.config.selfcheck.demo_reader:
                from biblioedge.agent.selfcheck_demo import DemoReader

                station = self.selfcheck
                comps.append(DemoReader(lambda: station.flow))
        if self.exitgate is not None:
            comps.append(self.exitgate)
        if self.desk is not None:
            comps.append(self.desk)
            if self.config.desk.demo_librarian:
                from biblioedge.agent.desk import DemoLibrarian

                desk = self.desk
                comps.append(DemoLibrarian(lambda: desk.flow))
        return comps

    async def _open_gallery(
        self, *, keep_citizen_ref: bool, purpose: str, keep_name: bool = False
    ) -> None:
        from biblioedge.agent.gallery_store import GalleryStore, load_or_create_key
        from biblioedge.agent.gallery_sync import GallerySync

        key = load_or_create_key(self.config.data_dir / "keys" / "template.key")
        self.gallery_sync = GallerySync(
            self.store.store,
            GalleryStore(self.store.store, key),
            keep_citizen_ref=keep_citizen_ref,
            purpose=purpose,
            keep_name=keep_name,
        )
        self.gallery_version = await self.store.call(self.gallery_sync.version)

    async def _build_roles(self) -> None:
        """Role components that need hardware or models; imported only when configured, so a
        self-checkout never loads the face engine."""
        if self.config.role == "gate" and self.config.gate.enabled:
            await self._open_gallery(keep_citizen_ref=False, purpose="face_gate", keep_name=True)
            self.gate = _LazyGate(self)
        if self.config.role == "desk" and self.config.desk.enabled:
            self.desk = _LazyDesk(self)
        if self.config.role == "selfcheck" and self.config.selfcheck.enabled:
            await self._open_gallery(
                keep_citizen_ref=True, purpose="face_selfcheck", keep_name=False
            )
            self.selfcheck = _LazySelfcheck(self)
        if self.config.role == "exitgate" and self.config.exitgate.enabled:
            self.exitgate = _LazyExitgate(self)  # no gallery: no reader is identified here

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
        self._build_updates()
        await self._restore_desired()
        self._start_config_release()
        await self._build_roles()
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
        for closable in self._closables:
            with contextlib.suppress(Exception):
                closable.close()
        self.store.close()
        log.info("stopped")
        return self.exit_code or code

    # -- releases -----------------------------------------------------------------------

    def exit_for_restart(self, code: int) -> None:
        """Stop the agent with ``code``: systemd starts whatever ``current`` now is."""
        self.exit_code = code
        if self._stop is not None:
            self._stop.set()

    def _build_updates(self) -> None:
        from biblioedge.agent.selftest import RESTART_EXIT, ReleaseTrial, TrialSettings

        cfg = self.config
        layout = None
        tracks: list[Any] = []
        if cfg.update.enabled:
            from biblioedge.agent.artifact_update import (
                ConfigTrack,
                ConfigUpdater,
                ModelTrack,
                ModelUpdater,
                TrackState,
            )
            from biblioedge.agent.update_loop import UpdateSettings
            from biblioedge.agent.updater import Updater
            from biblioedge.models.store import ModelStore
            from biblioedge.provisioning.bootguard import Layout
            from biblioedge.provisioning.release_build import native_arch

            layout = Layout(cfg.update.prefix)
            updates = cfg.data_dir / "updates"
            self.model_track = ModelTrack(
                TrackState(updates / "model.json"), ModelStore(cfg.data_dir / "models")
            )
            self.config_track = ConfigTrack(TrackState(updates / "config.json"), updates / "config")
            tracks = [self.model_track, self.config_track]
            for track in tracks:  # before the face engine loads what is on trial
                reason = track.before_start()
                if reason:
                    log.error("%s release on trial rolled back: %s", track.kind, reason)

            def settings(kind: str) -> UpdateSettings:
                return UpdateSettings(
                    arch=native_arch(),
                    role=cfg.role,
                    retry_s=cfg.update.retry_s,
                    window=lambda: self.config.update.maintenance_window,
                    busy=self.busy,
                    held=lambda: self._other_trial(kind),
                    compile_bytecode=cfg.update.compile_bytecode,
                )

            def restart() -> None:
                self.exit_for_restart(RESTART_EXIT)

            self.updater = Updater(
                layout,
                self._shared_client,
                settings("software"),
                self.note,
                restart,
                self.sync.state_changed,
            )
            self.model_updater = ModelUpdater(
                self.model_track,
                self._shared_client,
                settings("model"),
                self.note,
                restart,
                self.sync.state_changed,
                check=_check_model,
            )
            self.config_updater = ConfigUpdater(
                self.config_track,
                self._shared_client,
                settings("config"),
                self.note,
                restart,
                self._check_config_release,
                self.sync.state_changed,
            )
        self.trial = ReleaseTrial(
            layout,
            TrialSettings(
                __version__,
                soak_s=cfg.update.soak_s,
                ready_timeout_s=cfg.update.ready_timeout_s,
            ),
            self._self_test_checks(),
            self.note,
            self.exit_for_restart,
            lambda: self.crash_count,
            tracks,
        )

    def _active_models(self) -> dict[str, str]:
        if self.model_track is not None:
            return dict(self.model_track.active())
        if not (self.config.data_dir / "models" / "state.json").exists():
            return {}
        from biblioedge.models.store import ModelStore, ModelStoreError

        try:
            return ModelStore(self.config.data_dir / "models").active_refs()
        except ModelStoreError:
            return {}

    def _check_config_release(self, doc: Any) -> None:
        apply_tunables(self.config, doc.config)  # raises ConfigError: every key, every value

    def _other_trial(self, kind: str) -> str | None:
        if self.trial is None:
            return None
        return next((t.kind for t in self.trial.on_trial() if t.kind != kind), None)

    def _shared_client(self) -> Any:
        if self._client is None:
            self._client = self._release_client()
        return self._client

    def _with_config_release(self, config: AgentConfig) -> AgentConfig:
        """The configuration document in force applies over the desired-state overrides."""
        if self.config_track is None:
            return config
        doc = self.config_track.document(self.config_track.effective())
        return config if doc is None else apply_tunables(config, doc.config)

    def _start_config_release(self) -> None:
        """Apply the document in force at start; one on trial that does not apply goes back."""
        if self.config_track is None:
            return
        try:
            self.config = self._with_config_release(self.config)
        except ConfigError as exc:
            if self.config_track.on_trial():
                self.config_track.roll_back(f"does not apply: {exc}")
                log.error("configuration on trial rolled back: %s", exc)
            else:
                log.error("the committed configuration document does not apply: %s", exc)
            return
        ref = self.config_track.effective()
        if ref:
            log.info("configuration document %s applied", ref)

    def _self_test_checks(self) -> dict[str, Any]:
        async def store() -> str | None:
            await self.store.call(Store.outbox_depth, self.store.store)
            return None

        async def broker() -> str | None:
            return None if self.sync.status.connected else "not connected"

        async def role() -> str | None:
            comp = self.gate or self.desk or self.selfcheck or self.exitgate
            if comp is None:
                return None  # a role with no hardware configured (simulated kiosks)
            health = self.supervisor.health.get(comp.name) if self.supervisor else None
            if health != "up":
                return f"{comp.name} is {health or 'not started'}"
            if getattr(comp, "flow", None) is None:
                return f"{comp.name} drivers are not up yet"
            return None

        async def face() -> str | None:
            flow = getattr(self.gate, "flow", None) or self._selfcheck_face()
            if (self.gate is not None or self._selfcheck_face() is not None) and flow is None:
                return "face engine not loaded"
            return None

        return {"store": store, "broker": broker, "role": role, "face engine": face}

    def _release_client(self) -> Any:
        import ssl

        from biblioedge.agent.release_client import ReleaseClient, ReleaseUnavailable
        from biblioedge.provisioning.enroll import (
            EnrollError,
            IdentityFiles,
            fetch_release_root,
        )

        cfg = self.config
        central = cfg.security.central_url
        if not central:
            raise ReleaseUnavailable("no_central", "security.central_url is not set")
        files = IdentityFiles(cfg.identity_dir)
        context = ssl.create_default_context(cafile=files.ca) if files.ca.exists() else None
        tuf_dir = cfg.data_dir / "tuf"
        bootstrap = None
        if not (tuf_dir / "root.json").exists() and context is not None:
            try:
                bootstrap = fetch_release_root(central, context)
            except EnrollError as exc:
                raise ReleaseUnavailable("unreachable", str(exc)) from exc
        return ReleaseClient(tuf_dir, central, context, bootstrap=bootstrap)


def _check_model(manifest: Any, path: Any) -> None:
    """Loads the model once before it is activated (the engine is imported only then)."""
    from biblioedge.models.engine import check_model

    check_model(manifest, path)

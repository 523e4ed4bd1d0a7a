"""``biblioedge central``: the API and the MQTT bridge in one process, one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Generator
from pathlib import Path

import uvicorn

from biblioedge.fleet.alerts.worker import AlertWorker
from biblioedge.fleet.api import create_app
from biblioedge.fleet.backup import BackupError, last_status, run_backup
from biblioedge.fleet.backup.journal import JournalRequests, attach, open_keys, ship_loop
from biblioedge.fleet.backup.replay import Replays
from biblioedge.fleet.backup.restore import data_dir_lock
from biblioedge.fleet.bridge import Bridge
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.enrollments import Registry
from biblioedge.fleet.floor import ReleaseFloor
from biblioedge.fleet.http_guard import guarded_h11
from biblioedge.fleet.identity import CentralIdentity
from biblioedge.fleet.ils.worker import IlsWorker, open_connector
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.prereg import open_prereg, purge_loop
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.registrations import REGISTRATION, Registrar
from biblioedge.fleet.releases import ReleaseRepo
from biblioedge.fleet.replicas import (
    Job,
    Leadership,
    Lease,
    prepare_schema,
    replica_bridges,
    run_job,
)
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.reportdocs.monthly import MonthlyReports
from biblioedge.fleet.reportdocs.source import ReportFigures
from biblioedge.fleet.reports import Reports
from biblioedge.fleet.reports.pending import Tally
from biblioedge.fleet.reports.rollup import Rollups
from biblioedge.fleet.rollouts import Rollouts
from biblioedge.keys import load_or_create_key
from biblioedge.protocol import GALLERY_ROLES
from biblioedge.provisioning import pki
from biblioedge.settings import ConfigError

log = logging.getLogger("biblioedge.fleet.central")


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: central stops API and bridge together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def open_identity(cfg: CentralConfig, repo: Repo) -> tuple[CentralIdentity, Registry]:
    """Central's keys and device registry; writes the broker's files (``central init``)."""
    sec = cfg.security
    bridge_id = pki.BRIDGE_ID if cfg.replica is None else cfg.replica.bridge_id
    identity = CentralIdentity(
        cfg.data_dir / "keys", cfg.broker_dir, list(sec.hostnames), sec.cert_days, bridge_id
    )
    if cfg.replica is not None:  # every replica's bridge may read the kiosks' events
        identity.bridge_users = lambda: [pki.BRIDGE_ID, *replica_bridges(repo)]
    registry = Registry(
        repo,
        identity,
        cert_days=sec.cert_days,
        broker_url=sec.kiosk_broker_url or cfg.broker.url,
        central_url=cfg.public_url,
        pid_file=sec.broker_pid_file,
        renew_grace_s=sec.renew_grace_s,
        renew_min_interval_s=sec.renew_min_interval_s,
        cases=repo.cases,
    )
    registry.sync_broker()
    return identity, registry


def open_releases(cfg: CentralConfig) -> ReleaseRepo:
    r = cfg.releases
    return ReleaseRepo(
        cfg.releases_dir,
        cfg.data_dir / "keys",
        timestamp_days=r.timestamp_days,
        snapshot_days=r.snapshot_days,
        max_artifact_bytes=r.max_artifact_mb * 2**20,
    )


async def resign_loop(
    releases: ReleaseRepo, every_s: float, leads: Callable[[], bool] = lambda: True
) -> None:
    """Keep the timestamp and snapshot fresh: kiosks refuse expired metadata."""
    while True:
        try:
            if leads() and await asyncio.to_thread(releases.refresh):
                log.info("re-signed the release timestamp")
        except OSError as exc:
            log.error("cannot re-sign release metadata: %s", exc)
        await asyncio.sleep(every_s)


async def rollout_loop(
    rollouts: Rollouts, every_s: float, leads: Callable[[], bool] = lambda: True
) -> None:
    """Drive every active rollout: start kiosks, read their reports, advance or halt.
    ``leads``: a replica back from a pause stops here before its jobs are cancelled."""
    while True:
        try:
            if leads():
                await rollouts.tick()
        except Exception:  # a bad tick costs that tick; the next one reads the state again
            log.exception("rollout tick failed")
        await asyncio.sleep(every_s)


def check_secure(cfg: CentralConfig) -> None:
    if cfg.security.require and not cfg.broker.tls:
        raise ConfigError(
            f"security.require: the broker {cfg.broker.url} is not mqtts:// with client "
            "certificates; central will not run its fleet in the open (set security.require "
            "= false only for a demo on a machine without mosquitto)"
        )


async def backup_loop(cfg: CentralConfig, config_file: Path | None) -> None:
    """Central's own schedule (``backup.every_h``): a backup when the last one is that old.
    A failure is logged and retried in an hour; /health shows the backup going stale."""
    every_s = cfg.backup.every_h * 3600
    while True:
        last = last_status(cfg)
        due_in = 0.0 if last is None else every_s - last["age_h"] * 3600
        if due_in > 0:
            await asyncio.sleep(min(due_in, 3600))
            continue
        try:
            status = await asyncio.to_thread(run_backup, cfg, config_file)
            log.info("backup %s made (%d bytes)", status["path"], status["bytes"])
        except (BackupError, OSError) as exc:
            log.error("scheduled backup failed: %s", exc)
            await asyncio.sleep(3600)
        except Exception:  # a failed backup costs that backup, never the schedule
            log.exception("scheduled backup failed")
            await asyncio.sleep(3600)


async def run_central(
    cfg: CentralConfig, stop: asyncio.Event | None = None, config_file: Path | None = None
) -> int:
    check_secure(cfg)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    # a restore refuses to write under a running central; replicas share the directory
    with data_dir_lock(cfg.data_dir, shared=cfg.replica is not None):
        return await _run_central(cfg, stop, config_file)


async def _run_central(cfg: CentralConfig, stop: asyncio.Event, config_file: Path | None) -> int:
    repo = Repo(cfg.db_url)
    repo.rollups = Rollups(cfg.reports)
    key = load_or_create_key(cfg.data_dir / "keys" / "templates.key")
    if cfg.replica is None:
        await asyncio.to_thread(repo.migrate, key)  # with the key: a migration may seal data
    else:  # one replica at a time, and none under a replica running another schema
        await asyncio.to_thread(prepare_schema, repo, cfg.replica, lambda: repo.migrate(key))
    metrics = CentralMetrics()
    readers = Readers(repo, key)
    cards = Cards(readers, load_or_create_key(cfg.data_dir / "keys" / "cards.key"))
    identity, registry = await asyncio.to_thread(open_identity, cfg, repo)
    repo.require_role = cfg.security.require  # roles come from certificates: no role, no say
    repo.effects[REGISTRATION] = Registrar(
        readers,
        cards,
        cfg.patron_prefix,
        identity.seal_key,
        require_sealed=cfg.security.require,
        child_under=cfg.reports.child_under,
        card_numbers=cfg.ils.card_numbers if cfg.ils is not None else "desk",
        timezone=cfg.reports.timezone,
    )
    registrar = repo.effects[REGISTRATION]
    if cfg.prereg.enabled and isinstance(registrar, Registrar):  # codes from /register
        registrar.prereg, registrar.phone = open_prereg(cfg, readers)
    bridge = Bridge(cfg, repo, metrics, readers, identity)
    bridge.replays = Replays(cfg.data_dir)
    bridge.gates = lambda: [
        (name.device_id, name.site, pem)
        for name, pem in registry.active()
        if name.role in GALLERY_ROLES
    ]
    releases = open_releases(cfg)
    floor = ReleaseFloor(cfg.releases_dir / "floor.json")
    rollouts = Rollouts(repo, releases, bridge.publish_desired, floor=floor)
    lease, ticker, leads, jobs_repo = None, rollouts, lambda: True, repo
    if cfg.replica is not None:  # the leader's jobs write through a fenced engine
        lease = Lease(cfg.db_url, cfg.replica.id, cfg.replica.lease_s)
        leads = lease.held
        jobs_repo = lease.fenced(repo)
        ticker = Rollouts(jobs_repo, releases, bridge.publish_desired, floor=floor)
    worker = None
    if cfg.ils is not None:  # pushes readers to the library system; status back
        worker = IlsWorker(cfg.ils, repo, readers, open_connector(cfg.ils))
        worker.on_gallery = bridge.library_changed  # her status, at every branch
    reports = Reports(repo, cfg.reports)
    figures = ReportFigures(reports)
    rf = cfg.report_files
    fresh = ReportFigures(reports, ttl_s=0)  # the kept report: never a minute-old answer
    monthly = MonthlyReports(
        rf.dir or cfg.data_dir / "reports" / "monthly", fresh, rf.lang, rf.after_day, rf.library
    )
    app = create_app(
        cfg,
        repo,
        bridge,
        metrics,
        readers,
        cards,
        registry,
        releases,
        rollouts,
        ils=worker,
        figures=figures,
        monthly=monthly,
    )

    async def enrolled(device_id: str, site: str, role: str) -> None:
        if role in GALLERY_ROLES:
            await bridge.site_keys_changed(site, device=device_id)

    async def revoked(device_id: str) -> None:
        device = await asyncio.to_thread(repo.get_device, device_id)
        if device is not None and device["role"] in GALLERY_ROLES:
            await bridge.site_keys_changed(str(device["site"]), revoked=device_id)

    journal_keys = await asyncio.to_thread(open_keys, cfg)
    if journal_keys is not None:  # what the API changes after the last backup survives too
        attach(repo, journal_keys)
        app.add_middleware(JournalRequests)
    app.state.on_enrolled = enrolled
    app.state.on_revoked = revoked
    tls: dict[str, str] = {}
    if cfg.http.tls:
        crt, tls_key = identity.https_files
        tls = {"ssl_certfile": str(crt), "ssl_keyfile": str(tls_key)}
    server = _Server(
        uvicorn.Config(
            app,
            host=cfg.http.host,
            port=cfg.http.port,
            log_level="warning",
            access_log=False,
            http=guarded_h11(cfg.http.header_timeout_s, cfg.http.body_timeout_s),
            **tls,  # type: ignore[arg-type]
        )
    )
    if not cfg.security.require:
        log.warning("security.require is off: the broker is not authenticated (demo only)")
    # what must run once: in one central, here; among replicas, on the leader only
    once: list[Job] = [
        ("crl", registry.refresh_loop),
        ("tuf", lambda: resign_loop(releases, cfg.releases.refresh_s, leads)),
        ("rollouts", lambda: rollout_loop(ticker, 1.0, leads)),
    ]
    if cfg.prereg.enabled and isinstance(registrar, Registrar) and registrar.prereg is not None:
        prereg = registrar.prereg
        once.append(("prereg", lambda: purge_loop(prereg)))
    if cfg.alerts is not None:
        alerts = AlertWorker(cfg, jobs_repo, lambda: rollouts.list_all(20))
        once.append(("alerts", alerts.run))
    if cfg.backup.every_h > 0 and cfg.backup.public_key is not None:
        once.append(("backup", lambda: backup_loop(cfg, config_file)))
    if journal_keys is not None:  # safe on two replicas: a record's bytes never change
        once.append(("journal", lambda: ship_loop(cfg, repo)))
    if rf.monthly:
        once.append(("monthly-report", lambda: monthly.run(rf.check_s)))
    if worker is not None and cfg.ils is not None:
        pusher = worker  # the API's worker; among replicas the leader's own, fenced
        if jobs_repo is not repo:
            pusher = IlsWorker(cfg.ils, jobs_repo, Readers(jobs_repo, key), worker.connector)
            pusher.on_gallery = bridge.library_changed
        once.append(("ils", pusher.run))
        log.info("library system: %s", cfg.ils.endpoint().base_url)
    bridge_task = asyncio.create_task(bridge.run(), name="central:bridge")
    if lease is None or cfg.replica is None:
        background: list[asyncio.Task[None]] = [
            asyncio.create_task(run_job(job), name=f"central:{n}") for n, job in once
        ]
    else:
        leadership = Leadership(lease, cfg.replica.renew_s, once)
        bridge.leading = leadership.leading
        background = [asyncio.create_task(leadership.run(), name="central:leadership")]
        log.info("replica %s of central (lease %.0f s)", cfg.replica.id, cfg.replica.lease_s)
    # every replica counts the events ingest queued for the report figures
    tally = repo.tally = Tally(repo, repo.rollups)
    background.append(asyncio.create_task(tally.run(), name="central:tally"))
    api_task = asyncio.create_task(server.serve(), name="central:api")
    stop_task = asyncio.create_task(stop.wait(), name="central:stop")
    while not server.started and not api_task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.02)
    if server.started:
        port = server.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if cfg.http.tls else "http"
        log.info("central API on %s://%s:%d/api/v1 (docs at /docs)", scheme, cfg.http.host, port)
    done, _ = await asyncio.wait(
        {bridge_task, api_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
    )
    code = 0
    for task in done:
        if task is not stop_task and task.exception() is not None:
            log.error("central %s failed: %s", task.get_name(), task.exception())
            code = 1
    server.should_exit = True
    bridge_task.cancel()
    for task in background:
        task.cancel()
    stop_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        async with asyncio.timeout(5):
            await asyncio.gather(api_task, bridge_task, *background, return_exceptions=True)
    bridge.close()
    if lease is not None:
        lease.close()
    repo.close()
    log.info("central stopped")
    return code

"""``biblioedge bench continuity --phase reconnect``: a province's fleet comes back at once.

Real mosquitto with mutual TLS and central's ACL, a real central, and ``--kiosks`` simulated
kiosks (1,000 by default) in this one process. Each kiosk is enrolled through the product's
own path (its own key, CSR and certificate from central's CA, its own ACL entry), and runs
the agent's real ``Sync`` over its own TLS connection with its own SQLite outbox: only the
kiosk's other components (camera, relay, screen) are absent. Half are gates, half
self-checks, spread over ``--sites`` branches and commune libraries.

1. every kiosk connects and central sees it online;
2. the outage: the broker stops; every kiosk keeps working and queues ``--events`` events
   (100 by default) in its outbox while its ``Sync`` retries the broker with its backoff;
3. the broker comes back and the clock runs: every kiosk reconnects (TLS handshake, session,
   subscriptions, its state report) and sends its backlog at the same moment.

``drain_s`` is the time from the broker's return until every kiosk's outbox is empty (every
event stored by central and acknowledged back to its kiosk); ``stored_s`` until central held
every event; ``reconnected_s`` until every kiosk was connected again. ``lost`` and
``duplicated`` are counted in central's database by (device, seq), independently of the
UNIQUE event id.

Central is ``--replicas`` replicas (2 by default) on a private PostgreSQL cluster (or
``--postgres-url``), sharing the kiosks' events through the broker's shared subscription as
a library runs them; ``--replicas 0`` is the single central on SQLite.

The same-run baseline is the same number of events from ``--baseline-kiosks`` kiosks (10),
through the same outage and return, into the same central: ``drain_ratio`` = the fleet's
drain / the baseline's, i.e. what a thousand connections cost beside ten carrying the same
events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, create_engine, text
from sqlalchemy.exc import DBAPIError

from biblioedge.bench.continuity_replicas import ReplicaProcess, replica_extra
from biblioedge.demo.launch import CentralProcess, Child
from biblioedge.procs import postgres_cluster
from biblioedge.provisioning.broker import BrokerProcess
from biblioedge.sim.syncfleet import SyncKiosk

ROLES = ("gate", "selfcheck")


def _say(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] bench continuity reconnect: {message}\n")
    sys.stderr.flush()


def _central_counts(db: Engine, kiosks: list[SyncKiosk]) -> tuple[int, int]:
    """(distinct (device, seq) of the outage's events at central, rows holding them)."""
    count = text(
        "SELECT COUNT(DISTINCT e.device_id || ':' || e.seq), COUNT(*) FROM events e "
        "JOIN want w ON w.device_id = e.device_id AND e.seq BETWEEN w.lo AND w.hi"
    )
    try:
        with db.connect() as conn:  # a pooled connection may hold the last poll's table
            conn.execute(
                text("CREATE TEMP TABLE IF NOT EXISTS want (device_id TEXT, lo BIGINT, hi BIGINT)")
            )
            conn.execute(text("DELETE FROM want"))
            conn.execute(
                text("INSERT INTO want VALUES (:d, :lo, :hi)"),
                [{"d": k.device_id, "lo": k.first, "hi": k.last} for k in kiosks],
            )
            distinct, rows = conn.execute(count).one()
            conn.commit()
        return int(distinct), int(rows)
    except DBAPIError:
        return 0, 0


def _online(db: Engine, ids: list[str]) -> int:
    query = text("SELECT COUNT(*) FROM devices WHERE online AND device_id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    try:
        with db.connect() as conn:
            return int(conn.execute(query, {"ids": ids}).scalar() or 0)
    except DBAPIError:
        return 0


async def _until(check: Callable[[], Any], within: float, what: str, every: float = 0.25) -> float:
    """Waits for ``check`` (a coroutine function or a plain one run in a thread); the time."""
    started = time.monotonic()
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise TimeoutError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(every)


async def _outage(
    kiosks: list[SyncKiosk],
    broker: BrokerProcess,
    db: Engine,
    events: int,
    seed: int,
    within: float,
) -> dict[str, Any]:
    """Broker down, ``events`` queued per kiosk, broker back: the measured return."""
    broker.stop()
    await _until(lambda: not any(k.connected for k in kiosks), 60, "every kiosk offline")
    # every kiosk writes its own outbox at once, as a fleet does while the broker is away
    await asyncio.gather(*(k.queue(events, seed + i) for i, k in enumerate(kiosks)))
    expected = len(kiosks) * events
    stored_at: float | None = None
    reconnected_at: float | None = None
    await asyncio.to_thread(broker.start)
    t0 = time.monotonic()

    async def drained() -> bool:
        nonlocal stored_at, reconnected_at
        now = time.monotonic() - t0
        if reconnected_at is None and all(k.connected for k in kiosks):
            reconnected_at = now
        if stored_at is None:
            distinct, _ = await asyncio.to_thread(_central_counts, db, kiosks)
            if distinct >= expected:
                stored_at = now
        if stored_at is None:
            return False
        depths = await asyncio.gather(*(k.depth() for k in kiosks))
        return sum(depths) == 0

    drain_s = await _until(drained, within, f"{expected} events drained", every=0.5)
    distinct, rows = await asyncio.to_thread(_central_counts, db, kiosks)
    return {
        "events": expected,
        "drain_s": round(drain_s, 2),
        "stored_s": round(stored_at or drain_s, 2),
        "reconnected_s": round(reconnected_at if reconnected_at is not None else drain_s, 2),
        "events_per_s": round(expected / drain_s) if drain_s else None,
        "lost": expected - distinct,
        "duplicated": rows - distinct,
    }


def _enroll_all(
    central: CentralProcess, broker: str, kiosks: list[SyncKiosk], workers: int = 4
) -> None:
    url = central.url
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda k: k.enroll(url, central.enrollment_token, None, broker), kiosks))


def _raise_fd_limit() -> None:
    """A thousand TLS sockets and outboxes here, a thousand clients in mosquitto (a child,
    so it inherits the limit): the usual soft limit of 1,024 is too low for either."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _run(
    root: Path,
    kiosks_n: int,
    events: int,
    baseline_n: int,
    sites: int,
    within: float,
    replicas: int,
    db_url: str | None,
) -> dict[str, Any]:
    broker = BrokerProcess(root / "broker")
    # a replica's own bridge and API; the kiosks enroll through the first one's
    central = CentralProcess(
        root / "central", broker, extra=replica_extra(db_url, "a") if db_url else {}
    )
    others: list[Child] = [
        ReplicaProcess(central, chr(ord("a") + i)) for i in range(1, max(replicas, 1))
    ]
    names = [f"xa-{i:02d}" for i in range(sites)]
    fleet = [
        SyncKiosk(root / "kiosks" / f"rc-{i:04d}", f"rc-{i:04d}", names[i % sites], ROLES[i % 2])
        for i in range(kiosks_n)
    ]
    base = [
        SyncKiosk(root / "kiosks" / f"rb-{i:02d}", f"rb-{i:02d}", names[i % sites], ROLES[i % 2])
        for i in range(baseline_n)
    ]
    result: dict[str, Any] = {
        "bench": "continuity",
        "phase": "reconnect",
        "kiosks": kiosks_n,
        "events_per_kiosk": events,
        "sites": sites,
        "tls": broker.kind == "mosquitto",
        "central": f"{replicas} replicas on postgresql" if db_url else "one on sqlite",
    }
    db = create_engine(db_url or f"sqlite:///{central.data_dir / 'central.sqlite3'}")
    # the bench's own logs: a thousand kiosks each saying "connected" is not a report
    logging.getLogger("biblioedge.agent.sync").setLevel(logging.ERROR)
    logging.getLogger("mqtt").setLevel(logging.CRITICAL)
    # aiomqtt leaves a dropped session's publish futures unretrieved: one line each
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    # aiomqtt connects (TCP and the TLS handshake) on the loop's default executor: a real
    # kiosk has a process of its own, here a thousand share one, and the default of six
    # threads would queue their handshakes behind each other until they time out
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=128, thread_name_prefix="kiosk-connect")
    )
    try:
        broker.start()
        central.start()
        for replica in others:  # after the first: it made the database's schema
            replica.start()
        _say(f"enrolling {kiosks_n + baseline_n} kiosks through central's API")
        t = time.monotonic()
        await asyncio.to_thread(_enroll_all, central, broker.url, base + fleet)
        result["enroll_s"] = round(time.monotonic() - t, 1)

        per_base = kiosks_n * events // max(1, baseline_n)
        _say(f"baseline: {baseline_n} kiosks x {per_base} events through the same outage")
        for k in base:
            k.start()
        await _until(lambda: all(k.connected for k in base), 120, "the baseline kiosks online")
        result["baseline"] = {
            "kiosks": baseline_n,
            "events_per_kiosk": per_base,
            **await _outage(base, broker, db, per_base, 1000, within),
        }
        await asyncio.gather(*(k.stop() for k in base))

        _say(f"the fleet: {kiosks_n} kiosks connect")
        t = time.monotonic()
        for k in fleet:
            k.start()
        ids = [k.device_id for k in fleet]
        await _until(lambda: all(k.connected for k in fleet), within, "every kiosk connected")
        await _until(
            lambda: asyncio.to_thread(lambda: _online(db, ids) == kiosks_n),
            within,
            "central to see every kiosk online",
            every=1.0,
        )
        result["first_connect_s"] = round(time.monotonic() - t, 1)
        _say(f"outage: broker down, {events} events queued per kiosk, broker back")
        fleet_run = await _outage(fleet, broker, db, events, 5000, within)
        result.update(fleet_run)
        b = result["baseline"]
        result["drain_ratio"] = (
            round(fleet_run["drain_s"] / b["drain_s"], 2) if b["drain_s"] else None
        )
        result["central_rss_mb"] = round(central.rss_mb(), 1)
        result["targets"] = {
            "drain_s<=60": fleet_run["drain_s"] <= 60,
            "lost==0": fleet_run["lost"] == 0,
        }
        _say(f"drained in {fleet_run['drain_s']} s (baseline {b['drain_s']} s)")
        return result
    finally:
        await asyncio.gather(*(k.stop() for k in base + fleet))
        for replica in others:
            replica.stop()
        central.stop()
        broker.stop()
        db.dispose()


def bench_reconnect(
    kiosks: int = 1000,
    events: int = 100,
    baseline_kiosks: int = 10,
    sites: int = 20,
    work_dir: Path | None = None,
    timeout: float = 600,
    replicas: int = 2,
    postgres_url: str | None = None,
) -> dict[str, Any]:
    """``replicas`` central replicas on PostgreSQL (``postgres_url``, an empty database, or
    a private cluster); 0: one central on SQLite."""
    _raise_fd_limit()
    root = Path(work_dir or tempfile.mkdtemp(prefix="bench-reconnect-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        with _database(root, replicas, postgres_url) as url:
            return asyncio.run(
                _run(root, kiosks, events, baseline_kiosks, max(1, sites), timeout, replicas, url)
            )
    finally:
        if work_dir is None:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _database(root: Path, replicas: int, url: str | None) -> Iterator[str | None]:
    if replicas <= 0:
        yield None
    elif url is not None:
        yield url
    else:
        with postgres_cluster(root / "pg") as private:
            yield private

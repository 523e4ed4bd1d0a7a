"""Central at a fleet's scale: kiosks that come back together after an outage, events that
wait at the broker while central is away, and kiosks enrolled at the same moment.

The kiosks are ``sim.syncfleet.SyncKiosk``s: each enrolled through the real path, on its own
mutual-TLS connection to mosquitto with its own outbox and the agent's own ``Sync``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from biblioedge.bench.continuity_reconnect import bench_reconnect
from biblioedge.bench.continuity_replicas import ReplicaProcess, replica_extra
from biblioedge.demo.launch import CentralProcess
from biblioedge.provisioning.broker import BrokerProcess
from biblioedge.sim.syncfleet import SyncKiosk


async def _until(check: Callable[[], Any], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest.fixture
def db_url(postgres_url: str) -> Iterator[str]:
    """An empty database of its own in the session's PostgreSQL cluster."""
    name = f"rc_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield f"{postgres_url.rsplit('/', 1)[0]}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def test_a_fleet_back_from_a_broker_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    result = bench_reconnect(
        kiosks=24, events=30, baseline_kiosks=2, sites=3, work_dir=tmp_path / "run", replicas=0
    )
    assert result["central"] == "one on sqlite"
    _nothing_lost(result)


def test_a_fleet_back_from_a_broker_outage_into_two_replicas_loses_nothing(
    tmp_path: Path, db_url: str
) -> None:
    """The shape the issue asks for: the replicas share the kiosks' events through the
    broker's shared subscription, on PostgreSQL."""
    result = bench_reconnect(
        kiosks=24,
        events=30,
        baseline_kiosks=2,
        sites=3,
        work_dir=tmp_path / "run",
        replicas=2,
        postgres_url=db_url,
    )
    assert result["central"] == "2 replicas on postgresql"
    _nothing_lost(result)


def _nothing_lost(result: dict[str, Any]) -> None:
    assert result["tls"] is True, "mosquitto with mutual TLS, as the product runs it"
    assert result["events"] == 24 * 30
    assert result["lost"] == 0 and result["duplicated"] == 0
    assert result["baseline"]["events"] == 24 * 30
    assert result["baseline"]["lost"] == 0 and result["baseline"]["duplicated"] == 0
    assert result["drain_ratio"] is not None and result["targets"]["lost==0"]


async def test_events_sent_while_central_is_away_wait_at_the_broker_for_it(
    tmp_path: Path, central: CentralProcess
) -> None:
    """Central's bridge keeps a persistent session: what a kiosk published while central was
    down is delivered when it is back, without the kiosk sending it again (its ack timeout
    is ten minutes here, far beyond this test's wait)."""
    kiosk = SyncKiosk(tmp_path / "gate-07", "gate-07", "tv-tinh", "gate")
    await asyncio.to_thread(
        kiosk.enroll, central.url, central.enrollment_token, {"ack_timeout_s": 600.0}
    )
    kiosk.start()
    try:
        await _until(lambda: kiosk.connected, 60, "the kiosk connected")
        await kiosk.queue(5, seed=1)  # central up: delivered and acknowledged at once
        await _until(lambda: _drained(kiosk), 60, "the first events acknowledged")
        central.kill()
        await kiosk.queue(40, seed=2)
        assert kiosk.sync is not None
        sync = kiosk.sync
        await _until(lambda: bool(sync.status.inflight), 60, "the kiosk published its batch")
        registry = sync.metrics.registry
        sent = registry.get_sample_value("agent_batches_sent_total")
        await asyncio.to_thread(central.start)
        await _until(lambda: _drained(kiosk), 120, "the batch delivered from the broker's queue")
        assert registry.get_sample_value("agent_batch_timeouts_total") == 0
        assert registry.get_sample_value("agent_batches_sent_total") == sent, "sent once"
    finally:
        await kiosk.stop()


def _bridge_up(central: CentralProcess) -> bool:
    with central.client() as api:
        return bool(api.get("/health").json()["broker"])


async def _drained(kiosk: SyncKiosk) -> bool:
    return await kiosk.depth() == 0


async def test_kiosks_enrolled_in_a_burst_can_each_publish_as_soon_as_enrolled(
    tmp_path: Path, central: CentralProcess
) -> None:
    """Enrollments at once share the broker's ACL rewrites and reloads, yet each kiosk is in
    the ACL the broker applies when its enrollment returns: its first batch is acknowledged
    at once (its ack timeout is ten minutes: a denied publish would never be)."""
    kiosks = [
        SyncKiosk(
            tmp_path / f"b-{i:02d}", f"b-{i:02d}", f"xa-{i % 3}", ("gate", "selfcheck")[i % 2]
        )
        for i in range(16)
    ]
    # the bridge's first subscription: what a kiosk publishes before it is dropped (there
    # is no session to queue it in yet) and, with this ack timeout, never sent again
    await _until(lambda: asyncio.to_thread(_bridge_up, central), 60, "central's bridge")
    burst = ThreadPoolExecutor(max_workers=8)  # eight technicians' scripts at once

    async def enroll_and_send(i: int, kiosk: SyncKiosk) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            burst,
            lambda: kiosk.enroll(central.url, central.enrollment_token, {"ack_timeout_s": 600.0}),
        )
        kiosk.start()
        await kiosk.queue(3, seed=i)
        await _until(lambda: _drained(kiosk), 120, f"{kiosk.device_id}'s events acknowledged")

    try:
        await asyncio.gather(*(enroll_and_send(i, k) for i, k in enumerate(kiosks)))
    finally:
        burst.shutdown()
        await asyncio.gather(*(k.stop() for k in kiosks))
    assert "Traceback" not in central.log_tail(400)


def test_kiosks_enrolled_at_the_same_moment_are_all_in_the_broker_acl(
    tmp_path: Path, central: CentralProcess
) -> None:
    kiosks = [
        SyncKiosk(tmp_path / f"k-{i:02d}", f"k-{i:02d}", "xa-an-binh", "selfcheck")
        for i in range(12)
    ]
    with ThreadPoolExecutor(max_workers=6) as pool:  # a technician's script, in parallel
        list(pool.map(lambda k: k.enroll(central.url, central.enrollment_token), kiosks))
    assert "Traceback" not in central.log_tail(400)
    acl = (central.data_dir / "broker" / "acl").read_text()
    for k in kiosks:
        assert f"user {k.device_id}\n" in acl
    leftovers = [p.name for p in (central.data_dir / "broker").iterdir() if ".tmp" in p.name]
    assert leftovers == []


async def test_a_kiosk_that_published_while_no_replica_listened_is_asked_to_resend(
    tmp_path: Path, db_url: str
) -> None:
    """Replicas keep clean sessions, so the broker drops what a kiosk publishes while no
    replica is subscribed. The leader that comes back sees the kiosk's online state only as
    a retained message (it did not witness the connection) and asks it to resend: the batch
    is acknowledged although the kiosk's ack timeout is ten minutes."""
    broker = BrokerProcess(tmp_path / "broker")
    a = CentralProcess(
        tmp_path / "central", broker, extra=replica_extra(db_url, "a", lease_s=3.0, renew_s=0.5)
    )
    b = ReplicaProcess(a, "b")
    kiosk = SyncKiosk(tmp_path / "gate-09", "gate-09", "tv-tinh", "gate")
    try:
        await asyncio.to_thread(broker.start)
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(b.start)
        await asyncio.to_thread(kiosk.enroll, a.url, a.enrollment_token, {"ack_timeout_s": 600.0})
        kiosk.start()
        await _until(lambda: kiosk.connected, 60, "the kiosk connected")
        await kiosk.queue(5, seed=1)
        await _until(lambda: _drained(kiosk), 60, "the first events acknowledged")
        await asyncio.to_thread(a.stop)
        await asyncio.to_thread(b.stop)
        await kiosk.queue(20, seed=2)  # published to nobody: dropped
        assert kiosk.sync is not None
        sync = kiosk.sync
        await _until(lambda: bool(sync.status.inflight), 60, "the kiosk published its batch")
        sent = sync.metrics.registry.get_sample_value("agent_batches_sent_total") or 0
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(b.start)
        await _until(lambda: _drained(kiosk), 120, "the dropped batch sent again and stored")
        registry = sync.metrics.registry
        assert registry.get_sample_value("agent_batch_timeouts_total") == 0
        assert (registry.get_sample_value("agent_batches_sent_total") or 0) > sent, "sent again"
        assert kiosk.connected, "on the same connection: asked, not timed out or reconnected"
    finally:
        await kiosk.stop()
        b.stop()
        a.stop()
        broker.stop()

"""Per-device quotas at central: token buckets, the fair scheduler, and a flooding kiosk on
real mosquitto beside an honest one (issue 19, deliver 4)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from biblioedge.agent.store import Store
from biblioedge.bench.flood import FloodProcess
from biblioedge.demo.launch import AgentProcess, CentralProcess, agent_config, wait_until
from biblioedge.fleet.config import CentralConfig, QuotaConfig, RoleQuota
from biblioedge.fleet.quotas import OverQuota, Scheduler, TokenBucket, count_events
from biblioedge.fleet.repo import Incoming
from biblioedge.provisioning.broker import BrokerProcess, mosquitto_path
from biblioedge.settings import ConfigError
from biblioedge.sim.roles import RoleSimulator


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _batch(device: str, n: int, pad: int = 0) -> Incoming:
    body = orjson.dumps({"events": [{"x": "y" * pad} for _ in range(n)]})
    return Incoming("tv-tinh", device, "events", body)


def _quotas(**role: Any) -> QuotaConfig:
    q = RoleQuota(**role)
    return QuotaConfig(gate=q, selfcheck=q, desk=q, other=q)


# -- buckets -------------------------------------------------------------------------------


def test_a_bucket_gives_its_burst_then_its_rate_and_never_more_than_its_capacity() -> None:
    b = TokenBucket(rate=10, capacity=50, now=0.0)
    assert b.take(50, 0.0)
    assert not b.take(1, 0.0)
    assert b.wait(20, 0.0) == pytest.approx(2.0)
    assert b.take(20, 2.0)
    assert b.level(1000.0) == 50  # idle for long: still only the burst
    assert b.wait(500, 1000.0) == 0  # a cost above the capacity is clipped, never starves


# -- the scheduler ---------------------------------------------------------------------------


def test_beyond_its_burst_a_device_is_paced_not_refused_while_its_queue_has_room() -> None:
    clock = Clock()
    s = Scheduler(_quotas(events_per_s=100, burst_events=1000, batch_events=500), clock)
    for _ in range(4):
        assert s.offer(_batch("gate-01", 500)) is None
    assert len(s.take(64)) == 2  # the burst: 1000 events
    assert s.take(64) == []
    assert s.ready_in() == pytest.approx(5.0)  # 500 events at 100/s
    clock.now += 5.0
    assert len(s.take(64)) == 1
    clock.now += 5.0
    assert len(s.take(64)) == 1
    assert s.ready_in() is None and len(s) == 0
    assert s.refused() == {}


def test_what_exceeds_a_full_queue_is_refused_with_the_quota_that_holds_it_back() -> None:
    clock = Clock()
    cfg = _quotas(events_per_s=10, burst_events=100, batch_events=100)
    cfg.max_queued_per_device = 3
    s = Scheduler(cfg, clock)
    assert s.offer(_batch("gate-01", 100)) is None
    assert len(s.take(8)) == 1  # burst spent
    assert s.offer(_batch("gate-01", 101)) == "batch_size"  # never queued
    for _ in range(3):
        assert s.offer(_batch("gate-01", 100)) is None
    assert s.offer(_batch("gate-01", 100)) == "events_rate"
    assert s.refused() == {("gate-01", "events_rate"): 1, ("gate-01", "batch_size"): 1}


def test_stored_volume_and_message_rate_are_quotas_of_their_own() -> None:
    clock = Clock()
    cfg = _quotas(burst_stored_mb=1.0, stored_mb_per_day=1.0, burst_messages=3, messages_per_s=1)
    s = Scheduler(cfg, clock)
    big = _batch("gate-01", 1, pad=700_000)
    assert s.offer(big) is None and s.offer(big) is None
    assert len(s.take(8)) == 1  # 1 MB a day: the second waits for most of a day
    assert s.ready_in() == pytest.approx(len(big.payload) * 86400 / (1024 * 1024), rel=0.5)
    state = Incoming("tv-tinh", "gate-02", "state", b"{}")
    for _ in range(5):
        assert s.offer(state) is None
    assert len(s.take(8)) == 3  # three messages of burst; state costs no volume
    clock.now += 1.5
    assert len(s.take(8)) == 1  # then one a second
    assert len(s) == 2  # big (waiting for volume) and one state message


def test_devices_take_turns_and_one_that_overflows_over_quota_is_served_last() -> None:
    clock = Clock()
    cfg = _quotas(events_per_s=1, burst_events=5, batch_events=1)
    cfg.max_queued_per_device = 20
    s = Scheduler(cfg, clock)
    for device in ("a", "b", "c"):  # three busy kiosks, in turn
        for _ in range(3):
            s.offer(_batch(device, 1))
    assert [m.device_id for m in s.take(5)] == ["a", "b", "c", "a", "b"]
    assert [m.device_id for m in s.take(8)] == ["c", "a", "b", "c"]
    for _ in range(20):
        assert s.offer(_batch("flood", 1)) is None
    assert s.offer(_batch("flood", 1)) == "device_queue_full"  # within its quota, too fast
    assert sum(len(s.take(64)) for _ in range(8)) == 5  # its burst, one per transaction
    for _ in range(5):
        s.offer(_batch("flood", 1))
    assert s.offer(_batch("flood", 1)) == "events_rate"  # and now over its quota
    clock.now += 3.0  # tokens for three more
    for device in ("honest-1", "honest-2"):
        for _ in range(3):
            s.offer(_batch(device, 1))
    batch = [m.device_id for m in s.take(64)]
    assert batch == ["honest-1", "honest-2"] * 3 + ["flood"]  # one, after everyone else
    assert [m.device_id for m in s.take(64)] == ["flood"]  # one per transaction, even alone
    assert [m.device_id for m in s.take(64)] == ["flood"]  # (its quota still reachable)
    clock.now += 60  # no overflow for a while: an equal again
    s.offer(_batch("honest-1", 1))
    got = [m.device_id for m in s.take(64)]
    assert got.index("honest-1") <= 1 and got.count("flood") == 5  # in turn, its burst again


def test_roles_from_the_registry_set_each_devices_quota() -> None:
    clock = Clock()
    cfg = QuotaConfig(
        desk=RoleQuota(burst_events=10, batch_events=10),
        other=RoleQuota(burst_events=1000, batch_events=1000),
    )
    s = Scheduler(cfg, clock)
    assert s.offer(_batch("desk-01", 20)) is None  # role unknown yet: "other"
    assert s.unchecked_roles() == ["desk-01"]
    s.set_roles({"desk-01": "desk"})
    assert s.unchecked_roles() == []
    assert s.offer(_batch("desk-01", 20)) == "batch_size"
    assert cfg.for_role("exitgate") is cfg.other


def test_a_device_that_stays_over_quota_is_reported_once() -> None:
    clock = Clock()
    seen: list[OverQuota] = []
    cfg = _quotas(events_per_s=1, burst_events=10, batch_events=10)
    cfg.max_queued_per_device, cfg.alert_after_s = 1, 30.0
    s = Scheduler(cfg, clock, on_over_quota=seen.append)
    reasons = []
    for _ in range(80):  # a batch of 10 every half second against 1 event a second, for 40 s
        reasons.append(s.offer(_batch("gate-07", 10)))
        s.take(8)
        clock.now += 0.5
    assert reasons.count(None) < 10 and reasons.count("events_rate") > 70
    assert len(seen) == 1
    assert seen[0].device_id == "gate-07" and seen[0].refused["events_rate"] >= 50


def test_events_are_counted_from_the_batch_and_garbage_costs_one() -> None:
    assert count_events(orjson.dumps({"events": [{}] * 7})) == 7
    assert count_events(b"not json") == 1
    assert count_events(b"[1,2,3]") == 1


def test_quotas_are_configurable_and_a_burst_below_a_batch_is_refused() -> None:
    cfg = CentralConfig.model_validate(
        {"data_dir": "/tmp", "quotas": {"gate": {"events_per_s": 5, "burst_events": 2000}}}
    )
    assert cfg.quotas.for_role("gate").events_per_s == 5
    assert cfg.quotas.for_role("desk").burst_events == 20_000
    from biblioedge.fleet.config import load_central_config

    with pytest.raises(ConfigError):
        load_central_config(
            None,
            environ={},
            overrides={"data_dir": "/tmp", "quotas": {"gate": {"burst_events": 10}}},
        )


# -- on real mosquitto and central -------------------------------------------------------------

FLOOD_BURST = 2000  # the flooder's whole allowance: its rate refills one batch in ~14 hours


def _stored(db: Path, device: str, lo: int = 1, hi: int = 2**62) -> tuple[int, int]:
    """(distinct seqs, rows) of ``device`` in central's database within [lo, hi]."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute(
            "SELECT count(DISTINCT seq), count(*) FROM events"
            " WHERE device_id = ? AND seq BETWEEN ? AND ?",
            (device, lo, hi),
        ).fetchone()
        return int(row[0]), int(row[1])
    except sqlite3.OperationalError:
        return 0, 0
    finally:
        conn.close()


@pytest.mark.skipif(mosquitto_path() is None, reason="needs mosquitto")
@pytest.mark.integration
def test_a_flooding_kiosk_is_refused_beyond_its_quota_and_an_honest_one_loses_nothing(
    tmp_path: Path, broker: BrokerProcess
) -> None:
    central = CentralProcess(
        tmp_path / "central",
        broker,
        extra={
            "quotas": {
                "alert_after_s": 1.0,
                "gate": {
                    "events_per_s": 0.01,
                    "burst_events": FLOOD_BURST,
                    "batch_events": 500,
                },
            }
        },
    )
    broker.start()
    central.start()
    db = tmp_path / "central" / "central.sqlite3"
    honest = AgentProcess(
        tmp_path / "sc-01",
        agent_config(tmp_path / "sc-01", "sc-01", "selfcheck", "tv-tinh", broker.url),
        central,
    )
    thief = AgentProcess(
        tmp_path / "gate-66",
        agent_config(tmp_path / "gate-66", "gate-66", "gate", "tv-tinh", broker.url),
        central,
    )
    thief.enroll()  # its certificate and key are all the flooder needs
    honest.enroll()
    store = Store(honest.data_dir / "agent.sqlite3")
    sim = RoleSimulator("selfcheck", "tv-tinh", 3)
    queued = store.append(
        [sim.next_event() for _ in range(5000)], device_id="sc-01", site="tv-tinh"
    )
    store.close()
    lo, hi = queued[0].seq, queued[-1].seq
    flood = FloodProcess(thief.config_path, batch_events=500, publishers=8)
    try:
        flood.start()
        wait_until(lambda: flood.sent >= 4 * FLOOD_BURST, 120, what="the flood under way")
        honest.start()
        wait_until(lambda: _stored(db, "sc-01", lo, hi)[0] == 5000, 120, what="honest stored")
        wait_until(lambda: flood.sent >= 20 * FLOOD_BURST, 120, what="a long flood")
        wait_until(
            lambda: "gate-66 (gate) stays over its quota" in central.log_tail(),
            60,
            what="the flooder reported",
        )
        # and IT sees it: a security attention case naming the device
        wait_until(lambda: _cases(db, "gate-66") == ["over_quota"], 60, what="the case")
        # the honest kiosk's outbox empties: every event acked
        wait_until(lambda: _outbox(honest) == 0, 60, what="honest outbox acked")
    finally:
        flood.stop()
        honest.stop()
    assert _stored(db, "sc-01", lo, hi) == (5000, 5000)  # all of them, exactly once
    flood_stored, flood_rows = _stored(db, "gate-66")
    assert flood_stored == flood_rows <= FLOOD_BURST  # the rest refused before storing
    assert flood.sent - flood_stored >= 19 * FLOOD_BURST
    assert central.stop() == 0, central.log_tail()


def _cases(db: Path, device: str) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT payload FROM events WHERE device_id = ? AND type = 'security.attention'",
            (device,),
        ).fetchall()
        return [json.loads(r[0])["reason"] for r in rows]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _outbox(agent: AgentProcess) -> int:
    conn = sqlite3.connect(f"file:{agent.data_dir / 'agent.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()

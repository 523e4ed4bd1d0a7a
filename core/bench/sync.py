"""``biblioedge bench sync``: agent outbox to central database, end to end, real processes.

Phases, all through a real broker, a real central and real agent processes:

1. startup: agents start with empty outboxes; time to "online" at central, idle RSS.
2. throughput: N events are queued in the (stopped) agents' outboxes, the agents start, and
   the clock runs until every one of them is a row in central's database. With ``--faults``
   an agent is killed with SIGKILL and restarted, the broker restarted and central killed
   with SIGKILL and restarted while this phase runs.
3. backlog: the broker is stopped, N more events are queued by the running agents' stores,
   the broker comes back, and the clock runs until all are stored.
4. baseline: the same pipeline with one event per MQTT message, for the ratio.

These phases measure the pipeline's capacity, so central runs with its per-device quotas off
(one bench kiosk sends far more than a library's kiosk ever does). With ``--flood-device``
(``bench_sync_flood``) central runs with its default quotas, as a library does: the same
honest run twice, without and with one compromised kiosk flooding beside them, and the ratio.

Loss and duplication are counted from central's database by (device, seq), independently of
the UNIQUE event id that makes duplicates impossible by construction.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from biblioedge.agent.store import Store
from biblioedge.bench.flood import FloodProcess
from biblioedge.demo.launch import AgentProcess, CentralProcess, agent_config, wait_until
from biblioedge.fleet.config import QuotaConfig
from biblioedge.provisioning.broker import BrokerProcess
from biblioedge.sim.roles import RoleSimulator

SITE = "bench"
ROLES = ("gate", "selfcheck", "desk")
FLOOD_DEVICE = "bench-flood"


class _Tracker:
    """Which (device, seq) ranges a phase queued, and how many of them central holds."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.ranges: list[tuple[str, int, int]] = []
        self.expected = 0

    def add(self, device_id: str, seqs: list[int]) -> None:
        self.ranges.append((device_id, seqs[0], seqs[-1]))
        assert seqs[-1] - seqs[0] + 1 == len(seqs), "one append is one contiguous range"
        self.expected += len(seqs)

    def _count(self, distinct: bool) -> int:
        try:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        except sqlite3.OperationalError:
            return 0
        try:
            total = 0
            what = "count(DISTINCT seq)" if distinct else "count(*)"
            for device_id, lo, hi in self.ranges:
                (n,) = conn.execute(
                    f"SELECT {what} FROM events WHERE device_id = ? AND seq BETWEEN ? AND ?",
                    (device_id, lo, hi),
                ).fetchone()
                total += int(n)
            return total
        except sqlite3.OperationalError:
            return 0  # central still migrating
        finally:
            conn.close()

    def stored(self) -> int:
        return self._count(distinct=True)

    def rows(self) -> int:
        return self._count(distinct=False)


def _queue(
    agent: AgentProcess, role: str, n: int, tracker: _Tracker, seed: int, chunk: int = 5000
) -> None:
    sim = RoleSimulator(role, SITE, seed)  # type: ignore[arg-type]
    store = Store(agent.data_dir / "agent.sqlite3")
    try:
        left = n
        while left > 0:
            items = [sim.next_event() for _ in range(min(chunk, left))]
            events = store.append(items, device_id=agent.device_id, site=SITE)
            tracker.add(agent.device_id, [e.seq for e in events])
            left -= len(items)
    finally:
        store.close()


def _online(db_path: Path, device_id: str, since: float) -> bool:
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
        try:
            row = conn.execute(
                "SELECT online, reported_at FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return False
    if row is None or not row[0] or row[1] is None:
        return False
    reported = datetime.fromisoformat(str(row[1])).replace(tzinfo=UTC).timestamp()
    return reported >= since - 1.0


class _SyncRun:
    """One ``bench_sync`` run: its processes and its phases, one method each."""

    def __init__(
        self, root: Path, devices: int, progress: bool, secure: bool, quotas: bool
    ) -> None:
        self.root = root
        self.devices = devices
        self.progress = progress
        self.broker = BrokerProcess(root / "broker")
        self.central = CentralProcess(
            root / "central",
            self.broker,
            secure=secure,
            extra=None if quotas else {"quotas": {"enabled": False}},
        )
        self.db_path = root / "central" / "central.sqlite3"
        self.agents: list[AgentProcess] = []
        self.flooder: FloodProcess | None = None
        self.drain = 0.0
        self.result: dict[str, Any] = {
            "bench": "sync",
            "broker": self.broker.kind,
            "tls": self.broker.secure,
            "faults": [],
            "quotas": "default" if quotas else "off",
        }

    def say(self, message: str) -> None:
        if self.progress:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    def start(self, flood: bool) -> None:
        """Broker, central, the enrolled agents (not running yet) and the flooder."""
        self.broker.start()
        self.central.start()
        for i in range(self.devices):
            dev = f"bench-{i:02d}"
            self.agents.append(
                AgentProcess(
                    self.root / dev,
                    agent_config(
                        self.root / dev,
                        dev,
                        ROLES[i % 3],
                        SITE,
                        self.broker.url,
                        sync={"ack_timeout_s": 5.0},
                        supervisor={"stall_timeout_s": 60},
                    ),
                    self.central,
                )
            )
            self.agents[-1].enroll()  # before the clock: start-up measures connecting
        if flood:  # a gate's own certificate, in the hands of whoever took its SD card
            thief = AgentProcess(
                self.root / FLOOD_DEVICE,
                agent_config(self.root / FLOOD_DEVICE, FLOOD_DEVICE, "gate", SITE, self.broker.url),
            )
            thief.central = self.central
            thief.enroll()
            self.flooder = FloodProcess(thief.config_path)

    def startup(self) -> None:
        """Phase 1: agents start with empty outboxes; time to "online" at central, idle RSS."""
        self.say("startup: agents connecting")
        connect_s = []
        for agent in self.agents:
            t0 = time.time()
            agent.start()
            wait_until(
                lambda a=agent, t=t0: _online(self.db_path, a.device_id, t),
                30,
                what=f"{agent.device_id} online",
            )
            connect_s.append(time.time() - t0)
        time.sleep(2.0)
        self.result["agent_connect_s"] = round(max(connect_s), 3)
        self.result["agent_idle_rss_mb"] = round(max(a.rss_mb() for a in self.agents), 1)

    def _fault_plan(self, faults: bool) -> list[tuple[float, str, Callable[[], None]]]:
        """(share of the events stored, what, how): the faults of ``--faults``."""

        def kill_agent() -> None:
            self.agents[0].kill()
            self.agents[0].start()

        def kill_central() -> None:
            self.central.kill()
            self.central.start()

        if not faults:
            return []
        return [
            (0.25, "kill -9 agent", kill_agent),
            (0.45, "restart broker", self.broker.restart),
            (0.65, "kill -9 central", kill_central),
        ]

    def throughput(self, events: int, per: list[int], faults: bool, timeout: float) -> _Tracker:
        """Phase 2: events queued in the stopped agents' outboxes, then delivered."""
        result = self.result
        tracker = _Tracker(self.db_path)
        for agent in self.agents:
            agent.stop()
        self.say(f"throughput: queueing {events} events in {self.devices} outbox(es)")
        for i, agent in enumerate(self.agents):
            _queue(agent, ROLES[i % 3], per[i], tracker, seed=i)
        t0 = time.monotonic()
        if self.flooder is not None:
            self.say("  a compromised kiosk floods beside them")
            self.flooder.start()
        for agent in self.agents:
            agent.start()
        plan = self._fault_plan(faults)
        while (stored := tracker.stored()) < tracker.expected:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(
                    f"throughput phase: {stored}/{tracker.expected} after {timeout} s"
                )
            if plan and stored >= plan[0][0] * tracker.expected:
                _, what, act = plan.pop(0)
                self.say(f"  fault at {stored}/{tracker.expected}: {what}")
                result["faults"].append({"fault": what, "stored_before": stored})
                act()
            time.sleep(0.02)
        seconds = time.monotonic() - t0
        for _, what, act in plan:  # run too fast for a fault to land mid-send: inject anyway
            result["faults"].append({"fault": what, "stored_before": tracker.expected})
            act()
        self.say(f"  {events} events in {seconds:.2f} s")
        result.update(
            events=events,
            devices=self.devices,
            seconds=round(seconds, 3),
            events_per_s=round(events / seconds, 1),
        )
        return tracker

    def backlog(self, events: int, per: list[int], timeout: float) -> _Tracker:
        """Phase 3: events queued while the broker is down, drained when it is back."""
        backlog = _Tracker(self.db_path)
        self.say(f"backlog: broker down, queueing {events} events")
        self.broker.stop()
        for i, agent in enumerate(self.agents):
            _queue(agent, ROLES[i % 3], per[i], backlog, seed=100 + i)
        t0 = time.monotonic()
        self.broker.start()
        while (stored := backlog.stored()) < backlog.expected:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"backlog phase: {stored}/{backlog.expected} after {timeout} s")
            time.sleep(0.02)
        drain = self.drain = time.monotonic() - t0
        self.say(f"  drained in {drain:.2f} s")
        self.result.update(
            backlog_events=events,
            backlog_drain_s=round(drain, 3),
            backlog_events_per_s=round(events / drain, 1),
        )
        return backlog

    def flood_result(self) -> None:
        """What the compromised kiosk sent and what central kept of it."""
        flooder = self.flooder
        if flooder is None:
            return
        flooder.stop()
        stored_flood = _device_events(self.db_path, FLOOD_DEVICE)
        self.result["flood"] = {
            "device": FLOOD_DEVICE,
            "seconds": round(flooder.seconds, 3),
            "sent_events": flooder.sent,
            "sent_events_per_s": round(flooder.sent / flooder.seconds, 1),
            "stored_events": stored_flood,
            "refused_events": flooder.sent - stored_flood,
            "refused_ratio": round(1 - stored_flood / max(flooder.sent, 1), 4),
        }

    def unbatched(self, events: int, timeout: float) -> _Tracker:
        """Phase 4, the baseline: the same pipeline with one event per MQTT message."""
        n_base = min(2000, events)
        base_dir = self.root / "bench-unbatched"
        base = AgentProcess(
            base_dir,
            agent_config(
                base_dir,
                "bench-unbatched",
                "gate",
                SITE,
                self.broker.url,
                sync={"batch_max_events": 1},
            ),
            self.central,
        )
        base.enroll()
        base_tracker = _Tracker(self.db_path)
        _queue(base, "gate", n_base, base_tracker, seed=999)
        self.say(f"baseline: {n_base} events, one per MQTT message")
        t0 = time.monotonic()
        base.start()
        self.agents.append(base)
        while base_tracker.stored() < base_tracker.expected:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("baseline phase timed out")
            time.sleep(0.02)
        base_s = time.monotonic() - t0
        self.result["unbatched_events_per_s"] = round(n_base / base_s, 1)
        self.result["speedup_vs_unbatched"] = round(
            self.result["events_per_s"] / (n_base / base_s), 2
        )
        return base_tracker

    def stop(self) -> None:
        if self.flooder is not None:
            self.flooder.stop()
        for agent in self.agents:
            agent.stop()
        self.central.stop()
        self.broker.stop()


def bench_sync(
    *,
    events: int,
    devices: int = 1,
    faults: bool = False,
    work_dir: Path | None = None,
    progress: bool = True,
    secure: bool = True,
    quotas: bool = False,
    flood: bool = False,
) -> dict[str, Any]:
    """One run. ``secure``: mosquitto with mutual TLS and central's ACL, enrolled agents,
    signed acks (what a library runs); otherwise an anonymous plain-TCP broker. ``quotas``:
    central's default per-device quotas (else off). ``flood``: one more kiosk, enrolled as a
    gate, floods at its link's rate through the throughput and backlog phases; the unbatched
    baseline is skipped in quota runs (one event per message is what the message quota paces)."""
    own_tmp = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="be-bench-")) if work_dir is None else work_dir
    root.mkdir(parents=True, exist_ok=True)
    run = _SyncRun(root, devices, progress, secure, quotas)
    result = run.result
    try:
        run.start(flood)
        run.startup()
        per = [events // devices + (1 if i < events % devices else 0) for i in range(devices)]
        timeout = max(120.0, events / 500)
        tracker = run.throughput(events, per, faults, timeout)
        backlog = run.backlog(events, per, timeout)
        run.flood_result()
        if quotas:  # the capacity targets belong to the unbatched comparison below
            return _verdict(result, tracker, backlog, None)
        base_tracker = run.unbatched(events, timeout)
        _verdict(result, tracker, backlog, base_tracker)
        result["targets"] = {
            "events_per_s>=5000": result["events_per_s"] >= 5000,
            "backlog_drain_s<=30": run.drain <= 30,
            "lost==0": result["lost"] == 0,
            "duplicated==0": result["duplicated"] == 0,
            "agent_idle_rss_mb<=120": result["agent_idle_rss_mb"] <= 120,
            "agent_connect_s<=3": result["agent_connect_s"] <= 3,
        }
        return result
    finally:
        run.stop()
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)


def _verdict(result: dict[str, Any], *trackers: _Tracker | None) -> dict[str, Any]:
    """Loss and duplication of the honest kiosks' events, from central's database."""
    present = [t for t in trackers if t is not None]
    expected = sum(t.expected for t in present)
    stored = sum(t.stored() for t in present)
    rows = sum(t.rows() for t in present)
    result["lost"] = expected - stored
    result["duplicated"] = rows - stored
    result["targets"] = {"lost==0": result["lost"] == 0, "duplicated==0": result["duplicated"] == 0}
    return result


def _device_events(db_path: Path, device_id: str) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        (n,) = conn.execute(
            "SELECT count(*) FROM events WHERE device_id = ?", (device_id,)
        ).fetchone()
        return int(n)
    finally:
        conn.close()


def bench_sync_flood(*, devices: int = 3, **kwargs: Any) -> dict[str, Any]:
    """The honest kiosks without, then with, a compromised kiosk flooding beside them, both
    under central's default quotas: ``honest_ratio`` is the honest throughput kept (target
    >= 0.8), and the flood is refused beyond its quota (stored <= burst + rate x time, per
    restart of central, which refills the buckets)."""
    devices = max(devices, 3)
    work_dir: Path | None = kwargs.pop("work_dir", None)
    calm = bench_sync(
        devices=devices,
        quotas=True,
        work_dir=None if work_dir is None else work_dir / "calm",
        **kwargs,
    )
    flooded = bench_sync(
        devices=devices,
        quotas=True,
        flood=True,
        work_dir=None if work_dir is None else work_dir / "flood",
        **kwargs,
    )
    gate = QuotaConfig().gate
    flood = flooded["flood"]
    refills = 1 + sum(1 for f in flooded["faults"] if "central" in f["fault"])
    allowed = refills * gate.burst_events + gate.events_per_s * flood["seconds"]
    flood["quota_allows_events"] = int(allowed)
    flooded["calm_events_per_s"] = calm["events_per_s"]
    flooded["calm_backlog_events_per_s"] = calm["backlog_events_per_s"]
    flooded["honest_ratio"] = round(flooded["events_per_s"] / calm["events_per_s"], 3)
    flooded["honest_backlog_ratio"] = round(
        flooded["backlog_events_per_s"] / calm["backlog_events_per_s"], 3
    )
    flooded["lost"] += calm["lost"]
    flooded["duplicated"] += calm["duplicated"]
    flooded["targets"] = {
        "honest_ratio>=0.8": flooded["honest_ratio"] >= 0.8,
        "lost==0": flooded["lost"] == 0,
        "duplicated==0": flooded["duplicated"] == 0,
        "flood_refused_beyond_quota": flood["stored_events"] <= allowed
        and flood["refused_events"] > 0,
    }
    return flooded


def bench_sync_tls(**kwargs: Any) -> dict[str, Any]:
    """Plain, then mutual TLS with ACLs and signed acks, in the same run: the TLS result with
    ``plain_events_per_s`` beside it and the ratio (target: TLS keeps >= 90 %)."""
    plain = bench_sync(secure=False, **kwargs)
    tls = bench_sync(secure=True, **kwargs)
    tls["plain_events_per_s"] = plain["events_per_s"]
    tls["plain_backlog_events_per_s"] = plain["backlog_events_per_s"]
    tls["tls_ratio"] = round(tls["events_per_s"] / plain["events_per_s"], 3)
    tls["lost"] += plain["lost"]
    tls["duplicated"] += plain["duplicated"]
    tls["targets"]["tls_ratio>=0.9"] = tls["tls_ratio"] >= 0.9
    return tls

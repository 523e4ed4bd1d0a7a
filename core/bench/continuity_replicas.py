"""``biblioedge bench continuity --phase replicas``: two central replicas on PostgreSQL, the
leader killed with SIGKILL while kiosks deliver, and nothing lost or stored twice.

On real processes: a private PostgreSQL cluster, mosquitto with mutual TLS, two ``central``
processes with ``[replica]`` (one data directory, one database), kiosk agents.

1. ``one``: replica ``a`` alone receives ``--events`` queued in the kiosks' outboxes (the
   same-run baseline);
2. ``two``: with ``b`` started too, the same number of new events (``replica_ratio`` =
   events/s with two replicas over events/s with one); ``one`` and ``two`` alternate for
   ``rounds`` rounds (b stopped and started again), so that a machine whose load drifts
   (this one is shared) weighs on both alike;
3. ``kill``: ``--events`` more; once a third of them are in, the leader is killed (SIGKILL).
   ``takeover_s``: from the kill to the other replica holding the lease; ``lost`` and
   ``duplicated`` by event id against what the kiosks queued.
"""

from __future__ import annotations

import shutil
import ssl
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from biblioedge.agent.store import Store
from biblioedge.demo.launch import AgentProcess, CentralProcess, Child, agent_config, wait_until
from biblioedge.procs import free_port, postgres_cluster, wait_port
from biblioedge.provisioning.broker import BrokerProcess
from biblioedge.settings import deep_merge, to_toml
from biblioedge.sim.roles import RoleSimulator

SITE = "bench"


def _say(message: str) -> None:
    sys.stderr.write(f"bench continuity replicas: {message}\n")
    sys.stderr.flush()


class ReplicaProcess(Child):
    """Another replica of ``first`` (same data directory, database and keys; its own
    ``[replica] id``, API port, config and log file)."""

    def __init__(self, first: CentralProcess, replica_id: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = first.data_dir
        doc = tomllib.loads((first.data_dir / "central.toml").read_text())
        doc = deep_merge(doc, {"http": {"port": self.port}, "replica": {"id": replica_id}})
        self.config_path = first.data_dir / f"central-{replica_id}.toml"
        self.config_path.write_text(to_toml(doc))
        super().__init__(
            f"central:{replica_id}",
            ["central", "--config", str(self.config_path)],
            first.data_dir / f"central-{replica_id}.log",
            {},
        )

    def start(self, wait: bool = True) -> None:
        """``wait``: until its API listens (a replica that refuses to start never does)."""
        super().start()
        if wait:
            wait_port("127.0.0.1", self.port, 60)

    def healthy(self, ca_file: Path) -> bool:
        """``/health`` answers 200: the database is reachable and the bridge subscribed."""
        try:
            r = httpx.get(
                f"https://127.0.0.1:{self.port}/api/v1/health",
                verify=ssl.create_default_context(cafile=ca_file),
                timeout=5,
            )
        except httpx.HTTPError:
            return False
        return r.status_code == 200


def replica_extra(db_url: str, replica_id: str = "a", **replica: Any) -> dict[str, Any]:
    """The config a ``CentralProcess`` needs to be replica ``replica_id`` on ``db_url``."""
    return {"database_url": db_url, "replica": {"id": replica_id, **replica}}


class Fleet:
    """PostgreSQL, mosquitto, replicas ``a`` and ``b`` and ``devices`` enrolled kiosks."""

    def __init__(self, root: Path, db_url: str, devices: int, **replica: Any) -> None:
        self.root = root
        self.db_url = db_url
        self.broker = BrokerProcess(root / "broker")
        self.a = CentralProcess(
            root / "central", self.broker, extra=replica_extra(db_url, "a", **replica)
        )
        self.b = ReplicaProcess(self.a, "b")
        self.engine = create_engine(db_url)
        self.agents: list[AgentProcess] = []
        self.devices = devices

    def start(self) -> None:
        self.broker.start()
        self.a.start()
        for i in range(self.devices):
            data = self.root / f"gate-{i:02d}"
            cfg = agent_config(data, f"gate-{i:02d}", "gate", SITE, self.broker.url)
            self.agents.append(AgentProcess(data, cfg, self.a))
        for agent in self.agents:  # enroll, then stop: events are queued into stopped outboxes
            agent.start()
        for agent in self.agents:
            agent.stop()

    def replica(self, name: str) -> Child:
        return self.a if name == "a" else self.b

    def leader(self) -> tuple[str | None, int]:
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT holder, epoch, expires_at > now() FROM central_lease "
                    "WHERE name = 'central'"
                )
            ).first()
        if row is None or not row[2]:
            return None, 0 if row is None else int(row[1])
        return str(row[0]), int(row[1])

    def ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(text("SELECT event_id FROM events"))}

    def rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM events")).scalar() or 0)

    def queue(self, total: int, seed: int) -> set[str]:
        """Queue ``total`` events across the (stopped) kiosks' outboxes; their ids."""
        ids: set[str] = set()
        n = len(self.agents)
        for i, agent in enumerate(self.agents):
            count = total // n + (1 if i < total % n else 0)
            sim = RoleSimulator("gate", SITE, seed + i)
            store = Store(agent.data_dir / "agent.sqlite3")
            try:
                items = [sim.next_event() for _ in range(count)]
                ids |= {
                    e.event_id for e in store.append(items, device_id=agent.device_id, site=SITE)
                }
            finally:
                store.close()
        return ids

    def deliver(self, ids: set[str], timeout: float) -> float:
        started = time.monotonic()
        for agent in self.agents:
            agent.start()
        wait_until(lambda: ids <= self.ids(), timeout, 0.2, f"{len(ids)} events at central")
        took = time.monotonic() - started
        for agent in self.agents:
            agent.stop()
        return took

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.b.stop()
        self.a.stop()
        self.broker.stop()
        self.engine.dispose()


def bench_replicas(
    events: int = 10_000,
    devices: int = 4,
    work_dir: Path | None = None,
    postgres_url: str | None = None,
    timeout: float = 600,
    rounds: int = 2,
) -> dict[str, Any]:
    root = Path(work_dir or tempfile.mkdtemp(prefix="bench-replicas-"))
    keep = work_dir is not None
    try:
        if postgres_url is not None:
            return _run(root, postgres_url, events, devices, timeout, rounds)
        with postgres_cluster(root / "pg") as url:
            return _run(root, url, events, devices, timeout, rounds)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _run(
    root: Path, db_url: str, events: int, devices: int, timeout: float, rounds: int
) -> dict[str, Any]:
    fleet = Fleet(root, db_url, devices)
    try:
        fleet.start()
        wait_until(lambda: fleet.leader()[0] == "a", 60, 0.2, "replica a to lead")
        sent: set[str] = set()
        one_s: list[float] = []
        two_s: list[float] = []
        for r in range(rounds):
            fleet.b.stop()
            _say(f"round {r + 1}, one replica: {events} events from {devices} kiosks")
            ids = fleet.queue(events, seed=1 + 100 * r)
            one_s.append(fleet.deliver(ids, timeout))
            sent |= ids
            fleet.b.start()
            wait_until(lambda: fleet.b.healthy(fleet.a.ca_file), 60, 0.2, "replica b healthy")
            _say(f"round {r + 1}, two replicas: {events} more")
            ids = fleet.queue(events, seed=1000 + 100 * r)
            two_s.append(fleet.deliver(ids, timeout))
            sent |= ids
        _say(f"kill -9 the leader while {events} more arrive")
        kill_ids = fleet.queue(events, seed=2000)
        before = len(fleet.ids())
        leader, epoch = fleet.leader()
        for agent in fleet.agents:
            agent.start()
        wait_until(
            lambda: len(fleet.ids()) - before >= events // 3, timeout, 0.05, "a third of them"
        )
        assert leader is not None
        victim = fleet.replica(leader)
        killed_at = time.monotonic()
        victim.kill()
        wait_until(
            lambda: fleet.leader()[0] not in (None, leader), 60, 0.05, "another replica to lead"
        )
        takeover_s = time.monotonic() - killed_at
        new_leader, new_epoch = fleet.leader()
        wait_until(lambda: kill_ids <= fleet.ids(), timeout, 0.2, "every event after the kill")
        all_ids = sent | kill_ids
        held = fleet.ids()
        rows = fleet.rows()
        one_eps, two_eps = events * rounds / sum(one_s), events * rounds / sum(two_s)
        lost, duplicated = len(all_ids - held), rows - len(held)
        return {
            "bench": "continuity",
            "phase": "replicas",
            "database": "postgresql",
            "devices": devices,
            "events_per_step": events,
            "rounds": rounds,
            "one_replica_s": [round(t, 2) for t in one_s],
            "two_replicas_s": [round(t, 2) for t in two_s],
            "one_replica_eps": round(one_eps, 1),
            "two_replicas_eps": round(two_eps, 1),
            "replica_ratio": round(two_eps / one_eps, 2),
            "killed": leader,
            "new_leader": new_leader,
            "epochs": [epoch, new_epoch],
            "takeover_s": round(takeover_s, 2),
            "lost": lost,
            "duplicated": duplicated,
            "targets": {
                "lost==0": lost == 0,
                "duplicated==0": duplicated == 0,
                "takeover_s<=10": takeover_s <= 10,
                "replica_ratio>=1.0": two_eps >= one_eps,
            },
        }
    finally:
        fleet.stop()

"""``biblioedge bench continuity``: central's disk dies, and nothing is lost.

The ``restore`` phase, on real processes (mosquitto with mutual TLS, central, kiosk agents):

1. kiosks deliver a first lot of events; central makes a backup while it runs;
2. the kiosks deliver ``--events`` more (10,000 by default), all acknowledged by central;
3. central is killed with SIGKILL and its data directory deleted (only its config, kept by
   IT, and the backup, on another disk, survive);
4. ``central restore`` onto the empty directory, central starts, the kiosks reconnect with
   their certificates (no new enrollment) and, asked by central, send again what the lost
   central had acknowledged after the backup.

Reported: ``lost`` and ``duplicated`` (by event id against what the lost central held),
``restore_s`` (the restore command), ``replay_s`` (central's start to the last event back),
``rto_s`` (their sum), and beside them, from the same run, ``ingest_s``: how long the same
events took to reach central the first time (``replay_ratio`` = replay / first ingest).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from biblioedge.agent.store import Store
from biblioedge.demo.launch import AgentProcess, CentralProcess, agent_config, wait_until
from biblioedge.provisioning.broker import BrokerProcess
from biblioedge.sim.roles import RoleSimulator

SITE = "bench"
CLI = [sys.executable, "-m", "biblioedge"]


def _say(message: str) -> None:
    sys.stderr.write(f"bench continuity: {message}\n")
    sys.stderr.flush()


def _ids(db: Path) -> set[str]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return {r[0] for r in conn.execute("SELECT event_id FROM events")}
    except sqlite3.OperationalError:
        return set()  # central still migrating


def _rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _queue(agents: list[AgentProcess], total: int, seed: int) -> set[str]:
    """Queue ``total`` events across the (stopped) agents' outboxes; their ids."""
    ids: set[str] = set()
    per = [total // len(agents) + (1 if i < total % len(agents) else 0) for i in range(len(agents))]
    for i, (agent, n) in enumerate(zip(agents, per, strict=True)):
        sim = RoleSimulator("gate", SITE, seed + i)
        store = Store(agent.data_dir / "agent.sqlite3")
        try:
            for start in range(0, n, 5000):
                items = [sim.next_event() for _ in range(min(5000, n - start))]
                ids |= {
                    e.event_id for e in store.append(items, device_id=agent.device_id, site=SITE)
                }
        finally:
            store.close()
    return ids


def _cli(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [*CLI, *args, "--json"], capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"biblioedge {' '.join(args[:3])} failed: {proc.stderr.strip()[-300:]}")
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def _deliver(agents: list[AgentProcess], db: Path, ids: set[str], timeout: float) -> float:
    started = time.monotonic()
    for agent in agents:
        agent.start()
    wait_until(lambda: ids <= _ids(db), timeout, 0.2, f"{len(ids)} events at central")
    return time.monotonic() - started


def bench_restore(
    events: int = 10_000,
    devices: int = 2,
    work_dir: Path | None = None,
    timeout: float = 600,
    changes: int = 100,
) -> dict[str, Any]:
    """``changes``: changes made at central (through its API) after the backup, which only
    central's journal carries over the restore (docs/operations.md)."""
    root = Path(work_dir or tempfile.mkdtemp(prefix="bench-continuity-"))
    keep = work_dir is not None
    broker = BrokerProcess(root / "broker")
    central = CentralProcess(root / "central", broker)
    agents: list[AgentProcess] = []
    try:
        broker.start()
        central.start()
        db = central.data_dir / "central.sqlite3"
        key = root / "backup.key"
        public = _cli("central", "backup", "keygen", "--out", str(key))["public_key"]
        config = central.data_dir / "central.toml"
        copy = root / "copy"  # the backups' second place, off central's disk: the journal too
        config.write_text(
            config.read_text()
            + f'\n[backup]\npublic_key = "{public}"\ncopies = ["{copy}"]\njournal_ship_s = 1\n'
        )
        central.stop()  # central journals its own changes once [backup] is configured
        central.start()
        for i in range(devices):
            data = root / f"gate-{i:02d}"
            agents.append(
                AgentProcess(
                    data, agent_config(data, f"gate-{i:02d}", "gate", SITE, broker.url), central
                )
            )
        for agent in agents:  # enroll, then stop: events are queued into stopped outboxes
            agent.start()
        for agent in agents:
            agent.stop()
        _say(f"{devices} kiosks deliver a first lot of {events // 5} events")
        first = _queue(agents, max(events // 5, devices), seed=1)
        _deliver(agents, db, first, timeout)
        _say("backup while central runs")
        t = time.monotonic()
        backup = _cli("central", "backup", "run", "--config", str(config))
        backup_s = time.monotonic() - t
        for agent in agents:
            agent.stop()
        _say(f"{events} more events, acknowledged by central after the backup")
        later = _queue(agents, events, seed=100)
        ingest_s = _deliver(agents, db, later, timeout)
        for agent in agents:
            agent.stop()
        _say(f"{changes} changes made at central after the backup (enrollment tokens, API)")
        t = time.monotonic()
        with central.client() as api:
            for i in range(changes):
                r = api.post(
                    "/enrollments",
                    json={"device_id": f"later-{i:04d}", "site": SITE, "role": "gate"},
                )
                r.raise_for_status()
        changes_s = time.monotonic() - t
        t, made = time.monotonic(), datetime.now(UTC)

        def shipped() -> bool:  # a round that began after the last change, with none left
            doc = api.get("/backups/status").json().get("journal") or {}
            at = doc.get("at")
            return at is not None and datetime.fromisoformat(at) > made and not doc["pending"]

        with central.client() as api:
            wait_until(shipped, timeout, 0.2, "central's journal shipped")
        shipped_s = time.monotonic() - t
        held = _ids(db)
        _say("central's disk dies (SIGKILL, data directory deleted)")
        central.kill()
        safe = root / "safe"
        safe.mkdir()
        shutil.copy(config, safe / "central.toml")
        saved = shutil.copy(backup["path"], safe / Path(backup["path"]).name)
        shutil.rmtree(central.data_dir)
        _say("restore onto the empty directory")
        t = time.monotonic()
        restored = _cli(
            "central",
            "restore",
            str(saved),
            "--key",
            str(key),
            "--config",
            str(safe / "central.toml"),
        )
        restore_s = time.monotonic() - t
        again = CentralProcess(central.data_dir, broker, port=central.port)
        t = time.monotonic()
        again.start()
        central = again
        _say("kiosks reconnect and send again what the lost central had acknowledged")
        _deliver(agents, db, held, timeout)
        replay_s = time.monotonic() - t  # central's start included
        back = _ids(db)
        rows = _rows(db)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            kept = conn.execute(
                "SELECT COUNT(*) FROM enrollments WHERE device_id LIKE 'later-%'"
            ).fetchone()[0]
        return {
            "bench": "continuity",
            "phase": "restore",
            "devices": devices,
            "events_after_backup": events,
            "backup_bytes": backup["bytes"],
            "backup_s": round(backup_s, 3),
            "events_in_backup": restored["events"],
            "restore_s": round(restore_s, 3),
            "replay_s": round(replay_s, 3),
            "rto_s": round(restore_s + replay_s, 3),
            "ingest_s": round(ingest_s, 3),
            "replay_ratio": round(replay_s / ingest_s, 2) if ingest_s else None,
            "lost": len(held - back),
            "duplicated": rows - len(back),
            "central_changes": changes,
            "central_changes_s": round(changes_s, 3),
            "journal_shipped_s": round(shipped_s, 3),
            "journal_replayed": (restored.get("journal") or {}).get("replayed"),
            "central_changes_lost": changes - int(kept),
            "targets": {
                "lost==0": not (held - back),
                "duplicated==0": rows == len(back),
                "central_changes_lost==0": kept == changes,
            },
        }
    finally:
        for agent in agents:
            agent.stop()
        central.stop()
        broker.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def bench_phases(args: Any) -> dict[str, Any]:
    """The phases ``--phase`` names; with several, one object holding each, and their
    targets merged (prefixed by phase)."""
    from biblioedge.bench.continuity_reconnect import bench_reconnect
    from biblioedge.bench.continuity_replicas import bench_replicas

    runs: dict[str, Any] = {
        "restore": lambda: bench_restore(
            events=args.events, devices=args.devices, work_dir=args.work_dir
        ),
        "replicas": lambda: bench_replicas(
            events=args.events,
            devices=max(args.devices, 2),
            work_dir=args.work_dir and args.work_dir / "replicas",
            postgres_url=args.postgres_url,
        ),
        "reconnect": lambda: bench_reconnect(
            kiosks=args.kiosks,
            events=args.events_per_kiosk,
            baseline_kiosks=args.baseline_kiosks,
            work_dir=args.work_dir and args.work_dir / "reconnect",
            replicas=args.replicas,
            # one empty database per phase: with --phase all, replicas has used the given one
            postgres_url=args.postgres_url if args.phase == "reconnect" else None,
        ),
    }
    if args.phase != "all":
        result: dict[str, Any] = runs[args.phase]()
        return result
    phases = {name: run() for name, run in runs.items()}
    return {
        "bench": "continuity",
        "phases": phases,
        "targets": {f"{n}:{t}": ok for n, r in phases.items() for t, ok in r["targets"].items()},
    }

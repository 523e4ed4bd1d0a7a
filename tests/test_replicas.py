"""Central replicas on PostgreSQL (issue 24 deliver 5), on real processes: mosquitto with
mutual TLS, two ``central`` processes with ``[replica]``, kiosk agents, the session's
PostgreSQL cluster (a database of its own per test)."""

from __future__ import annotations

import os
import signal
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from biblioedge.bench.continuity_replicas import Fleet, ReplicaProcess, replica_extra
from biblioedge.demo.launch import wait_until
from biblioedge.fleet.config import load_central_config
from biblioedge.fleet.replicas import Fenced, Lease, ReplicaConfig, prepare_schema
from biblioedge.fleet.repo import Repo
from biblioedge.provisioning.broker import mosquitto_acl
from biblioedge.settings import ConfigError


@pytest.fixture
def db_url(postgres_url: str) -> Iterator[str]:
    name = f"rep_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield f"{postgres_url.rsplit('/', 1)[0]}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def fleet(tmp_path: Path, db_url: str) -> Iterator[Fleet]:
    # a short lease keeps the test short; the takeover target (10 s) is bench continuity's
    made = Fleet(tmp_path, db_url, devices=2, lease_s=3.0, renew_s=0.5)
    try:
        made.start()
        yield made
    finally:
        made.stop()


def _leader(fleet: Fleet) -> str:
    wait_until(lambda: fleet.leader()[0] is not None, 60, 0.1, "a leader")
    leader = fleet.leader()[0]
    assert leader is not None
    return leader


def test_leader_killed_mid_stream_another_takes_over_and_nothing_is_lost_or_doubled(
    fleet: Fleet,
) -> None:
    fleet.b.start()
    first = _leader(fleet)
    _, epoch = fleet.leader()
    ids = fleet.queue(3000, seed=7)
    for agent in fleet.agents:
        agent.start()
    wait_until(lambda: len(fleet.ids()) >= 500, 300, 0.05, "some events in")
    fleet.replica(first).kill()
    wait_until(lambda: fleet.leader()[0] not in (None, first), 60, 0.1, "the other to lead")
    second, new_epoch = fleet.leader()
    assert new_epoch > epoch  # the fencing token moved on with the leadership
    wait_until(lambda: ids <= fleet.ids(), 300, 0.2, "every event")
    # exactly once, though the killed replica held some (the kiosks' own events are there too)
    assert fleet.rows() == len(fleet.ids())
    survivor = fleet.replica(second or "")
    wait_until(
        lambda: f"replica {second} leads" in survivor.log_tail(200), 30, 0.2, "its jobs start"
    )


def test_both_replicas_ingest_and_serve_the_api(fleet: Fleet) -> None:
    import httpx

    fleet.b.start()
    ids = fleet.queue(2000, seed=3)
    fleet.deliver(ids, 300)
    assert fleet.rows() == len(fleet.ids())
    for log in (fleet.a.log_path, fleet.b.log_path):
        assert "Traceback" not in log.read_text()

    # /health names each replica, and exactly one of them leads
    def leaders() -> list[bool]:
        out = []
        for port in (fleet.a.port, fleet.b.port):
            doc = httpx.get(f"https://127.0.0.1:{port}/api/v1/health", verify=ctx).json()
            assert doc["replica"] in ("a", "b")
            out.append(doc["leads"])
        return out

    ctx = ssl.create_default_context(cafile=fleet.a.ca_file)
    wait_until(lambda: sorted(leaders()) == [False, True], 60, 0.2, "one leader in /health")
    # the API answers on each replica, with the same tokens (they live in the database)
    for port in (fleet.a.port, fleet.b.port):
        with httpx.Client(
            base_url=f"https://127.0.0.1:{port}/api/v1",
            headers={"Authorization": f"Bearer {fleet.a.token}"},
            verify=ssl.create_default_context(cafile=fleet.a.ca_file),
            timeout=30,
        ) as api:
            r = api.get("/devices")
            assert r.status_code == 200, r.text
            assert {d["device_id"] for d in r.json()} >= {a.device_id for a in fleet.agents}


def test_a_paused_leader_is_fenced_and_steps_down(fleet: Fleet) -> None:
    fleet.b.start()
    first = _leader(fleet)
    paused = fleet.replica(first)
    _, epoch = fleet.leader()
    os.kill(paused.pid, signal.SIGSTOP)  # a VM stall, a network pause: no renewal
    try:
        wait_until(lambda: fleet.leader()[0] not in (None, first), 60, 0.1, "a takeover")
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    wait_until(
        lambda: f"replica {first} no longer leads" in paused.log_tail(200),
        60,
        0.2,
        "the paused replica to step down",
    )
    holder, new_epoch = fleet.leader()
    assert holder != first and new_epoch == epoch + 1
    assert paused.alive()  # it stays a replica: API and ingest, no leader's jobs


def test_fencing_refuses_the_old_leaders_writes(db_url: str) -> None:
    repo = Repo(db_url)
    try:
        prepare_schema(repo, ReplicaConfig(id="a"), lambda: repo.migrate(b"k" * 32))
        a = Lease(db_url, "a", lease_s=2.0)
        b = Lease(db_url, "b", lease_s=2.0)
        assert a.try_hold() and not b.try_hold()
        writes = a.fenced(repo).engine
        with writes.begin() as conn:
            conn.execute(text("SELECT 1"))
        wait_until(b.try_hold, 30, 0.2, "b to take the expired lease")
        assert b.epoch == (a.epoch or 0) + 1
        with pytest.raises(Fenced, match="no longer holds the lease"), writes.begin() as conn:
            conn.execute(text("SELECT 1"))
        assert not a.try_hold()  # and it does not take the lease back while b renews
        writes.dispose()
        a.close()
        b.close()
    finally:
        repo.close()


def test_a_replica_on_another_schema_version_refuses_to_start(fleet: Fleet) -> None:
    engine = create_engine(fleet.db_url)
    with engine.begin() as conn:  # a newer central migrated the database
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    fleet.b.start(wait=False)
    wait_until(lambda: not fleet.b.alive(), 60, 0.1, "replica b to exit")
    assert fleet.b.returncode != 0
    assert "revision 9999, which this central (schema" in fleet.b.log_tail()
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0013'"))
        # replica "old" runs the old schema and is alive (seen "now" for the next hour: a
        # loaded machine may take longer to start c than a live replica's window)
        conn.execute(
            text(
                "INSERT INTO central_replicas VALUES "
                "('old', '0013', now(), now() + interval '1 hour')"
            )
        )
    third = ReplicaProcess(fleet.a, "c")
    third.start(wait=False)
    wait_until(lambda: not third.alive(), 60, 0.1, "replica c to exit")
    assert "while other replicas run the old one: old (schema 0013" in third.log_tail(), (
        third.log_path.read_text()[:3000]
    )
    engine.dispose()


def test_sqlite_stays_one_process(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SQLite"):
        load_central_config(overrides={"data_dir": str(tmp_path), "replica": {"id": "a"}})
    cfg = load_central_config(
        overrides={"data_dir": str(tmp_path), **replica_extra("postgresql+psycopg://x/y", "b")}
    )
    assert cfg.replica is not None and cfg.replica.bridge_id == "central-bridge-b"


def test_every_replica_bridge_reads_events_and_no_kiosk_may_take_a_bridge_name(
    fleet: Fleet,
) -> None:
    acl = mosquitto_acl([], ["central-bridge", "central-bridge-a", "central-bridge-b"])
    for user in ("central-bridge-a", "central-bridge-b"):
        assert f"user {user}\ntopic read be/+/+/events" in acl
    with fleet.a.client() as api:
        r = api.post(
            "/enrollments", json={"device_id": "central-bridge-x", "site": "s", "role": "gate"}
        )
        assert r.status_code == 400, r.text


class _Hook:
    """A chat app's webhook that holds the first POST until told (a delivery in flight)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.posts: list[str] = []
        self.holding = threading.Event()
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                if not hook.holding.is_set():
                    hook.holding.set()
                    hook.release.wait(120)
                hook.posts.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, marker: str) -> int:
        return sum(marker in p for p in self.posts)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


def _stop(proc: Any) -> None:
    """SIGTERM, then SIGKILL if it does not exit: either way it writes nothing more. A
    replica resumed from a pause sometimes does not stop on SIGTERM (its event loop idle,
    every thread idle; open, docs/operations.md): that is not what this test is about."""
    os.kill(proc.pid, signal.SIGTERM)
    try:
        wait_until(lambda: not proc.alive(), 60, 0.2, "the replica to exit")
    except Exception:
        os.kill(proc.pid, signal.SIGKILL)
        wait_until(lambda: not proc.alive(), 30, 0.2, "the replica killed")


def test_split_brain_a_paused_leader_sends_nothing_the_new_leader_sent(
    tmp_path: Path, db_url: str
) -> None:
    """The leader pauses while an alert is in flight; the other replica takes over and sends
    the queue; the paused one comes back: its next write is fenced, so of what it had read
    before the pause it sends nothing more (only the one in flight may arrive twice)."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from biblioedge.bench.continuity_replicas import ReplicaProcess
    from biblioedge.demo.launch import CentralProcess
    from biblioedge.fleet.alerts.messages import body_of
    from biblioedge.fleet.db import alert_outbox
    from biblioedge.provisioning.broker import BrokerProcess

    hook = _Hook()
    broker = BrokerProcess(tmp_path / "broker")
    os.environ["PYTHONFAULTHANDLER"] = "1"  # the replicas: a stack dump if one hangs
    alerts = {
        "allow_private": ["127.0.0.1"],
        "check_s": 1,
        "timeout_s": 120,
        "webhooks": [{"url": hook.url}],
    }
    a = CentralProcess(
        tmp_path / "central",
        broker,
        extra={**replica_extra(db_url, "a", lease_s=3.0, renew_s=0.5), "alerts": alerts},
    )
    b = ReplicaProcess(a, "b")
    engine = create_engine(db_url)

    def leader() -> str | None:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT holder FROM central_lease WHERE expires_at > now()")
            ).first()
        return None if row is None else str(row[0])

    try:
        broker.start()
        a.start()
        b.start()
        wait_until(lambda: leader() is not None, 60, 0.1, "a leader")
        first = leader()
        paused = a if first == "a" else b
        now = datetime.now(UTC)
        with engine.begin() as conn:  # three alerts queued at once: one round reads them all
            for i in (1, 2, 3):
                body = body_of("fired", "test", "central", f"marker-{i}", now, None)
                conn.execute(
                    insert(alert_outbox).values(
                        target="webhook0",
                        body=body,
                        state="pending",
                        attempts=0,
                        next_at=now,
                        created_at=now,
                    )
                )
        wait_until(hook.holding.is_set, 60, 0.1, "the first alert in flight")
        os.kill(paused.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: leader() not in (None, first), 60, 0.1, "a takeover")
            # the new leader sends the whole queue, the one in flight included
            wait_until(
                lambda: (
                    all(hook.count(f"marker-{i}") == 1 for i in (2, 3))
                    and hook.count("marker-1") >= 1
                ),
                120,
                0.2,
                "the new leader's alerts",
            )
        finally:
            hook.release.set()  # the held delivery is answered: the paused one reads it
            os.kill(paused.pid, signal.SIGCONT)
        wait_until(
            lambda: f"replica {first} no longer leads" in paused.log_tail(200),
            60,
            0.2,
            "the paused replica to step down",
        )
        _stop(paused)  # its threads finished or killed: what it would write, it has tried
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT state, attempts FROM alert_outbox WHERE target = 'webhook0'")
            ).all()
        # the paused one's "sent" for the held alert was refused: one attempt each, by the leader
        assert sorted(tuple(r) for r in rows) == [("sent", 1)] * 3
        assert hook.count("marker-2") == 1 and hook.count("marker-3") == 1
        assert hook.count("marker-1") == 2  # the one in flight at the pause: at least once
    finally:
        os.environ.pop("PYTHONFAULTHANDLER", None)
        hook.close()
        for proc in (a, b):
            if proc.alive():
                proc.stop()
        broker.stop()
        engine.dispose()


def test_the_old_leaders_library_system_worker_is_fenced(db_url: str, tmp_path: Path) -> None:
    """The leader's library-system worker (central.py gives it the fenced repository): back
    from a pause it cannot even read its queue, so it pushes nothing the new leader pushes."""
    from biblioedge.fleet.ils.settings import IlsConfig
    from biblioedge.fleet.ils.worker import IlsWorker, open_connector
    from biblioedge.fleet.readers import Readers
    from biblioedge.keys import load_or_create_key

    repo = Repo(db_url)
    key = load_or_create_key(tmp_path / "t.key")
    try:
        prepare_schema(repo, ReplicaConfig(id="a"), lambda: repo.migrate(key))
        a = Lease(db_url, "a", lease_s=2.0)
        b = Lease(db_url, "b", lease_s=2.0)
        assert a.try_hold()
        fenced = a.fenced(repo)
        cfg = IlsConfig.model_validate(
            {"url": "koha+http://koha:koha@127.0.0.1:9/", "timeout_s": 1.0}
        )
        worker = IlsWorker(cfg, fenced, Readers(fenced, key), open_connector(cfg))
        assert worker.step() == 0  # leading: its (empty) queue read
        wait_until(b.try_hold, 30, 0.2, "b to take the expired lease")
        with pytest.raises(Fenced, match="no longer holds the lease"):
            worker.step()
        fenced.engine.dispose()
        a.close()
        b.close()
    finally:
        repo.close()


_RESIGN = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from biblioedge.fleet.releases import ReleaseRepo

root = Path(sys.argv[1])
repo = ReleaseRepo(root / "releases", root / "keys")
for _ in range(int(sys.argv[2])):
    assert repo.refresh(now=datetime(2199, 1, 1, tzinfo=UTC))  # always due
"""


def test_two_replicas_resigning_the_tuf_metadata_at_once_never_reuse_a_version(
    tmp_path: Path,
) -> None:
    """Two processes on one release repository (replicas on a shared data directory, or a
    paused leader back beside the new one) re-sign the snapshot and timestamp at once: each
    re-signing starts from the newest version on disk, so none is written twice."""
    import json
    import subprocess
    import sys

    from biblioedge.fleet.releases import ReleaseRepo
    from biblioedge.provisioning.tuf_offline import init_keys

    repo = ReleaseRepo(tmp_path / "releases", tmp_path / "keys")
    root, targets = init_keys(tmp_path / "offline", repo.online_public())
    repo.set_root(root)
    repo.publish(targets)
    first = json.loads((tmp_path / "releases" / "metadata" / "timestamp.json").read_text())
    runs = 15
    procs = [
        subprocess.Popen([sys.executable, "-c", _RESIGN, str(tmp_path), str(runs)])
        for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    meta = tmp_path / "releases" / "metadata"
    versions = sorted(int(p.name.split(".")[0]) for p in meta.glob("*.snapshot.json"))
    start = versions[0]
    assert versions == list(range(start, start + len(versions)))
    assert versions[-1] - start == 2 * runs  # every re-signing got a version of its own
    last = json.loads((meta / "timestamp.json").read_text())
    assert last["signed"]["version"] == first["signed"]["version"] + 2 * runs
    assert last["signed"]["meta"]["snapshot.json"]["version"] == versions[-1]

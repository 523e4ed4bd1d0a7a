"""Central's backups and restore: the container refuses every damaged byte, the retention
rule keeps what it says, and a restore drill on real processes (broker, central, a kiosk)
brings central back with its CA, keys and data so that the kiosk reconnects unenrolled and
sends again what the lost central had acknowledged after the backup."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import create_engine, text

from biblioedge.demo.launch import CentralProcess, wait_until
from biblioedge.fleet.backup import Layout
from biblioedge.fleet.backup.container import (
    CHUNK,
    MAGIC,
    BackupError,
    ChunkReader,
    Writer,
    open_chunks,
    read_header,
)
from biblioedge.fleet.backup.make import make_backup
from biblioedge.fleet.backup.restore import data_dir_lock, restore, verify
from biblioedge.fleet.backup.retention import keep, listed, prune
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.repo import Repo
from biblioedge.keys import load_or_create_key
from biblioedge.provisioning.broker import BrokerProcess

CLI = [sys.executable, "-m", "biblioedge"]


def sealed(payload: bytes, key: x25519.X25519PrivateKey) -> bytes:
    out = io.BytesIO()
    w = Writer(
        out,
        key.public_key(),
        backup_id="b1",
        created="2026-12-06T00:00:00+00:00",
        central_id="c" * 16,
    )
    w.write(payload)
    w.close()
    return out.getvalue()


def opened(blob: bytes, key: x25519.X25519PrivateKey) -> bytes:
    src = io.BytesIO(blob)
    reader = ChunkReader(open_chunks(src, read_header(src), key))
    data = reader.read()
    reader.drain()
    return data


# -- the container -------------------------------------------------------------------------


def _first_chunk(blob: bytes) -> int:
    """Where the first sealed chunk starts: after the magic, the header and its length."""
    start = len(MAGIC) + 4
    (length,) = struct.unpack(">I", blob[len(MAGIC) : start])
    return start + length + 4


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :]


def test_container_round_trip_over_several_chunks() -> None:
    key = x25519.X25519PrivateKey.generate()
    payload = os.urandom(2 * CHUNK + 12345)
    assert opened(sealed(payload, key), key) == payload
    assert opened(sealed(b"", key), key) == b""


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b + b"x", "after the last chunk"),
        (lambda b: _flip(b, _first_chunk(b) + 100), "fails authentication"),
        (lambda b: b[:-5] + bytes([b[-5] ^ 0x80]) + b[-4:], "fails authentication"),
        (lambda b: b"NOT-A-BACKUP" + b, "not a biblioedge backup"),
        (lambda b: b[:30], "header"),
    ],
    ids=["last-byte-cut", "half", "trailing", "flip-early", "flip-late", "magic", "header-cut"],
)
def test_a_damaged_backup_is_refused_with_the_reason(damage: Any, reason: str) -> None:
    """Each damage refused at its place: a bit flipped in the first chunk's ciphertext fails
    its authentication, one flipped in the header is a corrupt header."""
    key = x25519.X25519PrivateKey.generate()
    blob = sealed(os.urandom(CHUNK + 999), key)
    with pytest.raises(BackupError, match=reason):
        opened(damage(blob), key)


def test_a_dropped_or_swapped_chunk_is_refused() -> None:
    key = x25519.X25519PrivateKey.generate()
    blob = sealed(os.urandom(3 * CHUNK), key)
    src = io.BytesIO(blob)
    read_header(src)
    start = src.tell()
    size = 4 + CHUNK + 16
    first, second = blob[start : start + size], blob[start + size : start + 2 * size]
    swapped = blob[:start] + second + first + blob[start + 2 * size :]
    dropped = blob[:start] + blob[start + size :]
    for bad in (swapped, dropped):
        with pytest.raises(BackupError, match="chunk 0 fails authentication"):
            opened(bad, key)


def test_a_backup_sealed_to_another_key_names_both_keys() -> None:
    blob = sealed(b"secret", x25519.X25519PrivateKey.generate())
    with pytest.raises(BackupError, match="sealed to backup key [0-9a-f]{16}, not to the given"):
        opened(blob, x25519.X25519PrivateKey.generate())


# -- retention -----------------------------------------------------------------------------

T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stamps", "rule", "kept"),
    [
        # two a day for ten days, keep 3 daily: the newest of each of the last 3 days
        (
            [T0 - timedelta(days=d, hours=h) for d in range(10) for h in (0, 1)],
            (3, 0, 0),
            {T0, T0 - timedelta(days=1), T0 - timedelta(days=2)},
        ),
        # daily for 5 weeks, keep 0 daily and 2 weekly: newest of this ISO week and the last
        (
            [T0 - timedelta(days=d) for d in range(35)],
            (0, 2, 0),
            {T0, datetime(2026, 11, 29, 2, 0, tzinfo=UTC)},
        ),
        # monthly: newest of December and of November
        (
            [T0 - timedelta(days=d) for d in range(70)],
            (0, 0, 2),
            {T0, datetime(2026, 11, 30, 2, 0, tzinfo=UTC)},
        ),
        # nothing to keep by the rule: the newest one still stays
        ([T0, T0 - timedelta(days=1)], (0, 0, 0), {T0}),
        ([], (7, 4, 12), set()),
    ],
    ids=["daily", "weekly", "monthly", "newest-always", "none"],
)
def test_retention_keeps_what_the_rule_says(
    stamps: list[datetime], rule: tuple[int, int, int], kept: set[datetime]
) -> None:
    assert keep(stamps, *rule) == kept


def test_prune_removes_only_backups_the_rule_drops(tmp_path: Path) -> None:
    for d in range(5):
        stamp = (T0 - timedelta(days=d)).strftime("%Y%m%dT%H%M%SZ")
        (tmp_path / f"biblioedge-backup-{'a' * 16}-{stamp}.bebk").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a backup")
    removed = prune(tmp_path, 2, 0, 0)
    assert len(removed) == 3
    assert sorted(listed(tmp_path)) == [T0 - timedelta(days=1), T0]
    assert (tmp_path / "notes.txt").exists()


# -- a central on disk ----------------------------------------------------------------------


def _central(data_dir: Path, db_url: str | None = None) -> tuple[CentralConfig, Layout]:
    """A migrated central with its identity, as `central init` leaves it."""
    from biblioedge.fleet.central import open_identity

    doc: dict[str, Any] = {"data_dir": data_dir, "security": {"require": False}}
    if db_url:
        doc["database_url"] = db_url
    cfg = CentralConfig.model_validate(doc)
    data_dir.mkdir(parents=True, exist_ok=True)
    repo = Repo(cfg.db_url)
    try:
        repo.migrate(load_or_create_key(data_dir / "keys" / "templates.key"))
        open_identity(cfg, repo)
    finally:
        repo.close()
    return cfg, Layout.of(cfg, None)


def _add_events(db_url: str, n: int, start: int = 1) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        for seq in range(start, start + n):
            conn.execute(
                text(
                    "INSERT INTO events (event_id, device_id, site, type, seq, occurred_at, "
                    "received_at, payload) VALUES (:e, 'gate-01', 'tv-tinh', 'gate.decision', "
                    ":s, :t, :t, '{}')"
                ),
                {"e": f"ev-{seq}", "s": seq, "t": datetime(2026, 12, 1, tzinfo=UTC)},
            )
    engine.dispose()


def _event_ids(db_url: str) -> set[str]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        ids = {r[0] for r in conn.execute(text("SELECT event_id FROM events"))}
    engine.dispose()
    return ids


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith((".sqlite3-wal", ".sqlite3-shm", ".lock"))
    }


def test_refusals_happen_before_anything_is_overwritten(tmp_path: Path) -> None:
    key = x25519.X25519PrivateKey.generate()
    cfg, layout = _central(tmp_path / "a")
    _add_events(cfg.db_url, 5)
    made = make_backup(layout, key.public_key())
    # another central with data of its own
    other_cfg, other = _central(tmp_path / "b")
    _add_events(other_cfg.db_url, 2, start=100)
    before = _tree(tmp_path / "b")

    with pytest.raises(BackupError, match="is central [0-9a-f]{16}; the backup is of central"):
        restore(made.path, key, other)
    with pytest.raises(BackupError, match="not to the given key"):
        restore(made.path, x25519.X25519PrivateKey.generate(), other)
    cut = tmp_path / "cut.bebk"
    cut.write_bytes(made.path.read_bytes()[:-100])
    with pytest.raises(BackupError, match="truncated"):
        restore(cut, key, other)
    with data_dir_lock(other.data_dir), pytest.raises(BackupError, match="central is running"):
        restore(made.path, key, other)
    # the same central, not empty: refused without --force
    with pytest.raises(BackupError, match="not empty"):
        restore(made.path, key, layout)
    assert _tree(tmp_path / "b") == before
    assert not list(tmp_path.glob(".restore-*"))  # staging is cleaned up

    # --force replaces it, and keeps what was there aside
    record = restore(made.path, key, other, force=True)
    assert _event_ids(other_cfg.db_url) == {f"ev-{i}" for i in range(1, 6)}
    aside = Path(record["set_aside"])
    assert (aside / "central.sqlite3").exists() and (aside / "keys" / "device-ca.crt").exists()
    assert (other.data_dir / "keys" / "device-ca.crt").read_bytes() == (
        layout.data_dir / "keys" / "device-ca.crt"
    ).read_bytes()


def test_a_backup_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    key = x25519.X25519PrivateKey.generate()
    cfg, layout = _central(tmp_path / "a")
    with sqlite3.connect(tmp_path / "a" / "central.sqlite3") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    made = make_backup(layout, key.public_key())
    _, target = _central(tmp_path / "fresh")
    shutil.rmtree(tmp_path / "fresh")
    with pytest.raises(BackupError, match="does not know"):
        restore(made.path, key, target)
    assert not (tmp_path / "fresh" / "keys").exists()


def test_postgresql_backup_restores_into_an_empty_database(
    tmp_path: Path, postgres_url: str
) -> None:
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in ("bk_src", "bk_dst"):
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            conn.execute(text(f"CREATE DATABASE {name}"))
    base = postgres_url.rsplit("/", 1)[0]
    try:
        key = x25519.X25519PrivateKey.generate()
        cfg, layout = _central(tmp_path / "src", f"{base}/bk_src")
        _add_events(cfg.db_url, 50)
        made = make_backup(layout, key.public_key())
        assert made.events == 50
        assert verify(made.path, key)["database"] == "postgresql"
        # the target: a fresh machine pointing at an empty database
        target = Layout.of(
            CentralConfig.model_validate(
                {"data_dir": tmp_path / "dst", "database_url": f"{base}/bk_dst"}
            ),
            None,
        )
        restore(made.path, key, target)
        assert _event_ids(f"{base}/bk_dst") == {f"ev-{i}" for i in range(1, 51)}
        # now it has data: a second restore needs --force, and keeps a dump of what it replaces
        with pytest.raises(BackupError, match="not empty"):
            restore(made.path, key, target)
        record = restore(made.path, key, target, force=True)
        assert (Path(record["set_aside"]) / "central.pgdump").stat().st_size > 0
    finally:
        with admin.connect() as conn:
            for name in ("bk_src", "bk_dst"):
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


# -- the drill on real processes ------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def _ids(central: CentralProcess) -> set[str]:
    with sqlite3.connect(f"file:{central.data_dir / 'central.sqlite3'}?mode=ro", uri=True) as db:
        return {r[0] for r in db.execute("SELECT event_id FROM events")}


def _count(central: CentralProcess) -> int:
    with sqlite3.connect(f"file:{central.data_dir / 'central.sqlite3'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


@pytest.mark.integration
def test_restore_drill_central_comes_back_and_its_kiosk_reconnects_unenrolled(
    tmp_path: Path, broker: BrokerProcess, central: CentralProcess, make_agent: Any
) -> None:
    keygen = _cli("central", "backup", "keygen", "--out", str(tmp_path / "backup.key"), "--json")
    assert keygen.returncode == 0, keygen.stderr
    public = json.loads(keygen.stdout)["public_key"]
    config = central.data_dir / "central.toml"
    config.write_text(config.read_text() + f'\n[backup]\npublic_key = "{public}"\n')

    gate = make_agent("gate-01", simulator={"enabled": True, "rate_per_s": 20.0})
    gate.start()
    wait_until(lambda: _count(central) >= 20, 120, 0.2, "the gate's first events")

    run = _cli("central", "backup", "run", "--config", str(config), "--json")  # central runs
    assert run.returncode == 0, run.stderr
    made = json.loads(run.stdout)
    assert "backup: files 100%" in run.stderr  # progress shown
    backed_up = made["events"]
    assert backed_up >= 20
    ca_before = central.ca_file.read_bytes()
    listing = _cli("central", "backup", "list", "--config", str(config), "--json")
    assert json.loads(listing.stdout)["last"]["backup_id"] == made["backup_id"]

    # a restore onto the running central is refused, and changes nothing
    refused = _cli(
        "central",
        "restore",
        made["path"],
        "--key",
        str(tmp_path / "backup.key"),
        "--config",
        str(config),
        "--force",
    )
    assert refused.returncode == 2 and "central is running" in refused.stderr

    wait_until(lambda: _count(central) > backed_up + 20, 120, 0.2, "events after the backup")
    gate.stop()
    assert central.stop() == 0
    before_loss = _ids(central)
    assert len(before_loss) > backed_up  # central acknowledged events the backup lacks
    # the disk dies: only the config (kept by IT) and the backup (on another disk) survive
    saved = tmp_path / "safe"
    saved.mkdir()
    shutil.copy(config, saved / "central.toml")
    backup = shutil.copy(made["path"], saved / Path(made["path"]).name)
    shutil.rmtree(central.data_dir)

    restored = _cli(
        "central",
        "restore",
        str(backup),
        "--key",
        str(tmp_path / "backup.key"),
        "--config",
        str(saved / "central.toml"),
        "--json",
    )
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["events"] == backed_up

    again = CentralProcess(central.data_dir, broker, port=central.port)
    assert again.token == central.token  # the admin token came back with the database
    assert again.ca_file.read_bytes() == ca_before  # same CA: kiosks trust it unchanged
    assert _count(again) == backed_up
    conf = again.data_dir / "central.toml"
    conf.write_text(conf.read_text() + f'\n[backup]\npublic_key = "{public}"\n')
    again.start()
    try:
        gate.start()  # no new enrollment: its certificate still opens the broker
        # asked once to send again what it kept: nothing acknowledged by the lost central is lost
        wait_until(lambda: before_loss <= _ids(again), 120, 0.2, "the replayed events")
        with sqlite3.connect(f"file:{again.data_dir / 'central.sqlite3'}?mode=ro", uri=True) as db:
            assert db.execute(
                "SELECT COUNT(*) - COUNT(DISTINCT event_id) FROM events"
            ).fetchone() == (0,)
        assert json.loads((again.data_dir / "replay-asked.json").read_text())["devices"] == [
            "gate-01"
        ]
        # the gate says it carried the ask out: central stops asking it
        wait_until(
            lambda: (
                json.loads((again.data_dir / "replay-asked.json").read_text())["done"]
                == ["gate-01"]
            ),
            60,
            0.2,
            "the gate's replay reported done",
        )
        with again.client() as api:
            assert api.get("/devices/gate-01").json()["device_id"] == "gate-01"
            # the restored central has made no backup yet: degraded, but still serving
            r = api.get("/health")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "degraded"
            assert r.json()["problems"] == ["backup: none made yet"]
    finally:
        gate.stop()
        assert again.stop() == 0, again.log_tail()


def test_a_kiosk_is_asked_again_until_it_says_it_replayed(tmp_path: Path) -> None:
    from biblioedge.fleet.backup.replay import RETRY_S, Replays

    def restored(at: str) -> None:
        (tmp_path / "restored.json").write_text(
            json.dumps(
                {"backup_id": "b" * 32, "restored_at": at, "point": {"g1": {"complete_to": 7}}}
            )
        )

    restored("2026-12-06T10:00:00+00:00")
    r = Replays(tmp_path)
    assert r.due("g1", now=1000.0) == 7 and r.due("g2", now=1000.0) == 0  # g2: unknown
    r.asked("g1", now=1000.0)
    assert r.due("g1", now=1000.0 + RETRY_S / 2) is None  # just asked
    # it never said it did (offline for the whole ask): asked again, less and less often
    assert r.due("g1", now=1000.0 + RETRY_S) == 7
    r.asked("g1", now=1000.0 + RETRY_S)
    assert r.due("g1", now=1000.0 + 2 * RETRY_S) is None
    assert r.due("g1", now=1000.0 + 3 * RETRY_S) == 7
    # a report of another replay settles nothing; its own does, and survives a restart
    assert r.request_id is not None
    assert not r.reported("g1", "another-restore") and not r.reported("g1", None)
    assert r.reported("g1", r.request_id)
    assert r.due("g1", now=1e12) is None
    assert Replays(tmp_path).due("g1", now=1e12) is None
    assert Replays(tmp_path).status()["done"] == ["g1"]
    # the same backup restored again later: a new ask, the old answer does not count
    restored("2026-12-07T10:00:00+00:00")
    again = Replays(tmp_path)
    assert again.due("g1", now=1000.0) == 7
    assert not again.reported("g1", r.request_id)


# -- schedule and health --------------------------------------------------------------------


async def test_central_schedule_makes_backups_and_health_reports_their_age(
    tmp_path: Path,
) -> None:
    import asyncio

    from fastapi.testclient import TestClient

    from biblioedge.fleet.api import create_app
    from biblioedge.fleet.backup import STATUS
    from biblioedge.fleet.central import backup_loop
    from biblioedge.fleet.metrics import CentralMetrics
    from biblioedge.provisioning.sealing import x25519_public_b64

    key = x25519.X25519PrivateKey.generate()
    base, _ = _central(tmp_path / "c")
    cfg = base.model_copy(
        update={
            "backup": base.backup.model_copy(
                update={"public_key": x25519_public_b64(key), "every_h": 0.01, "keep_daily": 2}
            )
        }
    )
    repo = Repo(cfg.db_url)
    try:
        health = TestClient(create_app(cfg, repo, None, CentralMetrics()))
        body = health.get("/api/v1/health").json()
        assert "backup: none made yet" in body["problems"] and body["backup_age_h"] is None

        task = asyncio.create_task(backup_loop(cfg, None))
        try:
            for _ in range(600):
                if len(listed(cfg.backup_dir)) >= 1 and (tmp_path / "c" / STATUS).exists():
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
        made = listed(cfg.backup_dir)
        assert made, "the schedule made no backup"
        assert verify(next(iter(made.values())), key)["central_id"]
        body = health.get("/api/v1/health").json()
        assert not any(p.startswith("backup") for p in body["problems"])
        assert body["backup_age_h"] is not None and body["backup_age_h"] < 1

        # two days later, the backup is stale (no bridge here: degraded anyway; the drill
        # shows that a backup problem alone keeps the HTTP code 200)
        status = json.loads((tmp_path / "c" / STATUS).read_text())
        status["created"] = (datetime.now(UTC) - timedelta(days=2)).isoformat()
        (tmp_path / "c" / STATUS).write_text(json.dumps(status))
        r = health.get("/api/v1/health")
        assert r.json()["status"] == "degraded"
        assert any(p.startswith("backup: the last one is 48 h old") for p in r.json()["problems"])
    finally:
        repo.close()

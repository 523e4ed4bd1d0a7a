"""Changes made at central after its last backup survive the loss of its disk: each API or
CLI transaction is journaled (sealed to the backup key, MAC-chained), shipped to the backup
places, and replayed exactly once by ``central restore``; a journal of another central, an
altered record or a broken chain is refused before anything is overwritten. On real
processes: a kiosk revoked after the backup stays out after the restore."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import create_engine, text

from biblioedge.demo.launch import CentralProcess, wait_until
from biblioedge.fleet.backup import Layout
from biblioedge.fleet.backup.container import BackupError
from biblioedge.fleet.backup.journal import (
    STATUS,
    attach,
    collect,
    journaled,
    open_keys,
    places_of,
    replay,
    ship_once,
    shipping_problems,
)
from biblioedge.fleet.backup.make import make_backup
from biblioedge.fleet.backup.restore import restore
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.store.tokens import Tokens
from biblioedge.keys import load_or_create_key
from biblioedge.provisioning.broker import BrokerProcess
from biblioedge.provisioning.sealing import x25519_public_b64

CLI = [sys.executable, "-m", "biblioedge"]


def _central(
    root: Path, key: x25519.X25519PrivateKey, name: str = "a", db_url: str | None = None
) -> CentralConfig:
    """A migrated central with its identity, backups to a place off its disk and a copy."""
    from biblioedge.fleet.central import open_identity

    cfg = CentralConfig.model_validate(
        {
            **({"database_url": db_url} if db_url else {}),
            "data_dir": root / name,
            "security": {"require": False},
            "backup": {
                "public_key": x25519_public_b64(key.public_key()),
                "dir": root / "safe" / name,
                "copies": [root / "copy" / name],
            },
        }
    )
    cfg.data_dir.mkdir(parents=True)
    repo = Repo(cfg.db_url)
    try:
        repo.migrate(load_or_create_key(cfg.data_dir / "keys" / "templates.key"))
        open_identity(cfg, repo)
    finally:
        repo.close()
    return cfg


class Central:
    """The central's database with the journal attached, as ``central`` runs it."""

    def __init__(self, cfg: CentralConfig) -> None:
        self.cfg = cfg
        self.repo = Repo(cfg.db_url)
        keys = open_keys(cfg)
        assert keys is not None
        self.cid = keys.central_id
        attach(self.repo.engine, keys)
        self.readers = Readers(
            self.repo, load_or_create_key(cfg.data_dir / "keys" / "templates.key")
        )
        self.tokens = Tokens(self.repo)

    def ship(self) -> dict[str, Any]:
        places = places_of(self.cfg, self.cid)
        return ship_once(self.repo.engine, places, self.cfg.data_dir / STATUS)

    def audit(self, path: str) -> None:
        with self.repo.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_log (at, actor, role, method, path, status) "
                    "VALUES (:t, 'lan', 'admin', 'POST', :p, 200)"
                ),
                {"t": datetime(2026, 12, 6, tzinfo=UTC), "p": path},
            )

    def close(self) -> None:
        self.repo.close()


def _rows(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


@pytest.fixture
def key() -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.generate()


@pytest.fixture
def lost(tmp_path: Path, key: x25519.X25519PrivateKey) -> Iterator[tuple[CentralConfig, Path, str]]:
    """A central that made a backup, then changes, shipped, then lost its disk."""
    cfg = _central(tmp_path, key)
    c = Central(cfg)
    with journaled("test"):
        _, early = c.tokens.create("early", "admin")
        c.readers.upsert("P1", site="tv-tinh", display_name="Nguyễn Văn An")
        c.readers.upsert("P2", site="tv-tinh", display_name="Trần Thị Bình")
    made = make_backup(Layout.of(cfg, None), key.public_key())
    with journaled("test"):
        c.tokens.create("late", "viewer")
        c.tokens.revoke("early")
        c.readers.erase("P1")
        c.audit("/journaled-1")
    c.audit("/ingest-like")  # not journaled: a kiosk gives it back, not the journal
    with journaled("test"):
        c.audit("/journaled-2")
        with c.repo.engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET status = 201 WHERE path = '/journaled-2'"))
    shipped = c.ship()
    assert shipped["pending"] == 0 and all(p["ok"] for p in shipped["places"])
    # shipped everywhere: the database keeps only the chain's head
    assert _rows(cfg.db_url, "SELECT seq FROM central_journal") == [(9,)]
    ids = _rows(cfg.db_url, "SELECT id, path FROM audit_log ORDER BY id")
    assert ids == [(1, "/journaled-1"), (2, "/ingest-like"), (3, "/journaled-2")]
    c.close()
    shutil.rmtree(cfg.data_dir)  # the disk dies; the backup places survive
    yield cfg, made.path, early


def test_changes_after_the_backup_are_replayed_once(
    lost: tuple[CentralConfig, Path, str], key: x25519.X25519PrivateKey
) -> None:
    cfg, backup, early = lost
    record = restore(backup, key, Layout.of(cfg, None), journal=lambda cid: places_of(cfg, cid))
    assert record["journal"]["replayed"] == 6  # one per transaction after the backup
    tokens = Tokens(create_engine(cfg.db_url))
    assert tokens.check(early) is None  # revoked after the backup: stays revoked
    assert {t["name"] for t in tokens.list()} >= {"late"}
    assert _rows(cfg.db_url, "SELECT patron_id FROM readers") == [("P2",)]  # P1's erasure
    # the rows keep the ids the lost central gave them, and a later change found its row
    assert _rows(cfg.db_url, "SELECT id, path, status FROM audit_log ORDER BY id") == [
        (1, "/journaled-1", 200),
        (3, "/journaled-2", 201),
    ]
    # replaying again (a restore run twice) applies nothing twice
    c = Central(cfg)
    keys = open_keys(cfg)
    assert keys is not None
    found = collect(places_of(cfg, c.cid), c.cid, keys.mac_key, 0, "")
    assert len(found.records) == 9
    assert replay(c.repo.engine, found, key)["replayed"] == 0
    # and the restored central journals on from there: its next change chains on
    with journaled("test"):
        c.tokens.create("after-restore", "viewer")
    assert c.ship()["shipped_to"] == 10
    c.close()
    status = json.loads((cfg.data_dir / STATUS).read_text())
    assert status["pending"] == 0


def _records(cfg: CentralConfig, place: str = "copy") -> list[Path]:
    root = cfg.backup.copies[0] if place == "copy" else cfg.backup_dir
    return sorted((root / "journal").glob("*/*.bej"))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("drop_middle", "broken journal chain: record 5 is missing"),
        ("flip_byte", "fails its MAC"),
        ("other_central", "fails its MAC"),
    ],
)
def test_a_bad_journal_is_refused_before_anything_is_written(
    lost: tuple[CentralConfig, Path, str],
    key: x25519.X25519PrivateKey,
    tmp_path: Path,
    damage: str,
    reason: str,
) -> None:
    cfg, backup, _ = lost
    foreign = b""
    if damage == "other_central":  # another central's record 6, where this one's belongs
        other = _central(tmp_path / "other", key, "b")
        o = Central(other)
        with journaled("test"):
            for i in range(6):
                o.tokens.create(f"o{i}", "viewer")
        o.ship()
        o.close()
        foreign = _records(other)[5].read_bytes()
    for place in ("safe", "copy"):  # the same damage in every place
        records = _records(cfg, place)
        if damage == "drop_middle":
            records[4].unlink()  # records 1-3 are in the backup
        elif damage == "flip_byte":
            blob = bytearray(records[5].read_bytes())
            blob[len(blob) // 2] ^= 1
            records[5].write_bytes(bytes(blob))
        else:
            records[5].write_bytes(foreign)
    with pytest.raises(BackupError, match=reason):
        restore(backup, key, Layout.of(cfg, None), journal=lambda cid: places_of(cfg, cid))
    assert {p.name for p in cfg.data_dir.iterdir()} <= {"central.lock"}  # nothing restored


def test_a_journal_sealed_to_another_backup_key_is_refused(
    lost: tuple[CentralConfig, Path, str], key: x25519.X25519PrivateKey, tmp_path: Path
) -> None:
    cfg, backup, _ = lost
    # the records open with the backup's key only: a restore with the right backup but a
    # journal written after the key changed says so, and writes nothing
    wrong = x25519.X25519PrivateKey.generate()
    with pytest.raises(BackupError, match="not to the given key"):
        restore(backup, wrong, Layout.of(cfg, None), journal=lambda cid: places_of(cfg, cid))
    assert {p.name for p in cfg.data_dir.iterdir()} <= {"central.lock"}  # nothing restored


def test_a_record_missing_from_one_place_is_read_from_another(
    lost: tuple[CentralConfig, Path, str], key: x25519.X25519PrivateKey
) -> None:
    cfg, backup, _ = lost
    _records(cfg, "copy")[5].unlink()  # the copy lost one: backup.dir still has it
    record = restore(backup, key, Layout.of(cfg, None), journal=lambda cid: places_of(cfg, cid))
    assert record["journal"]["replayed"] == 6


def test_shipping_to_a_missing_place_is_reported_and_caught_up(
    tmp_path: Path, key: x25519.X25519PrivateKey
) -> None:
    cfg = _central(tmp_path, key)
    c = Central(cfg)
    copy = cfg.backup.copies[0]
    copy.parent.mkdir(parents=True)
    copy.write_text("not a directory: the mount is missing")
    with journaled("test"):
        c.tokens.create("t1", "viewer")
    status = c.ship()
    assert status["pending"] == 1 and status["shipped_to"] is None
    assert [p["ok"] for p in status["places"]] == [True, False]
    from biblioedge.fleet.backup.status import continuity_status

    problems = continuity_status(cfg)["problems"]
    assert f"the journal of changes cannot be written to {copy}" in problems
    # /health says it too, to anyone, without the path; and a shipper that stopped running
    later = datetime.now(UTC) + timedelta(minutes=10)
    unplaced, idle = shipping_problems(cfg, later, places=False)
    assert unplaced == "the journal of changes cannot be written to 1 backup place(s)"
    assert idle.startswith("the journal's shipper has not run for 6")  # 600 s and a bit
    copy.unlink()
    status = c.ship()
    assert status["pending"] == 0 and status["shipped_to"] == 1
    c.close()


# -- on real processes -----------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def backup_key(tmp_path: Path) -> tuple[Path, str]:
    keygen = _cli("central", "backup", "keygen", "--out", str(tmp_path / "backup.key"), "--json")
    assert keygen.returncode == 0, keygen.stderr
    return tmp_path / "backup.key", str(json.loads(keygen.stdout)["public_key"])


def _backup_conf(tmp_path: Path, public: str) -> dict[str, Any]:
    return {
        "backup": {
            "public_key": public,
            "dir": str(tmp_path / "safe"),
            "journal_ship_s": 0.5,
        }
    }


@pytest.fixture
def central(
    tmp_path: Path, broker: BrokerProcess, backup_key: tuple[Path, str]
) -> Iterator[CentralProcess]:
    """Central with backups configured (the conftest's, plus ``[backup]``)."""
    proc = CentralProcess(tmp_path / "central", broker, extra=_backup_conf(tmp_path, backup_key[1]))
    broker.start()
    proc.start()
    yield proc
    if proc.alive():
        assert proc.stop() == 0, proc.log_tail()


def _serials(pem: bytes) -> set[int]:
    return {c.serial_number for c in x509.load_pem_x509_crl(pem)}


@pytest.mark.integration
def test_a_kiosk_revoked_after_the_backup_stays_out_after_a_restore(
    tmp_path: Path,
    broker: BrokerProcess,
    central: CentralProcess,
    make_agent: Any,
    backup_key: tuple[Path, str],
) -> None:
    keyfile, public = backup_key
    config = central.data_dir / "central.toml"
    gate1 = make_agent("gate-01")
    gate2 = make_agent("gate-02")
    gate1.start()
    gate2.start()
    with central.client() as api:
        wait_until(
            lambda: {d["device_id"] for d in api.get("/devices").json()} >= {"gate-01", "gate-02"},
            120,
            0.2,
            "both gates known",
        )
    run = _cli("central", "backup", "run", "--config", str(config), "--json")
    assert run.returncode == 0, run.stderr
    made = json.loads(run.stdout)
    # after the backup: gate-02 is stolen and revoked; IT makes a token with the CLI
    gate2.stop()
    stolen = x509.load_pem_x509_certificate(
        (gate2.data_dir / "identity" / "device.crt").read_bytes()
    ).serial_number
    with central.client() as api:
        assert api.post("/devices/gate-02/revoke").status_code == 200
    made_token = _cli(
        "central",
        "token",
        "create",
        "--name",
        "it-late",
        "--role",
        "viewer",
        "--config",
        str(config),
    )
    assert made_token.returncode == 0, made_token.stderr
    late_token = made_token.stdout.strip().split()[-1]
    with central.client() as api:
        wait_until(
            lambda: (
                (api.get("/backups/status").json()["journal"] or {}).get("pending") == 0
                and api.get("/backups/status").json()["journal"]["shipped_to"] >= 2
            ),
            60,
            0.2,
            "the journal shipped",
        )
    gate1.stop()
    assert central.stop() == 0
    saved = tmp_path / "kept-by-it.toml"
    shutil.copy(config, saved)
    shutil.rmtree(central.data_dir)  # the disk dies; backups and journal are elsewhere

    restored = _cli(
        "central", "restore", made["path"], "--key", str(keyfile), "--config", str(saved), "--json"
    )
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["journal"]["replayed"] >= 2

    again = CentralProcess(
        central.data_dir, broker, port=central.port, extra=_backup_conf(tmp_path, public)
    )
    again.start()
    try:
        # the revocation holds: in the CRL the broker checks and the ACL, and at the API
        wait_until(
            lambda: stolen in _serials((again.data_dir / "broker" / "crl.pem").read_bytes()),
            60,
            0.2,
            "the stolen kiosk in the CRL",
        )
        acl = (again.data_dir / "broker" / "acl").read_text()
        assert "gate-02" not in acl and "gate-01" in acl
        with again.client() as api:
            assert api.get("/devices/gate-02").json().get("revoked", True) is True
        with again.client(late_token) as api:  # the token made after the backup works
            assert api.get("/devices").status_code == 200
    finally:
        assert again.stop() == 0, again.log_tail()


def test_postgresql_changes_after_the_backup_are_replayed(
    tmp_path: Path, key: x25519.X25519PrivateKey, postgres_url: str
) -> None:
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in ("jn_src", "jn_dst"):
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            conn.execute(text(f"CREATE DATABASE {name}"))
    base = postgres_url.rsplit("/", 1)[0]
    try:
        cfg = _central(tmp_path, key, db_url=f"{base}/jn_src")
        c = Central(cfg)
        with journaled("test"):
            c.readers.upsert("P1", site="tv-tinh", display_name="Nguyễn Văn An")
            c.readers.upsert("P2", site="tv-tinh", display_name="Lê Văn Cường")
        made = make_backup(Layout.of(cfg, None), key.public_key())
        with journaled("test"):
            _, late = c.tokens.create("late", "viewer")
            c.readers.erase("P1")
            c.readers.upsert("P3", site="tv-tinh", display_name="Phạm Thị Dung")
        assert c.ship()["pending"] == 0
        c.close()
        # a fresh machine, an empty database; the journal read from the backup places
        target = cfg.model_copy(
            update={"data_dir": tmp_path / "fresh", "database_url": f"{base}/jn_dst"}
        )
        record = restore(
            made.path, key, Layout.of(target, None), journal=lambda cid: places_of(cfg, cid)
        )
        assert record["journal"]["replayed"] == 3
        assert Tokens(create_engine(target.db_url)).check(late) is not None
        assert _rows(target.db_url, "SELECT patron_id FROM readers ORDER BY 1") == [
            ("P2",),
            ("P3",),
        ]
    finally:
        with admin.connect() as conn:
            for name in ("jn_src", "jn_dst"):
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()

"""Backup copies to an S3-compatible store and what central records about its backups and
restore drills (``GET /api/v1/backups/status``).

The store is moto's standalone server (tests/s3.py): an S3 implementation from outside this
project, started as its own process; central talks to it with boto3 as it would to MinIO."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from fastapi.testclient import TestClient

from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Tokens
from biblioedge.fleet.backup import run_backup
from biblioedge.fleet.backup.container import BackupError
from biblioedge.fleet.backup.restore import verify
from biblioedge.fleet.backup.s3 import copy_to_s3
from biblioedge.fleet.config import CentralConfig, S3CopyConfig
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.repo import Repo
from biblioedge.keys import load_or_create_key
from biblioedge.procs import free_port
from biblioedge.provisioning.sealing import x25519_public_b64
from tests.s3 import S3Server, credentials_file

CLI = [sys.executable, "-m", "biblioedge"]
BUCKET = "tv-tinh-backups"


@pytest.fixture
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _bucket(server: S3Server) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="bibliotest",
        aws_secret_access_key="s3cr3t",
    )
    try:
        client.create_bucket(Bucket=BUCKET)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return client


def _central(tmp: Path, key: x25519.X25519PrivateKey, s3: list[dict[str, Any]]) -> Path:
    """A migrated central with its identity and a config file naming the S3 copies."""
    from biblioedge.fleet.central import open_identity

    data = tmp / "central"
    data.mkdir()
    lines = [
        f'data_dir = "{data}"',
        "[security]",
        "require = false",
        "[backup]",
        f'public_key = "{x25519_public_b64(key)}"',
        f'copies = ["{tmp / "second-disk"}"]',
    ]
    for target in s3:
        lines.append("[[backup.s3]]")
        lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in target.items()]
    config = tmp / "central.toml"
    config.write_text("\n".join(lines).replace("'", '"') + "\n")
    cfg = _load(config)
    repo = Repo(cfg.db_url)
    try:
        repo.migrate(load_or_create_key(data / "keys" / "templates.key"))
        open_identity(cfg, repo)
    finally:
        repo.close()
    return config


def _load(config: Path) -> CentralConfig:
    from biblioedge.fleet.config import load_central_config

    return load_central_config(config)


def _status(cfg: CentralConfig) -> dict[str, Any]:
    repo = Repo(cfg.db_url)
    try:
        api = TestClient(create_app(cfg, repo, None, CentralMetrics()))
        api.headers["Authorization"] = f"Bearer {Tokens(repo.engine).create('it', 'admin')[1]}"
        body: dict[str, Any] = api.get("/api/v1/backups/status").raise_for_status().json()
        librarian = Tokens(repo.engine).create("l", "librarian")[1]
        refused = api.get(
            "/api/v1/backups/status", headers={"Authorization": f"Bearer {librarian}"}
        )
        assert refused.status_code == 403, "where the backups are is for IT only"
        return body
    finally:
        repo.close()


def test_a_backup_is_copied_to_the_s3_store_whole_with_progress(
    tmp_path: Path, s3: S3Server
) -> None:
    client = _bucket(s3)
    key = x25519.X25519PrivateKey.generate()
    creds = credentials_file(tmp_path / "s3.credentials")
    config = _central(
        tmp_path,
        key,
        [
            {
                "bucket": BUCKET,
                "prefix": "central-1/",
                "endpoint_url": s3.url,
                "credentials_file": str(creds),
            }
        ],
    )
    cfg = _load(config)
    seen: list[tuple[str, int, int]] = []
    status = run_backup(cfg, config, lambda what, done, total: seen.append((what, done, total)))

    local = Path(status["path"])
    s3_copy = [c for c in status["copies"] if c["kind"] == "s3"]
    assert [c["state"] for c in status["copies"]] == ["ok", "ok"]
    assert s3_copy[0]["path"] == f"central-1/{local.name}"
    fetched = tmp_path / "fetched.bebk"
    client.download_file(BUCKET, s3_copy[0]["path"], str(fetched))
    assert fetched.read_bytes() == local.read_bytes()
    assert verify(fetched, key)["central_id"] == status["central_id"]  # the copy restores
    uploads = [s for s in seen if s[0].startswith("copy to http://127.0.0.1")]
    assert uploads and uploads[-1][1] == uploads[-1][2] == local.stat().st_size

    body = _status(cfg)
    assert body["last"]["bytes"] == local.stat().st_size and not body["last"]["stale"]
    assert [(c["kind"], c["ok"]) for c in body["last"]["copies"]] == [("dir", True), ("s3", True)]
    assert body["last"]["copies"][1]["where"] == f"{s3.url}/{BUCKET}/central-1/"
    assert {p["kind"] for p in body["places"]} == {"dir", "s3"}
    assert "secret" not in str(body) and "bibliotest" not in str(body)
    assert body["last_drill"] is None and "no restore drill recorded" in body["problems"]


def test_a_copy_that_fails_is_retried_then_reported_and_the_backup_kept(tmp_path: Path) -> None:
    down = free_port()  # no store listens here
    key = x25519.X25519PrivateKey.generate()
    creds = credentials_file(tmp_path / "s3.credentials")
    config = _central(
        tmp_path,
        key,
        [
            {
                "bucket": BUCKET,
                "endpoint_url": f"http://127.0.0.1:{down}",
                "credentials_file": str(creds),
                "attempts": 3,
                "retry_s": 0,
            }
        ],
    )
    cfg = _load(config)
    proc = subprocess.run(
        [*CLI, "central", "backup", "run", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, "a failed copy is an error for cron and the timer"
    status = json.loads(proc.stdout)
    failed = status["copies"][1]
    assert failed["kind"] == "s3" and failed["attempts"] == 3
    assert failed["state"].startswith("failed: ")
    assert verify(Path(status["path"]), key)["central_id"]  # the backup itself is whole
    body = _status(cfg)
    assert body["last"]["copies"][1]["ok"] is False
    assert f"copy to http://127.0.0.1:{down}/{BUCKET}/ failed" in body["problems"]


def test_a_store_that_comes_back_during_the_retry_wait_gets_the_copy(
    tmp_path: Path,
) -> None:
    store = S3Server()
    backup = tmp_path / "biblioedge-backup-0123456789abcdef-20261206T010203Z.bebk"
    backup.write_bytes(b"\x00sealed" * 50_000)
    target = S3CopyConfig(
        bucket=BUCKET,
        endpoint_url=store.url,
        credentials_file=credentials_file(tmp_path / "creds"),
        attempts=5,
        retry_s=1,
    )
    waits: list[float] = []

    def wait(s: float) -> None:  # the store comes back while the copy waits to retry
        waits.append(s)
        if store.proc is None:
            store.start()
            _bucket(store)

    try:
        record = copy_to_s3(backup, target, sleep=wait)
        assert record["state"] == "ok" and record["attempts"] == 2
        assert waits == [1]
        fetched = tmp_path / "back"
        _bucket(store).download_file(BUCKET, backup.name, str(fetched))
        assert fetched.read_bytes() == backup.read_bytes()
    finally:
        store.stop()


def test_bad_credentials_files_are_refused_with_the_reason_and_not_retried(
    tmp_path: Path,
) -> None:
    backup = tmp_path / "biblioedge-backup-0123456789abcdef-20261206T010203Z.bebk"
    backup.write_bytes(b"x")
    bad = tmp_path / "creds"
    cases = {
        "": "has no [default] section",
        "[default]\naws_access_key_id = a\n": "needs aws_access_key_id and aws_secret_access_key",
        "not an ini file at all": "not an AWS-style credentials file",
    }
    for text, reason in cases.items():
        bad.write_text(text)
        target = S3CopyConfig(
            bucket=BUCKET, endpoint_url="http://127.0.0.1:9", credentials_file=bad
        )
        record = copy_to_s3(backup, target, sleep=lambda _s: pytest.fail("retried"))
        assert record["attempts"] == 1 and reason in record["state"], record
    target = S3CopyConfig(bucket=BUCKET, credentials_file=tmp_path / "missing")
    with pytest.raises(BackupError, match="cannot read the S3 credentials file"):
        from biblioedge.fleet.backup.s3 import credentials

        credentials(target)


def test_the_retention_rule_applies_in_the_bucket_and_leaves_other_keys(
    tmp_path: Path, s3: S3Server
) -> None:
    client = _bucket(s3)
    key = x25519.X25519PrivateKey.generate()
    config = _central(
        tmp_path,
        key,
        [
            {
                "bucket": BUCKET,
                "endpoint_url": s3.url,
                "credentials_file": str(credentials_file(tmp_path / "c")),
            }
        ],
    )
    cfg = _load(config)
    cfg = cfg.model_copy(
        update={"backup": cfg.backup.model_copy(update={"keep_daily": 1, "keep_weekly": 0})}
    )
    cid = "0123456789abcdef"
    old = [f"biblioedge-backup-{cid}-2025010{d}T010000Z.bebk" for d in (1, 2, 3)]
    for name in [*old, "notes.txt"]:
        client.put_object(Bucket=BUCKET, Key=name, Body=b"old")
    status = run_backup(cfg, config)
    left = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    # monthly keeps the newest of January 2025 besides today's; the other two go
    assert left == {"notes.txt", old[2], Path(status["path"]).name}


def test_restore_drills_are_recorded_passed_or_failed(tmp_path: Path) -> None:
    keyfile = tmp_path / "backup.key"
    subprocess.run(
        [*CLI, "central", "backup", "keygen", "--out", str(keyfile)],
        check=True,
        capture_output=True,
    )
    from biblioedge.cli.backup import load_private

    key = load_private(keyfile)
    config = _central(tmp_path, key, [])
    cfg = _load(config)
    status = run_backup(cfg, config)

    def drill(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "central", "backup", "verify", str(path), "--key", str(keyfile)]
            + ["--config", str(config), "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    assert drill(Path(status["path"])).returncode == 0
    body = _status(cfg)
    assert body["last_drill"]["ok"] is True
    assert body["last_drill"]["backup_id"] == status["backup_id"]
    assert body["last_drill"]["age_h"] < 1 and body["problems"] == []

    cut = tmp_path / Path(status["path"]).name
    cut.write_bytes(Path(status["path"]).read_bytes()[:-100])
    refused = drill(cut)
    assert refused.returncode != 0 and "truncated" in refused.stderr
    body = _status(cfg)
    assert body["last_drill"]["ok"] is False and "truncated" in body["last_drill"]["error"]
    assert any(p.startswith("the last restore drill failed") for p in body["problems"])
    assert datetime.fromisoformat(body["last_drill"]["at"]) <= datetime.now(UTC)

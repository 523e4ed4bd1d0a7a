"""``central backup run``: one encrypted, self-describing backup, made while central runs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import create_engine, text

from biblioedge import __version__
from biblioedge.fleet.backup.container import BackupError, Writer, key_id
from biblioedge.fleet.backup.parts import (
    Layout,
    Progress,
    central_id,
    db_kind,
    dump_postgres,
    snapshot_sqlite,
    walk,
)

SUFFIX = ".bebk"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Made:
    path: Path
    backup_id: str
    created: str
    central_id: str
    key_id: str
    size: int
    files: int
    events: int
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "backup_id": self.backup_id,
            "created": self.created,
            "central_id": self.central_id,
            "key_id": self.key_id,
            "bytes": self.size,
            "files": self.files,
            "events": self.events,
            "seconds": round(self.seconds, 3),
        }


def backup_name(cid: str, when: datetime) -> str:
    return f"biblioedge-backup-{cid}-{when.strftime('%Y%m%dT%H%M%SZ')}{SUFFIX}"


class _Hashing:
    """Reads a file for tarfile while hashing it; a file that changes size mid-read is an
    error rather than a silently torn copy."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.hash.update(data)
        return data


def _db_point(db_url: str) -> dict[str, Any]:
    """Per kiosk, the highest event sequence in the snapshot and the schema revision: after a
    restore, kiosks are asked to send again from here (ingest is exactly-once, so what
    central already has costs nothing)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            rows = conn.execute(
                text(
                    "SELECT device_id, MIN(seq), MAX(seq), COUNT(*) FROM events GROUP BY device_id"
                )
            ).all()
            # the end of each kiosk's first unbroken run of sequence numbers: everything up
            # to it is in the snapshot, so a replay after it loses nothing
            runs: dict[str, int] = dict(
                conn.execute(
                    text(
                        "SELECT e.device_id, MIN(e.seq) FROM events e WHERE NOT EXISTS ("
                        "SELECT 1 FROM events n WHERE n.device_id = e.device_id"
                        " AND n.seq = e.seq + 1) GROUP BY e.device_id"
                    )
                ).all()
            )
            # the journal's last record in the snapshot: a restore replays those after it
            last = conn.execute(
                text("SELECT seq, mac FROM central_journal ORDER BY seq DESC LIMIT 1")
            ).first()
    finally:
        engine.dispose()
    return {
        "schema": rev,
        "journal": {"seq": int(last[0]), "mac": str(last[1])} if last else {"seq": 0, "mac": ""},
        "devices": {
            r[0]: {
                "max_seq": int(r[2]),
                "events": int(r[3]),
                "complete_to": int(runs.get(r[0], 0)) if int(r[1]) == 1 else 0,
            }
            for r in rows
        },
        "events": sum(int(r[3]) for r in rows),
    }


def make_backup(
    layout: Layout,
    recipient: x25519.X25519PublicKey,
    out_dir: Path | None = None,
    progress: Progress | None = None,
) -> Made:
    started = time.monotonic()
    cid = central_id(layout.data_dir)
    if cid is None:
        raise BackupError(f"{layout.data_dir} has no device CA: run `central init` first")
    kind = db_kind(layout.db_url)
    out_dir = out_dir or layout.backup_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    backup_id = uuid.uuid4().hex
    final = out_dir / backup_name(cid, now)
    partial = out_dir / f".partial-{backup_id}"
    stage = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
    try:
        if kind == "sqlite":
            src = layout.sqlite_path
            assert src is not None
            db_file, db_name = stage / "central.sqlite3", "db/central.sqlite3"
            snapshot_sqlite(src, db_file, progress)
            point = _db_point(f"sqlite:///{db_file}")
        else:
            point = _db_point(layout.db_url)  # before the dump: the point never overshoots it
            db_file, db_name = stage / "central.pgdump", "db/central.pgdump"
            dump_postgres(layout.db_url, db_file)
        members: list[tuple[str, Path]] = [(db_name, db_file)]
        for prefix, root in layout.dirs().items():
            members += [(f"{prefix}/{rel}", path) for rel, path in walk(root, out_dir)]
        config = layout.config_file
        if config is not None and config.is_file() and all(p != config for _, p in members):
            members.append(("config/central.toml", config))
        total = sum(p.stat().st_size for _, p in members)
        files: dict[str, dict[str, Any]] = {}
        done = 0
        with partial.open("wb") as out:
            writer = Writer(
                out, recipient, backup_id=backup_id, created=now.isoformat(), central_id=cid
            )
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for name, path in members:
                    with path.open("rb") as f:
                        info = tar.gettarinfo(fileobj=f, arcname=name)
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        hashing = _Hashing(f)
                        tar.addfile(info, hashing)
                    files[name] = {"sha256": hashing.hash.hexdigest(), "size": info.size}
                    done += info.size
                    if progress is not None:
                        progress("files", done, total)
                manifest = json.dumps(
                    {
                        "format": 1,
                        "backup_id": backup_id,
                        "created": now.isoformat(),
                        "central_id": cid,
                        "software": __version__,
                        "database": {"kind": kind, "file": db_name, **point},
                        "dirs": sorted(layout.dirs()),
                        "files": files,
                    },
                    sort_keys=True,
                    indent=1,
                ).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size = len(manifest)
                info.mtime = int(now.timestamp())
                tar.addfile(info, io.BytesIO(manifest))
            writer.close()
            out.flush()
            os.fsync(out.fileno())
        partial.replace(final)
        _fsync_dir(out_dir)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Made(
        path=final,
        backup_id=backup_id,
        created=now.isoformat(),
        central_id=cid,
        key_id=key_id(recipient),
        size=final.stat().st_size,
        files=len(files),
        events=int(point["events"]),
        seconds=time.monotonic() - started,
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""``central backup verify`` and ``central restore``.

A restore first opens the whole backup into a staging directory beside the target and checks
every chunk and every file's hash against the manifest; only a backup that passes all of it,
onto a central that is stopped, empty (or that the operator explicitly replaces) and of the
same identity or none, is moved into place. What a forced restore replaces is set aside, not
deleted."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import create_engine, inspect, text

from biblioedge.fleet import migrations
from biblioedge.fleet.backup.container import (
    BackupError,
    ChunkReader,
    Header,
    open_chunks,
    read_header,
)
from biblioedge.fleet.backup.journal import (
    KEY_FILE,
    Found,
    Place,
    collect,
    open_record,
    replay,
)
from biblioedge.fleet.backup.make import MANIFEST
from biblioedge.fleet.backup.parts import (
    Layout,
    Progress,
    central_id,
    dump_postgres,
    restore_postgres,
)

LOCK = "central.lock"
RESTORED = "restored.json"
_PREFIXES = {"data", "broker", "releases", "config", "db"}
_MAX_MANIFEST = 64 * 1024 * 1024


@contextlib.contextmanager
def data_dir_lock(data_dir: Path, shared: bool = False) -> Iterator[None]:
    """Held by a running central for its whole life, so that a restore (or a second central
    on the same SQLite file) is refused instead of writing under it. ``shared``: central
    replicas (PostgreSQL) on one data directory each hold it shared; a restore still waits
    for all of them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"a central is running on {data_dir} (it holds {LOCK}): stop it first"
            ) from None
        if not shared:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Opened:
    header: Header
    manifest: dict[str, Any]
    stage: Path


def _member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BackupError(f"corrupt backup: unsafe path {name!r}")
    if name != MANIFEST and path.parts[0] not in _PREFIXES:
        raise BackupError(f"corrupt backup: unexpected member {name!r}")
    return path


def open_backup(
    backup: Path,
    private: x25519.X25519PrivateKey,
    stage: Path,
    progress: Progress | None = None,
) -> Opened:
    """Decrypt and unpack into ``stage``; raises on the first thing that is not right."""
    try:
        src = backup.open("rb")
    except OSError as exc:
        raise BackupError(f"cannot read {backup}: {exc.strerror}") from None
    total = backup.stat().st_size
    with src:
        header = read_header(src)
        reader = ChunkReader(open_chunks(src, header, private))
        hashes: dict[str, tuple[str, int]] = {}
        manifest: dict[str, Any] | None = None
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    path = _member_path(member.name)
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise BackupError(f"corrupt backup: {member.name!r} is not a file")
                    data = tar.extractfile(member)
                    assert data is not None
                    if member.name == MANIFEST:
                        if member.size > _MAX_MANIFEST:
                            raise BackupError("corrupt backup: manifest too large")
                        manifest = json.loads(data.read())
                        continue
                    hashes[member.name] = _copy(data, stage / path)
                    if progress is not None:
                        progress("files", src.tell(), total)
            reader.drain()
        except (tarfile.TarError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BackupError(f"corrupt backup: {exc}") from None
    if not isinstance(manifest, dict):
        raise BackupError("corrupt backup: it has no manifest")
    _check_manifest(manifest, header, hashes)
    return Opened(header, manifest, stage)


def _copy(src: IO[bytes], dst: Path) -> tuple[str, int]:
    dst.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    with dst.open("wb") as out:
        os.chmod(dst, 0o600)
        while block := src.read(1 << 20):
            h.update(block)
            size += len(block)
            out.write(block)
    return h.hexdigest(), size


def _check_manifest(
    manifest: dict[str, Any], header: Header, hashes: dict[str, tuple[str, int]]
) -> None:
    if manifest.get("backup_id") != header.backup_id:
        raise BackupError("corrupt backup: the manifest belongs to another backup")
    if manifest.get("central_id") != header.central_id:
        raise BackupError("corrupt backup: the manifest names another central")
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise BackupError("corrupt backup: the manifest lists no files")
    missing = sorted(set(listed) - set(hashes))
    extra = sorted(set(hashes) - set(listed))
    if missing or extra:
        raise BackupError(f"corrupt backup: files missing {missing[:3]} or unlisted {extra[:3]}")
    for name, (digest, size) in hashes.items():
        want = listed[name]
        if not isinstance(want, dict) or want.get("sha256") != digest or want.get("size") != size:
            raise BackupError(f"corrupt backup: {name} does not match its hash")
    db = manifest.get("database")
    if not isinstance(db, dict) or db.get("file") not in hashes:
        raise BackupError("corrupt backup: no database in it")


def verify(
    backup: Path, private: x25519.X25519PrivateKey, progress: Progress | None = None
) -> dict[str, Any]:
    """Open the whole backup into a temporary directory and throw it away: the drill that
    proves a backup restores, without touching a central."""
    with tempfile.TemporaryDirectory(prefix="biblioedge-verify-") as tmp:
        opened = open_backup(backup, private, Path(tmp), progress)
    return _summary(opened)


def _summary(opened: Opened) -> dict[str, Any]:
    m = opened.manifest
    db = m["database"]
    return {
        "backup_id": opened.header.backup_id,
        "created": opened.header.created,
        "central_id": opened.header.central_id,
        "database": db.get("kind"),
        "schema": db.get("schema"),
        "events": db.get("events"),
        "files": len(m["files"]),
    }


def _target_state(layout: Layout) -> tuple[str | None, int]:
    """(central id of the target, rows in its database): what a restore would replace."""
    rows = 0
    sqlite_path = layout.sqlite_path
    if sqlite_path is None or sqlite_path.exists():
        engine = create_engine(layout.db_url)
        try:
            with engine.connect() as conn:
                tables = set(inspect(conn).get_table_names())
                for table in ("events", "devices", "readers"):
                    if table in tables:
                        rows += int(
                            conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() or 0
                        )
        finally:
            engine.dispose()
    return central_id(layout.data_dir), rows


def _check_fits(opened: Opened, layout: Layout) -> None:
    """Everything that can refuse a restore is checked before anything is moved."""
    manifest = opened.manifest
    kind = manifest["database"].get("kind")
    here = "sqlite" if layout.sqlite_path is not None else "postgresql"
    if kind != here:
        raise BackupError(f"the backup's database is {kind}; this central's is {here}")
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    script = ScriptDirectory.from_config(cfg)
    schema = manifest["database"].get("schema")
    known = {rev.revision for rev in script.walk_revisions()}
    if schema not in known:
        raise BackupError(
            f"the backup's database is at schema {schema!r}, which this central does not know "
            "(made by a newer version?): install that version, restore, then upgrade"
        )


def restore(
    backup: Path,
    private: x25519.X25519PrivateKey,
    layout: Layout,
    *,
    force: bool = False,
    progress: Progress | None = None,
    journal: Callable[[str], list[Place]] | None = None,
) -> dict[str, Any]:
    """``journal``: the places to read central's journal from, given the backup's central
    id (None: the snapshot only). Its records after the snapshot are checked before anything
    is moved, and replayed after the snapshot is in place."""
    with data_dir_lock(layout.data_dir):
        target_id, rows = _target_state(layout)
        parent = layout.data_dir.parent
        stage = Path(tempfile.mkdtemp(prefix=".restore-", dir=parent))
        try:
            opened = open_backup(backup, private, stage, progress)
            _check_fits(opened, layout)
            source_id = opened.header.central_id
            if target_id is not None and target_id != source_id and not force:
                raise BackupError(
                    f"{layout.data_dir} is central {target_id}; the backup is of central "
                    f"{source_id}: refusing to replace another central (--force to do it)"
                )
            if (target_id is not None or rows) and not force:
                raise BackupError(
                    f"{layout.data_dir} is not empty ({rows} rows, keys "
                    f"{'present' if target_id else 'absent'}): refusing to overwrite it "
                    "(--force replaces it and keeps the present data aside)"
                )
            found = _journal_after(opened, journal, private) if journal is not None else None
            aside = _set_aside(layout) if (target_id is not None or rows) else None
            _apply(opened, layout)
            replayed: dict[str, Any] | None = None
            if found is not None:
                replayed = _replay(layout, found, private)
            record = {
                **_summary(opened),
                "restored_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
                "from": str(backup),
                "set_aside": str(aside) if aside else None,
                "point": opened.manifest["database"].get("devices", {}),
                "journal": replayed,
            }
            (layout.data_dir / RESTORED).write_text(json.dumps(record, indent=1))
            return record
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _set_aside(layout: Layout) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = layout.data_dir / f".before-restore-{stamp}"
    aside.mkdir()
    for child in list(layout.data_dir.iterdir()):
        if child == aside or child.name == LOCK or child.name.startswith(".before-restore-"):
            continue
        if child.resolve() == layout.backup_dir.resolve():
            continue
        shutil.move(str(child), aside / child.name)
    for name, path in layout.dirs().items():
        if name != "data" and path.exists():
            shutil.move(str(path), aside / name)
    sqlite_path = layout.sqlite_path
    if sqlite_path is None:  # PostgreSQL is replaced in place: keep a dump of it first
        dump_postgres(layout.db_url, aside / "central.pgdump")
    elif sqlite_path.exists():
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{sqlite_path}{suffix}")
            if part.exists():
                shutil.move(str(part), aside / part.name)
    return aside


def _apply(opened: Opened, layout: Layout) -> None:
    stage = opened.stage
    db = opened.manifest["database"]
    for name, dest in layout.dirs().items():
        src = stage / name
        if src.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            for item in src.iterdir():
                shutil.move(str(item), dest / item.name)
    sqlite_path = layout.sqlite_path
    db_file = stage / db["file"]
    if sqlite_path is not None:
        for suffix in ("-wal", "-shm"):
            Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(db_file), sqlite_path)
    else:
        restore_postgres(layout.db_url, db_file)
    config = stage / "config" / "central.toml"
    if config.is_file():  # for comparison: the target's own config stays in charge
        shutil.move(str(config), layout.data_dir / "restored-central.toml")


def _journal_after(
    opened: Opened, places: Callable[[str], list[Place]], private: x25519.X25519PrivateKey
) -> Found:
    """The journal's records after the snapshot, every one checked (MAC, central, chain)."""
    point = opened.manifest["database"].get("journal")
    key_file = opened.stage / "data" / "keys" / KEY_FILE
    if not isinstance(point, dict) or not key_file.is_file():
        return Found([], [])  # a backup from before the journal: nothing to chain to
    mac_key = key_file.read_bytes()
    found = collect(
        places(opened.header.central_id),
        opened.header.central_id,
        mac_key,
        int(point.get("seq", 0)),
        str(point.get("mac", "")),
    )
    for record in found.records:  # sealed to the given key, every one, before anything moves
        open_record(record, private)
    return found


def _replay(layout: Layout, found: Found, private: x25519.X25519PrivateKey) -> dict[str, Any]:
    engine = create_engine(layout.db_url)
    try:
        return replay(engine, found, private)
    finally:
        engine.dispose()

"""What a backup holds and where each part lives on a central: the database, the data
directory (keys, sealed; API and dashboard secrets), the broker's files, the TUF repository
and central's config file.

Paths inside the archive are fixed names, never the source machine's paths, so a restore can
put each part where the *target's* config says (another disk, another layout)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from biblioedge.fleet.backup.container import BackupError
from biblioedge.fleet.config import CentralConfig

#: Never copied: the live database (snapshotted instead), logs, locks, earlier backups and
#: what a restore set aside.
_SKIP_SUFFIXES = (".sqlite3", ".sqlite3-wal", ".sqlite3-shm", ".sqlite3-journal", ".log", ".lock")
_SKIP_DIRS = {"backups"}
_SKIP_PREFIXES = (".restore-", ".before-restore-", ".partial-")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Layout:
    """Where the parts are on one central (from its config)."""

    data_dir: Path
    db_url: str
    broker_dir: Path
    releases_dir: Path
    backup_dir: Path
    config_file: Path | None

    @classmethod
    def of(cls, cfg: CentralConfig, config_file: Path | None) -> Layout:
        return cls(
            data_dir=cfg.data_dir,
            db_url=cfg.db_url,
            broker_dir=cfg.broker_dir,
            releases_dir=cfg.releases_dir,
            backup_dir=cfg.backup_dir,
            config_file=config_file,
        )

    @property
    def sqlite_path(self) -> Path | None:
        if not self.db_url.startswith("sqlite"):
            return None
        db = make_url(self.db_url).database
        if not db or db == ":memory:":
            raise BackupError(f"cannot back up an in-memory database ({self.db_url})")
        return Path(db)

    def dirs(self) -> dict[str, Path]:
        """Archive prefix → directory; the broker and release trees only where they live
        outside the data directory (inside it they come with it)."""
        out = {"data": self.data_dir}
        for name, path in (("broker", self.broker_dir), ("releases", self.releases_dir)):
            if not _inside(path, self.data_dir):
                out[name] = path
        return out


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


def central_id(data_dir: Path) -> str | None:
    """Central's identity is its device CA: the same CA means kiosks trust it unchanged."""
    ca = data_dir / "keys" / "device-ca.crt"
    if not ca.is_file():
        return None
    return hashlib.sha256(ca.read_bytes()).hexdigest()[:16]


def walk(root: Path, backup_dir: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, file) for every regular file worth keeping under ``root``."""
    if not root.is_dir():
        return
    skip_backups = backup_dir.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in _SKIP_DIRS
            and not d.startswith(_SKIP_PREFIXES)
            and (here / d).resolve() != skip_backups
            and not (here / d).is_symlink()
        )
        for name in sorted(filenames):
            path = here / name
            if name.endswith(_SKIP_SUFFIXES) or name.startswith(_SKIP_PREFIXES):
                continue
            if path.is_symlink() or not path.is_file():
                continue
            yield path.relative_to(root).as_posix(), path


def snapshot_sqlite(src: Path, dst: Path, progress: Progress | None = None) -> None:
    """SQLite's online backup: a consistent copy while central keeps writing."""
    if not src.is_file():
        raise BackupError(f"no database at {src}")
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dst)
    try:

        def step(_status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress("database", total - remaining, total)

        source.backup(target, pages=4096, progress=step)
    finally:
        target.close()
        source.close()


def _libpq_url(db_url: str) -> str:
    url = make_url(db_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).is_file():
            return str(base / name)
    raise BackupError(f"{name} not found: install postgresql-client")


def _run_pg(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BackupError(f"{what} failed: {' '.join(tail) or proc.returncode}")


def dump_postgres(db_url: str, dst: Path) -> None:
    """pg_dump in its custom format: one consistent snapshot, restorable by pg_restore."""
    _run_pg(
        [pg_tool("pg_dump"), "--format=custom", "--no-owner", "-f", str(dst), _libpq_url(db_url)],
        "pg_dump",
    )


def restore_postgres(db_url: str, src: Path) -> None:
    _run_pg(
        [
            pg_tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
            "-d",
            _libpq_url(db_url),
            str(src),
        ],
        "pg_restore",
    )


def db_kind(db_url: str) -> str:
    scheme = urlsplit(db_url).scheme.split("+")[0]
    if scheme not in ("sqlite", "postgresql"):
        raise BackupError(f"cannot back up a {scheme} database")
    return scheme


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()

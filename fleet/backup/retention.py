"""Which backups to keep: the newest of each of the last N days, ISO weeks and months
(grandfather-father-son), and always the newest one. Pure, so it is tested as a table."""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from biblioedge.fleet.backup.make import SUFFIX

_STAMP = re.compile(r"^biblioedge-backup-([0-9a-f]{16})-(\d{8}T\d{6}Z)" + re.escape(SUFFIX) + "$")


def keep(stamps: list[datetime], daily: int, weekly: int, monthly: int) -> set[datetime]:
    ordered = sorted(set(stamps), reverse=True)
    kept: set[datetime] = set(ordered[:1])
    for count, bucket in (
        (daily, lambda t: t.date()),
        (weekly, lambda t: t.isocalendar()[:2]),
        (monthly, lambda t: (t.year, t.month)),
    ):
        seen: list[object] = []
        for t in ordered:
            b = bucket(t)
            if b in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(b)
            kept.add(t)
    return kept


def stamp_of(name: str) -> datetime | None:
    """The time in a backup's file name; None for any other name."""
    m = _STAMP.match(name)
    return datetime.strptime(m.group(2), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if m else None


def listed(directory: Path) -> dict[datetime, Path]:
    """The backups in ``directory`` by their time (files of other names are left alone)."""
    out: dict[datetime, Path] = {}
    if not directory.is_dir():
        return out
    for path in directory.iterdir():
        stamp = stamp_of(path.name)
        if stamp is not None and path.is_file():
            out[stamp] = path
    return out


def prune(directory: Path, daily: int, weekly: int, monthly: int) -> list[Path]:
    backups = listed(directory)
    kept = keep(list(backups), daily, weekly, monthly)
    removed = []
    for stamp, path in sorted(backups.items()):
        if stamp not in kept:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def copy_to(backup: Path, directory: Path) -> Path:
    """Copy, fsync, then rename: a copy that is there is whole."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / backup.name
    tmp = directory / f".partial-{backup.name}"
    with backup.open("rb") as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    tmp.replace(final)
    return final

"""What central records about its continuity, in one document for the dashboard and the API:
the last backup (age, size, where its copies are and whether each one made it), the last
restore drill and the last restore.

Everything is read from small JSON files in the data directory (``backup-status.json``
written by each backup, ``backup-drills.json`` by each ``central backup verify --config``,
``restored.json`` by a restore), not from the database: a central whose database is what
broke can still say when its last good backup was.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from biblioedge.fleet.backup.restore import RESTORED
from biblioedge.fleet.config import CentralConfig

DRILLS = "backup-drills.json"
KEEP_DRILLS = 20


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _age_h(stamp: object, now: datetime) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round((now - when).total_seconds() / 3600, 2)


def record_drill(
    cfg: CentralConfig, backup: Path, summary: dict[str, Any] | None, error: str | None
) -> dict[str, Any]:
    """Append one drill (``central backup verify``) to the data directory's record; a failed
    drill is recorded too, since IT must see it."""
    drill: dict[str, Any] = {
        "at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "backup": str(backup),
        "ok": error is None,
        "error": error,
    }
    if summary is not None:
        drill |= {k: summary.get(k) for k in ("backup_id", "created", "events", "files")}
    path = cfg.data_dir / DRILLS
    drills = _read(path)
    drills = [d for d in drills if isinstance(d, dict)] if isinstance(drills, list) else []
    drills = [*drills, drill][-KEEP_DRILLS:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(drills, indent=1))
    os.replace(tmp, path)
    return drill


def continuity_status(cfg: CentralConfig, now: datetime | None = None) -> dict[str, Any]:
    """The document ``GET /api/v1/backups/status`` returns (see ``BackupStatus`` there).

    ``problems`` lists, in plain words, what IT should act on: no backup, a stale one, a copy
    that failed, no drill or a failed one."""
    from biblioedge.fleet.backup import STATUS

    now = now or datetime.now(UTC)
    b = cfg.backup
    last: dict[str, Any] | None = None
    raw = _read(cfg.data_dir / STATUS)
    if isinstance(raw, dict) and _age_h(raw.get("created"), now) is not None:
        age = _age_h(raw.get("created"), now)
        assert age is not None
        copies = [c for c in raw.get("copies", []) if isinstance(c, dict)]
        last = {
            "backup_id": raw.get("backup_id"),
            "created": raw.get("created"),
            "age_h": age,
            "stale": age > b.stale_after_h,
            "bytes": raw.get("bytes"),
            "files": raw.get("files"),
            "events": raw.get("events"),
            "path": raw.get("path"),
            "copies": [
                {
                    "kind": c.get("kind", "dir"),
                    "where": c.get("where", c.get("path")),
                    "ok": c.get("state") == "ok",
                    "state": c.get("state"),
                    "attempts": c.get("attempts", 1),
                }
                for c in copies
            ],
        }
    drills = _read(cfg.data_dir / DRILLS)
    drill: dict[str, Any] | None = None
    if isinstance(drills, list) and drills and isinstance(drills[-1], dict):
        drill = {**drills[-1], "age_h": _age_h(drills[-1].get("at"), now)}
    restored = _read(cfg.data_dir / RESTORED)
    restore: dict[str, Any] | None = None
    if isinstance(restored, dict):
        restore = {
            k: restored.get(k)
            for k in ("restored_at", "backup_id", "created", "from", "events", "journal")
        }
    problems: list[str] = []
    configured = b.public_key is not None
    if configured and last is None:
        problems.append("no backup made yet")
    if last is not None and last["stale"]:
        problems.append(f"the last backup is {last['age_h']:.0f} h old")
    if last is not None:
        problems += [f"copy to {c['where']} failed" for c in last["copies"] if not c["ok"]]
    if configured and drill is None:
        problems.append("no restore drill recorded")
    elif drill is not None and not drill.get("ok"):
        problems.append(f"the last restore drill failed: {drill.get('error')}")
    from biblioedge.fleet.backup.journal import STATUS as JOURNAL
    from biblioedge.fleet.backup.journal import shipping_problems

    journal = _read(cfg.data_dir / JOURNAL)
    if not isinstance(journal, dict):
        journal = None
    problems += shipping_problems(cfg, now)
    places = [{"kind": "dir", "where": str(cfg.backup_dir)}]
    places += [{"kind": "dir", "where": str(d)} for d in b.copies]
    places += [{"kind": "s3", "where": s.where()} for s in b.s3]
    return {
        "configured": configured,
        "every_h": b.every_h,
        "stale_after_h": b.stale_after_h,
        "places": places,
        "last": last,
        "last_drill": drill,
        "last_restore": restore,
        "journal": journal,
        "problems": problems,
    }

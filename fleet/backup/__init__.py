"""Central's backups: encrypted to a key central does not hold, kept by a retention rule,
copied to a second place, and restored only when whole (docs/operations.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from biblioedge.fleet.backup.container import BackupError
from biblioedge.fleet.backup.make import Made, make_backup
from biblioedge.fleet.backup.parts import Layout, Progress
from biblioedge.fleet.backup.retention import copy_to, prune
from biblioedge.fleet.backup.s3 import copy_to_s3, prune_s3
from biblioedge.fleet.config import CentralConfig
from biblioedge.provisioning.sealing import load_x25519_public

STATUS = "backup-status.json"

__all__ = ["STATUS", "BackupError", "Layout", "last_status", "run_backup"]


def run_backup(
    cfg: CentralConfig, config_file: Path | None, progress: Progress | None = None
) -> dict[str, Any]:
    """One backup, its copies, and the retention rule applied in every place."""
    if cfg.backup.public_key is None:
        raise BackupError(
            "backup.public_key is not set: make a key pair with `central backup keygen` and "
            "put its public half in central's config"
        )
    recipient = load_x25519_public(cfg.backup.public_key)
    made: Made = make_backup(Layout.of(cfg, config_file), recipient, progress=progress)
    b = cfg.backup
    copies: list[dict[str, Any]] = []
    for directory in b.copies:
        where = {"kind": "dir", "where": str(directory)}
        try:
            copies.append({**where, "path": str(copy_to(made.path, directory)), "state": "ok"})
            prune(directory, b.keep_daily, b.keep_weekly, b.keep_monthly)
        except OSError as exc:  # a missing mount costs the copy, not the backup
            state = f"failed: {exc.strerror or exc}"
            copies.append({**where, "path": str(directory), "state": state})
    for target in b.s3:
        copy = copy_to_s3(made.path, target, progress)
        copies.append(copy)
        if copy["state"] == "ok":
            try:
                prune_s3(target, b.keep_daily, b.keep_weekly, b.keep_monthly)
            except Exception as exc:  # an unpruned bucket costs space, not the copy
                copy["pruned"] = f"failed: {type(exc).__name__}"
    removed = prune(made.path.parent, b.keep_daily, b.keep_weekly, b.keep_monthly)
    status = {**made.as_json(), "copies": copies, "pruned": len(removed)}
    (cfg.data_dir / STATUS).write_text(json.dumps(status, indent=1))
    return status


def last_status(cfg: CentralConfig, now: datetime | None = None) -> dict[str, Any] | None:
    """The last backup as the dashboard and /health show it, with its age."""
    try:
        status: dict[str, Any] = json.loads((cfg.data_dir / STATUS).read_text())
        created = datetime.fromisoformat(status["created"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    age_h = ((now or datetime.now(UTC)) - created).total_seconds() / 3600
    return {**status, "age_h": round(age_h, 2), "stale": age_h > cfg.backup.stale_after_h}

"""CLI for central's continuity: ``central backup keygen|run|verify|list`` and
``central restore``. Central's modules load inside each command (see cli/agent.py)."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biblioedge.settings import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import x25519


def _out(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    sys.stdout.write((json.dumps(doc, ensure_ascii=False) if args.json else text) + "\n")


class _Progress:
    """Progress on stderr: a line per 10 % when not on a terminal, a live line on one."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, int] = ("", -1)
        self.at = 0.0

    def __call__(self, what: str, done: int, total: int) -> None:
        pct = 100 if total <= 0 else min(100, done * 100 // total)
        step = pct if self.tty else pct // 10 * 10
        if (what, step) == self.last or (self.tty and time.monotonic() - self.at < 0.2):
            return
        self.last, self.at = (what, step), time.monotonic()
        line = f"{self.verb}: {what} {pct}% ({done / 2**20:.1f} of {total / 2**20:.1f} MiB)"
        sys.stderr.write(("\r" + line) if self.tty else line + "\n")
        sys.stderr.flush()

    def end(self) -> None:
        if self.tty and self.last[0]:
            sys.stderr.write("\n")


def load_private(path: Path) -> x25519.X25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import x25519

    try:
        raw = base64.urlsafe_b64decode(path.read_text().strip().encode())
        return x25519.X25519PrivateKey.from_private_bytes(raw)
    except OSError as exc:
        raise ConfigError(f"cannot read the backup key {path}: {exc.strerror}") from None
    except (ValueError, binascii.Error):
        raise ConfigError(
            f"{path} is not a backup private key (from `central backup keygen`)"
        ) from None


def _cmd_keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from biblioedge.fleet.backup.container import key_id
    from biblioedge.provisioning.sealing import x25519_public_b64

    out: Path = args.out
    if out.exists():
        raise ConfigError(f"{out} exists: a backup key is never overwritten")
    key = x25519.X25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.urlsafe_b64encode(raw).decode() + "\n")
    public = x25519_public_b64(key)
    _out(
        args,
        {"private_key_file": str(out), "public_key": public, "key_id": key_id(key.public_key())},
        f"backup key {key_id(key.public_key())}: private half in {out} (keep it off central, "
        f'in two safe places)\nput in central\'s config:\n[backup]\npublic_key = "{public}"',
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from biblioedge.fleet.backup import BackupError, run_backup
    from biblioedge.fleet.config import load_central_config

    cfg = load_central_config(args.config)
    progress = _Progress("backup")
    try:
        status = run_backup(cfg, args.config, progress)
    except BackupError as exc:
        raise ConfigError(f"backup failed: {exc}") from None
    finally:
        progress.end()
    copies = (
        ", ".join(f"{c.get('where', c['path'])} ({c['state']})" for c in status["copies"]) or "none"
    )
    _out(
        args,
        status,
        f"backup {status['path']}: {status['bytes'] / 2**20:.1f} MiB, {status['files']} files, "
        f"{status['seconds']} s; copies: {copies}; pruned {status['pruned']}",
    )
    return 0 if all(c["state"] == "ok" for c in status["copies"]) else 1


def _cmd_verify(args: argparse.Namespace) -> int:
    from biblioedge.fleet.backup import BackupError
    from biblioedge.fleet.backup.restore import verify

    progress = _Progress("verify")
    key = load_private(args.key)
    cfg = None
    if args.config is not None:
        from biblioedge.fleet.config import load_central_config

        cfg = load_central_config(args.config)
    try:
        summary = verify(args.backup, key, progress)
    except BackupError as exc:
        if cfg is not None:  # a failed drill is recorded too: IT must see it
            from biblioedge.fleet.backup.status import record_drill

            record_drill(cfg, args.backup, None, str(exc))
        raise ConfigError(f"{args.backup}: {exc}") from None
    finally:
        progress.end()
    if cfg is not None:
        from biblioedge.fleet.backup.status import record_drill

        record_drill(cfg, args.backup, summary, None)
    _out(
        args,
        {"ok": True, **summary},
        f"{args.backup}: whole and readable; central {summary['central_id']}, "
        f"made {summary['created']}, {summary['events']} events, {summary['files']} files",
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from biblioedge.fleet.backup import STATUS, last_status
    from biblioedge.fleet.backup.retention import listed
    from biblioedge.fleet.config import load_central_config

    cfg = load_central_config(args.config)
    places = [cfg.backup_dir, *cfg.backup.copies]
    places_doc: list[dict[str, Any]] = [
        {
            "dir": str(d),
            "backups": [
                {"created": t.isoformat(), "path": str(p), "bytes": p.stat().st_size}
                for t, p in sorted(listed(d).items(), reverse=True)
            ],
        }
        for d in places
    ]
    doc = {"last": last_status(cfg), "places": places_doc}
    lines = []
    for place in places_doc:
        lines.append(f"{place['dir']}: {len(place['backups'])} backups")
        lines += [f"  {b['created']}  {b['bytes'] / 2**20:.1f} MiB" for b in place["backups"]]
    if doc["last"] is None:
        lines.append(f"no backup recorded ({cfg.data_dir / STATUS})")
    _out(args, doc, "\n".join(lines))
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from biblioedge.fleet.backup import BackupError, Layout
    from biblioedge.fleet.backup.restore import restore
    from biblioedge.fleet.config import load_central_config

    cfg = load_central_config(args.config)
    progress = _Progress("restore")

    def journal(central_id: str) -> list[Any]:
        """Central's journal: in the places named, else in every configured backup place."""
        from biblioedge.fleet.backup.journal import DirPlace, places_of

        if args.journal:
            return [DirPlace(d, central_id) for d in args.journal]
        return places_of(cfg, central_id)

    try:
        record = restore(
            args.backup,
            load_private(args.key),
            Layout.of(cfg, args.config),
            force=args.force,
            progress=progress,
            journal=None if args.no_journal else journal,
        )
    except BackupError as exc:
        raise ConfigError(f"restore refused: {exc}") from None
    finally:
        progress.end()
    aside = f"; what was there is in {record['set_aside']}" if record["set_aside"] else ""
    replayed = record.get("journal")
    if replayed:
        aside += f"; {replayed['replayed']} changes made at central after it replayed"
    _out(
        args,
        record,
        f"restored central {record['central_id']} from the backup of {record['created']} "
        f"({record['events']} events){aside}. Start central; kiosks reconnect with their "
        "certificates.",
    )
    return 0


def register_central(sub: Any) -> None:
    """Under ``central``: ``backup …`` and ``restore``."""
    b = sub.add_parser(
        "backup",
        help="encrypted backups of central (keys, database, releases, broker files)",
        description="Backups are sealed to a backup key whose private half is kept off "
        "central; `run` works while central runs (docs/operations.md).",
    ).add_subparsers(dest="backup_command", required=True, metavar="keygen|run|verify|list")
    k = b.add_parser("keygen", help="make the backup key pair (the private half to a file)")
    k.add_argument("--out", type=Path, required=True, help="file for the private key (0600)")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=_cmd_keygen)
    r = b.add_parser("run", help="make a backup now, copy it, apply the retention rule")
    r.add_argument("--config", type=Path, required=True, help="central TOML file")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cmd_run)
    v = b.add_parser("verify", help="open a whole backup and check every byte, restoring nothing")
    v.add_argument("backup", type=Path, help="the backup file to check")
    v.add_argument("--key", type=Path, required=True, help="the backup private key file")
    v.add_argument(
        "--config",
        type=Path,
        default=None,
        help="central TOML file: record this drill (passed or failed) for the dashboard",
    )
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_cmd_verify)
    ls = b.add_parser("list", help="the backups kept, in every place, and the last one made")
    ls.add_argument("--config", type=Path, required=True, help="central TOML file")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_list)
    s = sub.add_parser(
        "restore",
        help="restore central from a backup (same CA and keys: kiosks need no new enrollment)",
        description="Refuses a corrupt, truncated or wrongly keyed backup, one of another "
        "central, a running central and a non-empty one (unless --force, which sets the "
        "present data aside), and a journal of another central or with a broken chain, "
        "before it overwrites anything; then replays central's journal after the backup.",
    )
    s.add_argument("backup", type=Path, help="the backup file to restore")
    s.add_argument("--key", type=Path, required=True, help="the backup private key file")
    s.add_argument("--config", type=Path, required=True, help="central TOML file of the target")
    s.add_argument("--force", action="store_true", help="replace a central that has data")
    s.add_argument(
        "--journal",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a backup place holding central's journal (repeatable; default: every place "
        "in the config's [backup])",
    )
    s.add_argument(
        "--no-journal",
        action="store_true",
        help="restore the snapshot only: changes made at central after it are not replayed",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_restore)

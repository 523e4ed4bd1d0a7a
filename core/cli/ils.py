"""``biblioedge central ils check|status|resync|drain``: the library system as central sees it.

Imports of fleet code are inside the commands: ``biblioedge --help`` does not load central."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from biblioedge.settings import ConfigError


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from biblioedge.fleet.config import load_central_config
    from biblioedge.fleet.repo import Repo
    from biblioedge.keys import load_or_create_key

    cfg = load_central_config(args.config)
    if cfg.ils is None:
        raise ConfigError("no [ils] section: central pushes readers to no library system")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    repo = Repo(cfg.db_url)
    repo.migrate(load_or_create_key(cfg.data_dir / "keys" / "templates.key"))
    return cfg, repo


def _print(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
        return
    for key, value in doc.items():
        if key == "waiting":
            for w in value:
                sys.stdout.write(
                    f"  #{w['id']} {w['patron_id']} {w['op']} {w['state']} after "
                    f"{w['attempts']} tries: {w['reason']}: {w['detail']}\n"
                )
            continue
        sys.stdout.write(f"{key:>16}: {value}\n")


def _cmd(args: argparse.Namespace) -> int:
    from biblioedge.fleet.ils.connector import IlsError
    from biblioedge.fleet.ils.queue import Queue
    from biblioedge.fleet.ils.worker import IlsWorker, open_connector
    from biblioedge.fleet.readers import Readers
    from biblioedge.keys import load_or_create_key

    try:
        cfg, repo = _open(args)
    except ConfigError as exc:
        sys.stderr.write(f"biblioedge: {exc}\n")
        return 2
    ils = cfg.ils
    queue = Queue(repo.engine, ils.backoff_s, ils.backoff_max_s)
    try:
        if args.ils_command == "status":
            doc = {"library_system": ils.endpoint().base_url, **queue.summary()}
            _print(args, doc)
            return 1 if doc["held"] else 0
        if args.ils_command == "resync":
            n = queue.resync(args.patron)
            _print(args, {"queued_updates": n, **{"patron": args.patron or "all"}})
            return 0
        connector = open_connector(ils)
        try:
            if args.ils_command == "check":
                try:
                    doc = {"ok": True, **connector.check()}
                except IlsError as exc:
                    doc = {"ok": False, "reason": exc.reason, "detail": exc.detail}
                _print(args, doc)
                return 0 if doc["ok"] else 1
            key = load_or_create_key(cfg.data_dir / "keys" / "templates.key")
            worker = IlsWorker(ils, repo, Readers(repo, key), connector, queue)
            sent = 0
            while n := worker.step(200):
                sent += n
                if worker.pause_s:  # the library system is down: the queue keeps the rest
                    break
            summary = queue.summary()
            _print(args, {"tried": sent, "pending": summary["pending"], "held": summary["held"]})
            return 0
        finally:
            connector.close()
    finally:
        repo.close()


def register_central(sub: Any) -> None:
    """``central ils …`` under ``central``'s subcommands."""
    p = sub.add_parser(
        "ils",
        help="the library system central pushes readers to: check, status, resync",
        description="Central pushes every reader's registration, renewal, block and erasure to "
        "the library system of [ils] (Koha's REST API) through a durable queue, and asks back "
        "whether its readers are blocked, expired or deleted there. `check` tries the account, "
        "`status` shows the queue and what waits and why (exit 1 when something is held for a "
        "person), `resync` releases held items and pushes every reader (or one) again, `drain` "
        "sends what is due now in the foreground (when central is not running).",
    )
    c = p.add_subparsers(dest="ils_command", required=True, metavar="check|status|resync|drain")
    for name, text in (
        ("check", "reach the library system with the account of [ils]"),
        ("status", "the queue of pushes to the library system: pending, held (and why)"),
        ("resync", "release held items and push every reader (or --patron) to the library system"),
        ("drain", "send what is due to the library system now, in the foreground"),
    ):
        a = c.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}.")
        a.add_argument("--config", type=Path, required=True, help="central TOML file")
        a.add_argument("--json", action="store_true")
        if name == "resync":
            a.add_argument("--patron", help="one reader's patron number")
        a.set_defaults(func=_cmd)

"""``biblioedge central alerts test|status|run``: the alerts of ``[alerts]`` as IT checks them.

Imports of fleet code are inside the commands: ``biblioedge --help`` does not load central."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from biblioedge.settings import ConfigError


def _cmd(args: argparse.Namespace) -> int:
    from biblioedge.fleet.alerts.worker import AlertWorker
    from biblioedge.fleet.config import load_central_config
    from biblioedge.fleet.repo import Repo
    from biblioedge.keys import load_or_create_key

    cfg = load_central_config(args.config)
    if cfg.alerts is None:
        raise ConfigError("no [alerts] section: alerts are off (docs/alerts.md)")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    repo = Repo(cfg.db_url)
    try:
        repo.migrate(load_or_create_key(cfg.data_dir / "keys" / "templates.key"))
        worker = AlertWorker(cfg, repo)
        doc: dict[str, Any]
        if args.alerts_command == "test":
            doc = {"queued": worker.test(), **worker.deliver()}
        elif args.alerts_command == "run":
            doc = {"queued": worker.check(), **worker.deliver()}
        else:
            doc = worker.store.summary()
    finally:
        repo.close()
    if args.json:
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    else:
        for key, value in doc.items():
            if isinstance(value, list):
                for row in value:
                    sys.stdout.write(f"  {key}: {' '.join(str(v) for v in row.values())}\n")
                continue
            sys.stdout.write(f"{key:>10}: {value}\n")
    failed = doc.get("failed", 0) or doc.get("dropped", 0) if args.alerts_command != "status" else 0
    return 1 if failed else 0


def register_central(sub: Any) -> None:
    """``central alerts …`` under ``central``'s subcommands."""
    p = sub.add_parser(
        "alerts",
        help="alerts by e-mail and webhooks: test the targets, see what waits",
        description="Central watches for kiosks offline too long, degraded health, failed "
        "updates, halted rollouts, security cases and stale backups, and tells the targets of "
        "[alerts] (SMTP, webhooks for chat apps) when one starts and when it ends. `test` sends "
        "a test message to every target now (exit 1 when one fails), `status` shows what waits "
        "and what is active, `run` looks once and sends (when central is not running).",
    )
    c = p.add_subparsers(dest="alerts_command", required=True, metavar="test|status|run")
    for name, text in (
        ("test", "send a test message to every target of [alerts] now"),
        ("status", "the alerts active now and the messages waiting (with why)"),
        ("run", "look once and send what is due, in the foreground"),
    ):
        a = c.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}.")
        a.add_argument("--config", type=Path, required=True, help="central TOML file")
        a.add_argument("--json", action="store_true")
        a.set_defaults(func=_cmd)

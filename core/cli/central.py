"""``biblioedge central``: run central (its ``init`` and ``token`` actions are in identity)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from biblioedge.cli import identity
from biblioedge.logs import setup_logging
from biblioedge.settings import check_data_dir


def _cmd_central(args: argparse.Namespace) -> int:
    # loaded when the command runs: the web app is heavy (see cli/agent.py)
    from biblioedge.fleet.central import run_central
    from biblioedge.fleet.config import load_central_config

    overrides: dict[str, Any] = {}
    if args.data is not None:
        overrides["data_dir"] = str(args.data)
    if args.db:
        overrides["database_url"] = args.db
    if args.broker:
        overrides["broker"] = {"url": args.broker}
    http = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if http:
        overrides["http"] = http
    config = load_central_config(args.config, overrides=overrides)
    check_data_dir(config.data_dir)
    setup_logging(args.log_format or config.log.format, config.log.level)
    return asyncio.run(run_central(config, config_file=args.config))


def register(sub: Any) -> None:
    p = sub.add_parser(
        "central",
        help="run central (API + MQTT bridge)",
        description="Run central: the HTTP API under /api/v1 (HTTPS) and the MQTT bridge that "
        "stores device events exactly once. `central init` makes its keys and the broker's "
        "files; `central token create` makes the API tokens (there is no default one).",
    )
    p.add_argument("--config", type=Path, help="central TOML file (or BIBLIOEDGE_CENTRAL_CONFIG)")
    p.add_argument("--data", type=Path, help="data directory (SQLite database lives here)")
    p.add_argument("--db", help="database URL (default SQLite in the data directory)")
    p.add_argument("--broker", help="broker URL, mqtt://host:port")
    p.add_argument("--host", help="API listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="API port (default 8080)")
    p.set_defaults(func=_cmd_central)
    identity.register_central(p)

"""``biblioedge config check|schema``: an agent's or central's configuration."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from biblioedge.settings import check_data_dir


def _cmd_config_check(args: argparse.Namespace) -> int:
    # the config models load when the command runs (see cli/agent.py)
    if args.central:
        from biblioedge.fleet.config import load_central_config

        check_data_dir(load_central_config(args.file).data_dir)
    else:
        from biblioedge.agent.config import load_config

        check_data_dir(load_config(args.file).data_dir)
    sys.stdout.write(f"{args.file}: ok\n")
    return 0


def _cmd_config_schema(args: argparse.Namespace) -> int:
    if args.central:
        from biblioedge.fleet.config import CentralConfig as Model
    else:
        from biblioedge.agent.config import AgentConfig as Model  # type: ignore[assignment]
    sys.stdout.write(json.dumps(Model.model_json_schema(), indent=2, ensure_ascii=False) + "\n")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_cmd", required=True, metavar="ACTION")
    c = csub.add_parser("check", help="validate a config file and the environment")
    c.add_argument("file", type=Path, help="the TOML file to check")
    c.add_argument("--central", action="store_true", help="the file is central's")
    c.set_defaults(func=_cmd_config_check)
    c = csub.add_parser(
        "schema", help="print the JSON schema of the config: every key, type and description"
    )
    c.add_argument("--central", action="store_true", help="central's config instead of agent's")
    c.set_defaults(func=_cmd_config_schema)

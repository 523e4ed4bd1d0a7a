"""``biblioedge agent``: run a kiosk agent.

Like every command module here, it imports the implementation inside the command function:
the command line loads only the command that runs (a kiosk never loads central's web app,
central has no kiosk extras such as cv2 or kivy, and each child process starts quickly).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from biblioedge.logs import setup_logging
from biblioedge.settings import check_data_dir


def _cmd_agent(args: argparse.Namespace) -> int:
    from biblioedge.agent.config import load_config
    from biblioedge.agent.runtime import AgentRuntime
    from biblioedge.sim.kiosk import kiosk_actors

    overrides: dict[str, Any] = {}
    for key in ("role", "site", "device_id", "data_dir"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.broker:
        overrides["broker"] = {"url": args.broker}
    if args.metrics_port is not None:
        overrides["metrics"] = {"port": args.metrics_port}
    if args.simulate is not None:
        overrides["simulator"] = {"enabled": True, "rate_per_s": args.simulate}
    config = load_config(args.config, overrides=overrides)
    check_data_dir(config.data_dir)
    setup_logging(args.log_format or config.log.format, config.log.level)
    return asyncio.run(AgentRuntime(config, extras=[kiosk_actors]).run())


def register(sub: Any) -> None:
    p = sub.add_parser(
        "agent",
        help="run a kiosk agent",
        description="Run the agent of one kiosk: local store, sync with central, role flows. "
        "Settings come from --config, then BIBLIOEDGE_AGENT_* variables, then these flags.",
    )
    p.add_argument("--config", type=Path, help="agent TOML file (or BIBLIOEDGE_AGENT_CONFIG)")
    p.add_argument(
        "--role", choices=["gate", "selfcheck", "desk", "exitgate"], help="the kiosk's role"
    )
    p.add_argument("--site", help="site id")
    p.add_argument("--device-id", dest="device_id", help="device id")
    p.add_argument("--data", dest="data_dir", type=Path, help="data directory")
    p.add_argument("--broker", help="broker URL, mqtt://host:port")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0: any free port)")
    p.add_argument(
        "--simulate", type=float, metavar="RATE", help="emit simulated role events, RATE per s"
    )
    p.set_defaults(func=_cmd_agent)

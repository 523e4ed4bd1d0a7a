"""``biblioedge broker``: the embedded MQTT broker for machines without mosquitto."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from biblioedge.logs import setup_logging


def _cmd_broker(args: argparse.Namespace) -> int:
    # loaded when the command runs (see cli/agent.py)
    from biblioedge.provisioning.broker import run_embedded

    setup_logging(args.log_format or "human")
    asyncio.run(run_embedded(args.port, args.host))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "broker",
        help="run the embedded MQTT broker (amqtt)",
        description="The fallback broker for machines without mosquitto. Loopback only.",
    )
    p.add_argument("--port", type=int, default=1883, help="TCP port (default 1883)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.set_defaults(func=_cmd_broker)

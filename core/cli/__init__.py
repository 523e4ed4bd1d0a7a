"""The ``biblioedge`` command: every program of the product behind one entry point.

Each command lives in a module of its own here with one ``register(sub)`` that adds its
parser; ``COMMANDS`` is the order of ``biblioedge --help``. A command module imports what
the command runs inside the command function (the reason is in cli/agent.py's docstring).
The command line sits on top of the tools tier: bench and demo never import it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from biblioedge import __version__
from biblioedge.cli import (
    agent,
    bench,
    broker,
    cccd,
    central,
    config,
    demo,
    face,
    identity,
    install,
    kiosk,
    release,
    rfid,
    sip,
)
from biblioedge.settings import ConfigError

log = logging.getLogger("biblioedge.cli")

#: The command modules in the order ``--help`` lists their commands.
COMMANDS = (
    agent,
    central,
    identity,
    broker,
    demo,
    bench,
    kiosk,
    config,
    face,
    cccd,
    sip,
    rfid,
    release,
    install,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biblioedge",
        description="Library kiosks (gates, self-checkout, card desk) and their central service.",
    )
    parser.add_argument("--version", action="version", version=f"biblioedge {__version__}")
    parser.add_argument(
        "--log-format", choices=["human", "json"], help="log line format (default: config)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        sys.stderr.write(f"biblioedge: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    except (ValueError, RuntimeError, LookupError) as exc:
        # Our own deliberate refusals (bad image, corrupt model, unknown id) end with their
        # message; anything else is a bug and keeps its traceback.
        if not type(exc).__module__.startswith("biblioedge."):
            raise
        sys.stderr.write(f"biblioedge: {exc}\n")
        return 2

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
    _explain(parser)
    return parser


#: Said once here for every command's ``--json`` switch.
JSON_HELP = "print one JSON document on stdout instead of text (for scripts)"


def _explain(parser: argparse.ArgumentParser) -> None:
    """A subcommand's own ``--help`` repeats the line its parent lists it with (argparse
    shows that line only in the parent's list), and every ``--json`` switch says what it
    does; tests/test_cli.py checks that no option is left without a help text."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                if child.description is None and helps.get(name):
                    child.description = helps[name]
                _explain(child)
        elif action.option_strings == ["--json"] and action.help is None:
            action.help = JSON_HELP


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

"""``biblioedge demo``: a whole fleet on one machine, and its hidden ``demo-fleet`` child."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from biblioedge.logs import setup_logging


def _cmd_demo(args: argparse.Namespace) -> int:
    # loaded when the command runs (see cli/agent.py)
    from biblioedge.demo import run_demo

    setup_logging(args.log_format or "human")
    return run_demo(
        args.data,
        rate=args.rate,
        port=args.port,
        duration=args.duration,
        fleet=not args.no_fleet,
        ils_url=args.ils_url,
    )


def _cmd_demo_fleet(args: argparse.Namespace) -> int:
    from biblioedge.demo.fleet import run_fleet

    setup_logging(args.log_format or "human", "INFO")
    return run_fleet(args.data, args.central, args.token_file, args.ca)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run a demo fleet on this machine",
        description="Start a broker (mosquitto if installed, else embedded), central with "
        "SQLite, and one simulated gate, self-checkout and desk. The desk registers a simulated "
        "citizen from her simulated chip (pcscd + vpcd when installed, else from her QR); the "
        "gate then recognizes her. Twenty more simulated kiosks at two branches receive a good "
        "release wave by wave, then a broken one that halts at its canary; the fleet dashboard "
        "shows it. Printed cards go to DATA/cards. Ctrl-C stops everything.",
    )
    p.add_argument("--data", type=Path, default=Path("demo-data"), help="where state is kept")
    p.add_argument("--port", type=int, default=8080, help="API port (0: any free port)")
    p.add_argument("--rate", type=float, default=0.5, help="simulated events/s per device")
    p.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    p.add_argument(
        "--no-fleet", action="store_true", help="without the twenty kiosks and their rollouts"
    )
    p.add_argument(
        "--ils-url",
        metavar="koha+http://USER:PASSWORD@HOST:PORT/",
        help="push the demo's readers to this library system's patron API (Koha's REST API) "
        "instead of the dummy's; the demo's branches map to Koha's sample libraries CPL and "
        "MPL, adults and children to categories PT and J, and the keyed hash of the ID number "
        "goes to the extended attribute CCCD_REF (create it in Koha)",
    )
    p.set_defaults(func=_cmd_demo)
    # the demo's own child process; without help= argparse leaves it out of the command list
    # (help=SUPPRESS would list it as "==SUPPRESS==")
    p = sub.add_parser(
        "demo-fleet", description="The demo's kiosks in one process (`biblioedge demo` starts it)."
    )
    p.add_argument("--data", type=Path, required=True, help="the fleet's data directory")
    p.add_argument("--central", required=True, help="central's URL")
    p.add_argument("--token-file", type=Path, required=True, help="an admin API token")
    p.add_argument("--ca", type=Path, required=True, help="central's CA certificate")
    p.set_defaults(func=_cmd_demo_fleet)

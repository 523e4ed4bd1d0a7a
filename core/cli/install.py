"""``biblioedge install --role …``: lay a kiosk out (see ``biblioedge.provisioning.install``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from biblioedge.settings import ConfigError

# what a command runs is imported inside its function (why: cli/agent.py)


def _cmd_install(args: argparse.Namespace) -> int:
    from biblioedge.provisioning.install import InstallRefused, Plan, install
    from biblioedge.provisioning.release_install import InstallError

    plan = Plan(
        role=args.role,
        release=args.release,
        prefix=args.prefix,
        data=args.data,
        config=args.config,
        units_dir=args.units_dir,
        udev_dir=args.udev_dir,
        user=args.user,
        create_user=not args.no_user,
        enable=not args.no_enable,
        screen=not args.no_screen,
    )
    try:
        done = install(plan)
    except (InstallRefused, InstallError) as exc:
        raise ConfigError(str(exc)) from exc
    sys.stdout.write(
        (json.dumps(done) if args.json else f"installed {done['version']} in {done['prefix']}")
        + "\n"
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "install",
        help="install biblioedge on a kiosk (Debian 12, Raspberry Pi OS)",
        description="Create the agent's user, the release prefix and data dir, build the first "
        "release's venv from a 'release build' directory, and install the systemd units and "
        "udev rules. Safe to run again.",
    )
    p.add_argument(
        "--role",
        required=True,
        choices=["gate", "selfcheck", "desk", "exitgate"],
        help="the kiosk's role",
    )
    p.add_argument("--release", type=Path, required=True, help="a 'release build' directory")
    p.add_argument("--prefix", type=Path, default=Path("/opt/biblioedge"), help="where releases go")
    p.add_argument(
        "--data", type=Path, default=Path("/var/lib/biblioedge"), help="the agent's data directory"
    )
    p.add_argument(
        "--config",
        type=Path,
        default=Path("/etc/biblioedge/agent.toml"),
        help="the agent's TOML file",
    )
    p.add_argument(
        "--units-dir",
        type=Path,
        default=Path("/etc/systemd/system"),
        help="where the systemd units go",
    )
    p.add_argument(
        "--udev-dir",
        type=Path,
        default=Path("/etc/udev/rules.d"),
        help="where the udev rules go",
    )
    p.add_argument("--user", default="biblioedge", help="the agent's system user")
    p.add_argument("--no-user", action="store_true", help="do not create the user")
    p.add_argument("--no-enable", action="store_true", help="do not enable the units")
    p.add_argument("--no-screen", action="store_true", help="no kiosk screen unit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_install)

"""``biblioedge kiosk run|screenshot``: the kiosk's touch screen."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from biblioedge.logs import setup_logging


def _cmd_kiosk_run(args: argparse.Namespace) -> int:
    # kivy (the kiosk extra) loads only when a screen runs (see cli/agent.py)
    from biblioedge.agent.config import load_config
    from biblioedge.kiosk.app import run_kiosk
    from biblioedge.sim.kiosk import kiosk_actors

    config = load_config(args.config)
    setup_logging(args.log_format or config.log.format, config.log.level)
    return asyncio.run(
        run_kiosk(config, fullscreen=not args.window, lang=args.lang, extras=[kiosk_actors])
    )


def _cmd_kiosk_screenshot(args: argparse.Namespace) -> int:
    from biblioedge.kiosk.screenshots import (
        render_desk,
        render_exitgate,
        render_gate,
        render_selfcheck,
    )

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        sys.stderr.write(f"biblioedge: --size is WIDTHxHEIGHT, got {args.size!r}\n")
        return 2
    frame = None
    if args.frame is not None:
        from biblioedge.models.image import read_image

        frame = read_image(args.frame)
    render = {
        "desk": render_desk,
        "selfcheck": render_selfcheck,
        "exitgate": render_exitgate,
    }.get(args.screen, render_gate)
    brand = {"library_name": args.library_name, "logo": str(args.logo) if args.logo else None}
    for path in render(args.out, (width, height), frame, brand):
        sys.stdout.write(f"{path}\n")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("kiosk", help="kiosk screens")
    ksub = p.add_subparsers(dest="kiosk_cmd", required=True, metavar="ACTION")
    k = ksub.add_parser(
        "screenshot",
        help="render a screen in each of its states to PNG files (off screen)",
        description="Render a kiosk screen in each of its states (the gate: idle, granted, "
        "hint, denied, blocked, out of service, offline; the desk's steps; the self-check's "
        "steps with loans, problems, offline and receipt; the exit gate at rest, alarmed and "
        "out of service; each also in English) to PNG files, without a display, each with a "
        "<state>.texts.json naming every text shown (box, colour, size).",
    )
    k.add_argument(
        "screen", choices=["gate", "desk", "selfcheck", "exitgate"], help="which kiosk's screens"
    )
    k.add_argument("--out", type=Path, required=True, help="directory for the PNG files")
    k.add_argument("--size", default="1024x600", help="WIDTHxHEIGHT (default 1024x600)")
    k.add_argument("--frame", type=Path, help="an image to show as the camera preview")
    k.add_argument(
        "--library-name",
        default="Thư viện tỉnh",
        help="the name at the top ([screen] library_name)",
    )
    k.add_argument("--logo", type=Path, help="the logo beside it ([screen] logo), PNG or JPEG")
    k.set_defaults(func=_cmd_kiosk_screenshot)
    k = ksub.add_parser(
        "run",
        help="run the agent with its touch screen (gate, desk or self-check)",
        description="The agent and its screen in one process. Full screen by default; the "
        "screen is Vietnamese with an English button.",
    )
    k.add_argument("--config", type=Path, help="agent TOML file (or BIBLIOEDGE_AGENT_CONFIG)")
    k.add_argument("--window", action="store_true", help="a window instead of full screen")
    k.add_argument("--lang", choices=["vi", "en"], default="vi", help="first language")
    k.set_defaults(func=_cmd_kiosk_run)

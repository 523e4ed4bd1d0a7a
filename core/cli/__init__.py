"""The ``biblioedge`` command: every program of the product behind one entry point."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from biblioedge import __version__
from biblioedge.bench import reports as bench_reports
from biblioedge.logs import setup_logging
from biblioedge.settings import ConfigError, check_data_dir

log = logging.getLogger("biblioedge.cli")


def _cmd_agent(args: argparse.Namespace) -> int:
    from biblioedge.agent.config import load_config
    from biblioedge.agent.runtime import AgentRuntime

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
    return asyncio.run(AgentRuntime(config).run())


def _cmd_central(args: argparse.Namespace) -> int:
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
    return asyncio.run(run_central(config))


def _cmd_broker(args: argparse.Namespace) -> int:
    from biblioedge.provisioning.broker import run_embedded

    setup_logging(args.log_format or "human")
    asyncio.run(run_embedded(args.port, args.host))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from biblioedge.demo import run_demo

    setup_logging(args.log_format or "human")
    return run_demo(
        args.data, rate=args.rate, port=args.port, duration=args.duration, fleet=not args.no_fleet
    )


def _cmd_bench_sync(args: argparse.Namespace) -> int:
    from biblioedge.bench import print_result
    from biblioedge.bench.sync import bench_sync, bench_sync_flood, bench_sync_tls

    setup_logging(args.log_format or "human", "WARNING")
    if args.flood_device and args.tls:
        sys.stderr.write("biblioedge: --flood-device and --tls are separate runs\n")
        return 2
    run = bench_sync_flood if args.flood_device else bench_sync_tls if args.tls else bench_sync
    result = run(
        events=args.events,
        devices=args.devices,
        faults=args.faults,
        work_dir=args.work_dir,
        progress=not args.json,
    )
    print_result(result, as_json=args.json)
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


def _cmd_bench_face(args: argparse.Namespace) -> int:
    from biblioedge.bench import print_result
    from biblioedge.bench.face import bench_face

    setup_logging(args.log_format or "human", "WARNING")
    try:
        sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    except ValueError:
        sys.stderr.write(f"biblioedge: --sizes must be numbers, got {args.sizes!r}\n")
        return 2
    result = bench_face(
        sizes=sizes,
        probes=args.probes,
        repeat=args.repeat,
        data=args.data,
        progress=not args.json,
    )
    print_result(result, as_json=args.json)
    return 0


def _cmd_bench_auth_flood(args: argparse.Namespace) -> int:
    from biblioedge.bench import print_result
    from biblioedge.bench.auth import bench_auth_flood

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_auth_flood(threads=args.threads, seconds=args.seconds, samples=args.samples)
    print_result(result, as_json=args.json)
    return 0


def _cmd_bench_codes(args: argparse.Namespace) -> int:
    from biblioedge.bench import print_result
    from biblioedge.bench.codes import bench_codes

    print_result(bench_codes(args.frames, args.repeat), as_json=args.json)
    return 0


def _cmd_bench_desk(args: argparse.Namespace) -> int:
    from biblioedge.bench import print_result
    from biblioedge.bench.desk import bench_desk

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_desk(args.rounds, args.runs, progress=not args.json)
    print_result(result, as_json=args.json)
    return 0


def _cmd_bench_gate(args: argparse.Namespace) -> int:
    from biblioedge.bench import print_result
    from biblioedge.bench.gate import bench_gate

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_gate(
        args.people,
        args.rounds,
        args.frames,
        progress=not args.json,
        baseline=not args.no_baseline,
    )
    print_result(result, as_json=args.json)
    return 0


def _cmd_bench_selfcheck(args: argparse.Namespace) -> int:
    from biblioedge.bench import print_result
    from biblioedge.bench.selfcheck import bench_selfcheck

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_selfcheck(args.rounds, args.offline, progress=not args.json)
    print_result(result, as_json=args.json)
    return 0


def _cmd_bench_exitgate(args: argparse.Namespace) -> int:
    from biblioedge.bench import print_result
    from biblioedge.bench.exitgate import bench_exitgate

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_exitgate(args.passes, scale=args.scale, progress=not args.json)
    print_result(result, as_json=args.json)
    return 0


def _cmd_demo_fleet(args: argparse.Namespace) -> int:
    from biblioedge.demo.fleet import run_fleet

    setup_logging(args.log_format or "human", "INFO")
    return run_fleet(args.data, args.central, args.token_file, args.ca)


def _cmd_bench_rollout(args: argparse.Namespace) -> int:
    from biblioedge.bench import print_result
    from biblioedge.bench.rollout import bench_rollout

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_rollout(
        devices=args.devices,
        bad=args.bad,
        sites=args.sites,
        soak_s=args.soak,
        max_per_site=args.max_per_site,
        progress=True,
    )
    print_result(result, as_json=args.json)
    return 0


def _cmd_kiosk_run(args: argparse.Namespace) -> int:
    from biblioedge.agent.config import load_config
    from biblioedge.kiosk.app import run_kiosk

    config = load_config(args.config)
    setup_logging(args.log_format or config.log.format, config.log.level)
    return asyncio.run(run_kiosk(config, fullscreen=not args.window, lang=args.lang))


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
    for path in render(args.out, (width, height), frame):
        sys.stdout.write(f"{path}\n")
    return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    if args.central:
        from biblioedge.fleet.config import load_central_config

        check_data_dir(load_central_config(args.file).data_dir)
    else:
        from biblioedge.agent.config import load_config

        check_data_dir(load_config(args.file).data_dir)
    sys.stdout.write(f"{args.file}: ok\n")
    return 0


def _cmd_config_schema(args: argparse.Namespace) -> int:
    import json

    if args.central:
        from biblioedge.fleet.config import CentralConfig as Model
    else:
        from biblioedge.agent.config import AgentConfig as Model  # type: ignore[assignment]
    sys.stdout.write(json.dumps(Model.model_json_schema(), indent=2, ensure_ascii=False) + "\n")
    return 0


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

    p = sub.add_parser(
        "agent",
        help="run a kiosk agent",
        description="Run the agent of one kiosk: local store, sync with central, role flows. "
        "Settings come from --config, then BIBLIOEDGE_AGENT_* variables, then these flags.",
    )
    p.add_argument("--config", type=Path, help="agent TOML file (or BIBLIOEDGE_AGENT_CONFIG)")
    p.add_argument("--role", choices=["gate", "selfcheck", "desk", "exitgate"])
    p.add_argument("--site", help="site id")
    p.add_argument("--device-id", dest="device_id", help="device id")
    p.add_argument("--data", dest="data_dir", type=Path, help="data directory")
    p.add_argument("--broker", help="broker URL, mqtt://host:port")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0: any free port)")
    p.add_argument(
        "--simulate", type=float, metavar="RATE", help="emit simulated role events, RATE per s"
    )
    p.set_defaults(func=_cmd_agent)

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
    from biblioedge.cli import identity as identitycli

    identitycli.register_central(p)
    identitycli.register(sub)

    p = sub.add_parser(
        "broker",
        help="run the embedded MQTT broker (amqtt)",
        description="The fallback broker for machines without mosquitto. Loopback only.",
    )
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=_cmd_broker)

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
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("demo-fleet", help=argparse.SUPPRESS)  # the demo's own child
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--central", required=True)
    p.add_argument("--token-file", type=Path, required=True)
    p.add_argument("--ca", type=Path, required=True)
    p.set_defaults(func=_cmd_demo_fleet)

    p = sub.add_parser("bench", help="benchmarks (JSON output with --json)")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    bench_reports.register(bsub)
    b = bsub.add_parser(
        "sync",
        help="agent outbox to central database, end to end",
        description="Queue events in agents' outboxes, then measure how fast they reach "
        "central's database through a real broker: throughput, the drain of a backlog queued "
        "while the broker was down, loss and duplication. --faults kills an agent with SIGKILL "
        "mid-send and restarts the broker and central during the run. Central's per-device "
        "quotas are off (the capacity is measured), except with --flood-device.",
    )
    b.add_argument("--events", type=int, default=100_000, help="events per phase, all devices")
    b.add_argument("--devices", type=int, default=1, help="agent processes")
    b.add_argument("--faults", action="store_true", help="inject kill -9 and restarts")
    b.add_argument(
        "--tls",
        action="store_true",
        help="run plain and mutual-TLS (ACLs, signed acks) in the same run; report both",
    )
    b.add_argument(
        "--flood-device",
        action="store_true",
        help="run the honest kiosks (at least 3) twice under central's default quotas, the "
        "second time beside a compromised kiosk flooding at its link's rate; report "
        "honest_ratio and how much of the flood was refused",
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--work-dir", type=Path, help="keep the run's files here (default: temp)")
    b.set_defaults(func=_cmd_bench_sync)

    b = bsub.add_parser(
        "face",
        help="face engine: per-stage latency per backend, 1:N search at scale",
        description="p50/p95 ms of detect, align, embed and match for each available backend "
        "(dlib, and the active ONNX models of --data), then 1:N search over face-like "
        "galleries of 512-d templates: the gallery's fast mode against numpy float32 brute "
        "force on one core, with top-1 and decision agreement and memory.",
    )
    b.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        help="gallery sizes, comma-separated (default: 10000,100000,1000000)",
    )
    b.add_argument(
        "--probes", type=int, default=200, help="enrolled probes (and as many strangers)"
    )
    b.add_argument("--repeat", type=int, default=5, help="timed runs per image and stage")
    b.add_argument("--data", type=Path, help="agent data dir whose active models to include")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_face)

    b = bsub.add_parser(
        "codes",
        help="QR on 1280x720 frames: zxing-cpp and pyzbar side by side",
        description="ms per frame, read rate and false reads of both decoders over generated "
        "library-card QR frames (scale, rotation, blur, dim light, noise) and empty frames.",
    )
    b.add_argument("--frames", type=int, default=80, help="frames (a quarter without a code)")
    b.add_argument("--repeat", type=int, default=3, help="timed decodes per frame")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_codes)

    b = bsub.add_parser(
        "auth-flood",
        help="a real user's API latency beside a wrong-token flood, throttled and not",
        description="Central on a real broker, twice in the same run: with the failed-"
        "authentication throttle out of reach (the baseline) and with the defaults. A real "
        "admin's median latency alone and while --threads clients send wrong tokens from "
        "another loopback address; the flood's rate and codes; central's CPU per request.",
    )
    b.add_argument("--threads", type=int, default=8, help="flooding clients")
    b.add_argument("--seconds", type=float, default=3.0, help="length of each flood")
    b.add_argument("--samples", type=int, default=60, help="user requests per median")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_auth_flood)

    b = bsub.add_parser(
        "gate",
        help="the whole gate: latency, people per minute, false accepts and rejects",
        description="Real faces from packaged images (half enrolled, half strangers), augmented "
        "(scale, rotation, yaw, light, blur, noise, scarf), played through the simulated camera "
        "into the real gate flow, dlib engine and turnstile simulator. The engine runs in its "
        "worker process as on a kiosk; the same approaches are then run with it on a thread, "
        "as the baseline. Reported beside the latencies: the engine's own detect, align and "
        "embed times on the frames decided on, the overhead ratio and the event loop's lag.",
    )
    b.add_argument("--people", type=int, default=8, help="distinct people (at most 8 here)")
    b.add_argument("--rounds", type=int, default=5, help="approaches per person")
    b.add_argument("--frames", type=int, default=6, help="augmented frames per approach")
    b.add_argument(
        "--no-baseline", action="store_true", help="skip the run with the engine on a thread"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_gate)

    b = bsub.add_parser(
        "desk",
        help="the card desk: chip reads (PACE vs BAC) and whole registrations with their taps",
        description="Starts pcscd with the vpcd virtual reader (or uses the running one), puts "
        "the simulated citizen's card on it, times chip reads with PACE and with BAC, then runs "
        "whole registrations through the real desk flow, face engine and central code, counting "
        "the librarian's taps.",
    )
    b.add_argument("--rounds", type=int, default=5, help="chip reads per access protocol")
    b.add_argument("--runs", type=int, default=3, help="whole registrations")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_desk)

    b = bsub.add_parser(
        "selfcheck",
        help="self-check loans from tags on the pad to done, and the offline backlog forwarded",
        description="Loans of 1, 5 and 10 tagged items through the real self-check flow, the "
        "3M 810 driver on a pty (simulated reader at 19200 baud plus air time per command) and "
        "the dummy library system over loopback SIP2 behind a delay proxy (latencies stated in "
        "the output), every security write read back; the baseline reads each tag's whole "
        "memory. Then offline transactions forwarded by a process killed with -9 part way "
        "(lost and duplicated counted at the library system).",
    )
    b.add_argument("--rounds", type=int, default=20, help="loans per stack size")
    b.add_argument(
        "--offline", type=int, default=10_000, help="offline transactions to forward (0: skip)"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_selfcheck)
    b = bsub.add_parser(
        "exitgate",
        help="walk-throughs of the exit gate: secured items detected, lent ones let through",
        description="Passes of 1 to 10 items (secured or lent) through the real exit-gate "
        "flow, the 3M 810 driver on a pty against the simulated reader on a noisy line, each "
        "stack in the field for 600 ms; time scaled by --scale (line speed, air time, dwell "
        "and gap alike). Reports secured_detected, false_alarms, and read-to-alarm p95 beside "
        "the reader's own inventory cycle for the same stacks, measured in the same run.",
    )
    b.add_argument("--passes", type=int, default=1000, help="people walking through")
    b.add_argument(
        "--scale", type=float, default=3.0, help="time runs this many times faster (1: real)"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_exitgate)
    b = bsub.add_parser(
        "rollout",
        help="a release rolled out to simulated kiosks over the real broker",
        description="Build two releases from this source tree, sign them offline, and roll "
        "one out to --devices simulated kiosks (each enrolled, on its own mutual-TLS MQTT "
        "connection, verifying with TUF and installing with pip into its own prefix) in "
        "waves of 1, 10 %% and the rest. With --bad the release dies at import: it must halt "
        "at its canary and every affected kiosk must be back on the previous release.",
    )
    b.add_argument("--devices", type=int, default=200)
    b.add_argument("--bad", action="store_true", help="roll out a release that is broken")
    b.add_argument("--sites", type=int, default=2, help="branches the kiosks are spread over")
    b.add_argument("--soak", type=float, default=2.0, help="seconds of soak before commit")
    b.add_argument("--max-per-site", type=int, default=0, help="disruption budget (0: no limit)")
    b.add_argument("--json", action="store_true", help="one JSON object on stdout")
    b.set_defaults(func=_cmd_bench_rollout)

    p = sub.add_parser("kiosk", help="kiosk screens")
    ksub = p.add_subparsers(dest="kiosk_cmd", required=True, metavar="ACTION")
    k = ksub.add_parser(
        "screenshot",
        help="render a screen in each of its states to PNG files (off screen)",
        description="Render a kiosk screen in each of its states (the gate: idle, granted, "
        "hint, denied, blocked, out of service, offline; the desk's steps; the self-check's "
        "steps with loans, problems, offline and receipt; the exit gate at rest, alarmed and "
        "out of service; each also in English) to PNG files, "
        "without a display.",
    )
    k.add_argument("screen", choices=["gate", "desk", "selfcheck", "exitgate"])
    k.add_argument("--out", type=Path, required=True, help="directory for the PNG files")
    k.add_argument("--size", default="1024x600", help="WIDTHxHEIGHT (default 1024x600)")
    k.add_argument("--frame", type=Path, help="an image to show as the camera preview")
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

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_cmd", required=True, metavar="ACTION")
    c = csub.add_parser("check", help="validate a config file and the environment")
    c.add_argument("file", type=Path)
    c.add_argument("--central", action="store_true", help="the file is central's")
    c.set_defaults(func=_cmd_config_check)
    c = csub.add_parser(
        "schema", help="print the JSON schema of the config: every key, type and description"
    )
    c.add_argument("--central", action="store_true", help="central's config instead of agent's")
    c.set_defaults(func=_cmd_config_schema)

    from biblioedge.cli.cccd import register as register_cccd
    from biblioedge.cli.face import register
    from biblioedge.cli.install import register as register_install
    from biblioedge.cli.release import register as register_release
    from biblioedge.cli.rfid import register as register_rfid
    from biblioedge.cli.sip import register as register_sip

    register(sub)
    register_cccd(sub)
    register_sip(sub)
    register_rfid(sub)
    register_release(sub)
    register_install(sub)
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

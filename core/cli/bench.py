"""``biblioedge bench …``: the benchmarks' command lines; each prints one JSON object with --json.

A benchmark's module is imported when it runs (see cli/agent.py): most need the kiosk extras
(numpy, cv2, the face engine) or start real processes, and none is needed to parse.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from biblioedge.bench import print_result
from biblioedge.logs import setup_logging


def _cmd_bench_sync(args: argparse.Namespace) -> int:
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
    from biblioedge.bench.auth import bench_auth_flood

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_auth_flood(threads=args.threads, seconds=args.seconds, samples=args.samples)
    print_result(result, as_json=args.json)
    return 0


def _cmd_bench_codes(args: argparse.Namespace) -> int:
    from biblioedge.bench.codes import bench_codes

    print_result(bench_codes(args.frames, args.repeat), as_json=args.json)
    return 0


def _cmd_bench_desk(args: argparse.Namespace) -> int:
    from biblioedge.bench.desk import bench_desk

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_desk(args.rounds, args.runs, progress=not args.json)
    print_result(result, as_json=args.json)
    return 0


def _cmd_bench_gate(args: argparse.Namespace) -> int:
    from biblioedge.bench.gate import bench_gate

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_gate(
        args.people,
        args.rounds,
        args.frames,
        progress=not args.json,
        baseline=not args.no_baseline,
        idle_s=args.idle_s,
    )
    print_result(result, as_json=args.json)
    return 0


def _cmd_bench_selfcheck(args: argparse.Namespace) -> int:
    from biblioedge.bench.selfcheck import bench_selfcheck

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_selfcheck(args.rounds, args.offline, progress=not args.json)
    print_result(result, as_json=args.json)
    return 0


def _cmd_bench_exitgate(args: argparse.Namespace) -> int:
    from biblioedge.bench.exitgate import bench_exitgate

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_exitgate(args.passes, scale=args.scale, progress=not args.json)
    print_result(result, as_json=args.json)
    return 0


def _cmd_bench_rollout(args: argparse.Namespace) -> int:
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


def _register_sync(bsub: Any) -> None:
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


def _register_face(bsub: Any) -> None:
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


def _register_codes(bsub: Any) -> None:
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


def _register_auth_flood(bsub: Any) -> None:
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


def _register_gate(bsub: Any) -> None:
    b = bsub.add_parser(
        "gate",
        help="the whole gate: latency, people per minute, false accepts and rejects",
        description="Real faces from packaged images (half enrolled, half strangers), augmented "
        "(scale, rotation, yaw, light, blur, noise, scarf), played through the simulated camera "
        "into the real gate flow, dlib engine and turnstile simulator. The engine runs in its "
        "worker process as on a kiosk; the same approaches are then run with it on a thread, "
        "as the baseline. Reported beside the latencies: the engine's own detect, align and "
        "embed times on the frames decided on, the overhead ratio and the event loop's lag. "
        "Then an empty lobby: the CPU share (one core = 100) with idling and with the detector "
        "on every frame, and the time to the first look at a reader stepping up in each mode.",
    )
    b.add_argument("--people", type=int, default=8, help="distinct people (at most 8 here)")
    b.add_argument("--rounds", type=int, default=5, help="approaches per person")
    b.add_argument("--frames", type=int, default=6, help="augmented frames per approach")
    b.add_argument(
        "--no-baseline", action="store_true", help="skip the run with the engine on a thread"
    )
    b.add_argument(
        "--idle-s",
        type=float,
        default=8.0,
        help="seconds of empty lobby per idle run (four runs; 0 skips the idle phase)",
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_gate)


def _register_desk(bsub: Any) -> None:
    b = bsub.add_parser(
        "desk",
        help="the card desk: chip reads (PACE vs BAC) and whole registrations with their taps",
        description="Starts pcscd with the vpcd virtual reader (or uses the running one), puts "
        "the simulated citizen's card on it, times chip reads with PACE and with BAC, then runs "
        "whole registrations through the real desk flow, face engine and central code, counting "
        "the librarian's taps; each walk-in alternates with the same reader registered from "
        "home (prereg_confirm_s beside walkin_s).",
    )
    b.add_argument("--rounds", type=int, default=5, help="chip reads per access protocol")
    b.add_argument(
        "--runs", type=int, default=3, help="walk-in registrations (and as many pre-registered)"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_desk)


def _register_selfcheck(bsub: Any) -> None:
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


def _register_exitgate(bsub: Any) -> None:
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


def _register_rollout(bsub: Any) -> None:
    b = bsub.add_parser(
        "rollout",
        help="a release rolled out to simulated kiosks over the real broker",
        description="Build two releases from this source tree, sign them offline, and roll "
        "one out to --devices simulated kiosks (each enrolled, on its own mutual-TLS MQTT "
        "connection, verifying with TUF and installing with pip into its own prefix) in "
        "waves of 1, 10 %% and the rest. With --bad the release dies at import: it must halt "
        "at its canary and every affected kiosk must be back on the previous release.",
    )
    b.add_argument("--devices", type=int, default=200, help="simulated kiosks (default 200)")
    b.add_argument("--bad", action="store_true", help="roll out a release that is broken")
    b.add_argument("--sites", type=int, default=2, help="branches the kiosks are spread over")
    b.add_argument("--soak", type=float, default=2.0, help="seconds of soak before commit")
    b.add_argument("--max-per-site", type=int, default=0, help="disruption budget (0: no limit)")
    b.add_argument("--json", action="store_true", help="one JSON object on stdout")
    b.set_defaults(func=_cmd_bench_rollout)


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks (JSON output with --json)")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    _register_sync(bsub)
    _register_face(bsub)
    _register_codes(bsub)
    _register_auth_flood(bsub)
    _register_gate(bsub)
    _register_desk(bsub)
    _register_selfcheck(bsub)
    _register_exitgate(bsub)
    _register_rollout(bsub)
    _register_continuity(bsub)
    _register_lifecycle(bsub)
    _register_reports(bsub)


def _cmd_bench_continuity(args: argparse.Namespace) -> int:
    from biblioedge.bench.continuity import bench_phases

    setup_logging(args.log_format or "human", "WARNING")
    result = bench_phases(args)
    print_result(result, as_json=args.json)
    return 0 if all(result["targets"].values()) else 1


def _register_continuity(bsub: Any) -> None:
    b = bsub.add_parser(
        "continuity",
        help="central's disk dies: backup, restore, and the kiosks' replay lose nothing",
        description="Real mosquitto (mutual TLS), central and kiosk agents: a backup while "
        "central runs, --events more acknowledged after it, central killed and its data "
        "directory deleted, `central restore`, and the kiosks asked to send again what the "
        "lost central had acknowledged. Reports lost, duplicated, restore_s, replay_s and "
        "rto_s beside ingest_s, the same events' first delivery in the same run.",
    )
    b.add_argument(
        "--phase",
        choices=("restore", "replicas", "reconnect", "all"),
        default="all",
        help="restore: above; replicas: two central replicas on PostgreSQL, the leader "
        "killed (SIGKILL) mid-stream: lost, duplicated, takeover_s, replica_ratio (two "
        "replicas' events/s over one's, alternated in the same run); reconnect: --kiosks "
        "simulated kiosks (own identity, own TLS connection, own outbox, the agent's Sync) "
        "queue --events-per-kiosk during a broker outage and come back at once: drain_s, lost, "
        "beside --baseline-kiosks carrying the same events; all: each in turn",
    )
    b.add_argument("--events", type=int, default=10_000, help="events after the backup")
    b.add_argument("--devices", type=int, default=2, help="kiosk agents")
    b.add_argument(
        "--postgres-url",
        help="replicas, reconnect: an empty PostgreSQL database (default: a private one each)",
    )
    b.add_argument("--kiosks", type=int, default=1000, help="reconnect: simulated kiosks")
    b.add_argument("--events-per-kiosk", type=int, default=100, help="reconnect: each backlog")
    b.add_argument("--baseline-kiosks", type=int, default=10, help="reconnect: the baseline")
    b.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="reconnect: central replicas on PostgreSQL (--postgres-url, or a private "
        "cluster); 0: one central on SQLite",
    )
    b.add_argument("--work-dir", type=Path, help="keep the run's files here (default: temp)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_continuity)


def _cmd_bench_lifecycle(args: argparse.Namespace) -> int:
    from biblioedge.bench.lifecycle import bench_lifecycle

    setup_logging(args.log_format or "human", "WARNING")
    print_result(bench_lifecycle(args.rounds, args.readers), as_json=args.json)
    return 0


def _register_lifecycle(bsub: Any) -> None:
    b = bsub.add_parser(
        "lifecycle",
        help="readers reaching the library system, and at every branch",
        description="Against the dummy library system over loopback (its Koha-shaped patron "
        "API): desk registrations applied at central until the patron is stored in the "
        "library system (p95, beside the registration alone), then READERS registrations "
        "queued while the library system is down and drained by `central ils drain` killed "
        "with -9 once part way: lost and duplicated patrons counted at the library system. "
        "Then the kiosks, built from the gate's own parts on central's real code: the new "
        "reader's card and face at the other branch's gate (beside her home branch), and a "
        "replaced card refused at every gate within one sync (beside a renewal followed the "
        "same way).",
    )
    b.add_argument("--rounds", type=int, default=50, help="registrations timed to the ILS")
    b.add_argument(
        "--readers", type=int, default=1000, help="registrations queued in the outage (0: skip)"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_lifecycle)


def _register_reports(bsub: Any) -> None:
    b = bsub.add_parser(
        "reports",
        help="a year's report from the rollups against the raw events, SQLite and PostgreSQL",
        description="Load --events synthetic events of two branches' year (bulk, through the "
        "rollup code central runs at ingest; some late, some twice), then time the year's "
        "report by site x day x hour from the rollups (report_p95_ms), compute it from the "
        "raw events in the same run (raw_ms, speedup, exact), and measure central's real "
        "ingest path on --sample events with rollups (queued for central's tally, which "
        "counts beside ingest) and without (ingest_ratio; counted_ratio and count_lag_s until "
        "the tally has counted everything; ingest_exact).",
    )
    b.add_argument("--events", type=int, default=2_000_000, help="events in the year")
    b.add_argument(
        "--database",
        choices=["sqlite", "postgresql", "both"],
        default="both",
        help="which database to measure (default both)",
    )
    b.add_argument(
        "--postgres-url",
        help="a PostgreSQL server to create databases on (default: a private temporary cluster)",
    )
    b.add_argument("--runs", type=int, default=20, help="timed reports")
    b.add_argument("--sample", type=int, default=20_000, help="events for ingest_ratio")
    b.add_argument("--work-dir", type=Path, help="keep the run's files here (default: temp)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench_reports)


def _cmd_bench_reports(args: argparse.Namespace) -> int:
    from biblioedge.bench.reports import bench_reports

    setup_logging(args.log_format or "human", "WARNING")
    dbs = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    result = bench_reports(
        args.events,
        dbs,
        args.postgres_url,
        args.runs,
        args.sample,
        args.work_dir,
        progress=not args.json,
    )
    print_result(result, as_json=args.json)
    return 0

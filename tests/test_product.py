"""The product's commands as a user runs them: --help, the demo, the benchmark, the wheel."""

import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from biblioedge.demo.launch import AgentProcess, CentralProcess, agent_config, wait_until
from biblioedge.provisioning.broker import BrokerProcess

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "biblioedge"]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["agent"],
        ["central"],
        ["broker"],
        ["demo"],
        ["bench"],
        ["bench", "sync"],
        ["config", "check"],
        ["config", "schema"],
        ["models"],
        ["face"],
        ["gallery"],
        ["kiosk"],
        ["cccd"],
        ["bench", "face"],
        ["bench", "gate"],
        ["bench", "codes"],
        ["central", "init"],
        ["central", "token", "create"],
        ["central", "token", "list"],
        ["central", "token", "revoke"],
        ["central", "report"],
        ["provision", "token"],
        ["enroll"],
        ["sip"],
        ["sip", "checkout"],
        ["sip", "serve"],
    ],
)
def test_every_command_has_help(args: list[str]) -> None:
    out = subprocess.run([*CLI, *args, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: biblioedge" in out.stdout and len(out.stdout) > 150


def test_bad_config_exits_2_with_reason(tmp_path: Path) -> None:
    conf = tmp_path / "a.toml"
    conf.write_text('role = "gate"\nsite = "s"\ndevice_id = "d"\ndata_dir = "/tmp"\nspeed = 3\n')
    out = subprocess.run(
        [*CLI, "agent", "--config", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "speed" in out.stderr and "Traceback" not in out.stderr


def test_demo_refuses_a_busy_port_and_a_data_dir_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [*CLI, "demo", "--data", str(tmp_path / "d"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2 and f"port {port} is in use" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    (tmp_path / "d").mkdir(exist_ok=True)
    with (tmp_path / "d" / "demo.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        out = subprocess.run(
            [*CLI, "demo", "--data", str(tmp_path / "d"), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2 and "another demo is running" in out.stderr, out.stderr


@pytest.mark.integration
def test_demo_runs_all_roles_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        # the fleet's rollouts are tested in test_fleet_rollout; here the three real kiosks
        [
            *CLI,
            "demo",
            "--data",
            str(tmp_path / "demo"),
            "--port",
            "0",
            "--rate",
            "20",
            "--no-fleet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _demo_story(proc, tmp_path)
    finally:
        if proc.poll() is None:  # a failed assertion must not leave a fleet running
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _demo_story(proc: subprocess.Popen[str], tmp_path: Path) -> None:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Ctrl-C" in line or not line:
            break
    banner = "".join(lines)
    told: list[str] = []  # the story as the demo prints it, read as it comes

    def read_story() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            told.append(line)

    reader = threading.Thread(target=read_story, daemon=True)
    reader.start()
    assert "biblioedge demo is running" in banner, banner
    api_url = next(w for w in banner.split() if w.endswith("/api/v1"))
    token = (tmp_path / "demo" / "admin-token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    ca = ssl.create_default_context(cafile=tmp_path / "demo" / "central" / "keys" / "device-ca.crt")
    assert api_url.startswith("https://")

    def types() -> set[str]:
        items = httpx.get(
            f"{api_url}/events", params={"limit": 1000}, headers=auth, verify=ca
        ).json()["items"]
        return {i["type"] for i in items}

    wait_until(
        lambda: {"gate.decision", "circ.checkout", "desk.registration"} <= types(),
        90,
        what="events of all three roles",
    )

    def gate() -> list[dict[str, object]]:
        params = {"type": "gate.decision", "limit": 1000}
        items = httpx.get(f"{api_url}/events", params=params, headers=auth, verify=ca).json()[
            "items"
        ]
        return [i["payload"] for i in items]

    # the demo gate runs the real flow: sample readers recognized, strangers refused
    wait_until(
        lambda: (
            any(p["method"] == "face" and p["decision"] == "grant" for p in gate())
            and any(p.get("reason") == "unknown_face" for p in gate())
        ),
        60,
        what="face decisions at the demo gate",
    )
    # the desk registered the simulated citizen from her simulated chip...
    regs = httpx.get(
        f"{api_url}/events", params={"type": "desk.registration"}, headers=auth, verify=ca
    ).json()["items"]
    assert len(regs) == 1 and regs[0]["payload"]["check"]["method"] == "chip_face"
    assert regs[0]["payload"]["check"]["passive_auth"] == "ok"
    patron = regs[0]["payload"]["patron_id"]
    assert (tmp_path / "demo" / "cards" / f"{patron}.png").exists()
    # ...and the gate then lets her in by face, at the other branch (issue 22)
    wait_until(
        lambda: any(p.get("patron_id") == patron and p["decision"] == "grant" for p in gate()),
        90,
        what="the newly registered reader recognized at the gate",
    )
    sites = {
        d["device_id"]: d["site"]
        for d in httpx.get(f"{api_url}/devices", headers=auth, verify=ca).json()
    }
    assert regs[0]["site"] == sites["desk-01"] != sites["gate-01"]
    granted = {p["patron_id"] for p in gate() if p["decision"] == "grant"}
    assert granted <= {"P000101", "P000102", "P000103", "P000104", patron}
    devices = httpx.get(f"{api_url}/devices", headers=auth, verify=ca).json()
    assert {d["role"] for d in devices} == {"gate", "selfcheck", "desk", "exitgate"}
    assert httpx.get(f"{api_url}/health", verify=ca).json()["status"] == "ok"

    # the self-check runs the real flow: a loan and a return against the dummy library
    # system; then the demo stops the library system, loans go on offline, and are forwarded
    # when it is back
    def circ() -> list[dict[str, Any]]:
        params = {"device_id": "selfcheck-01", "limit": 1000}
        return httpx.get(f"{api_url}/events", params=params, headers=auth, verify=ca).json()[
            "items"
        ]

    wait_until(
        lambda: any("reconciled with the library system" in line for line in told),
        150,
        what="the reconciliation told",
    )
    loans = [e["payload"] for e in circ() if e["type"] == "circ.checkout"]
    assert any(p["result"] == "ok" and not p["offline"] for p in loans)
    assert any(p["result"] == "ok" and p["offline"] for p in loans)
    assert all("title" not in p for p in loans)  # ids only
    renewals = [e["payload"] for e in circ() if e["type"] == "circ.renew"]
    assert any(p["result"] == "ok" for p in renewals)  # the reader's own account screen
    (rec,) = [e["payload"] for e in circ() if e["type"] == "circ.reconciled"][:1]
    assert rec["done"] > 0 and rec["pending"] == 0
    assert list((tmp_path / "demo" / "receipts").glob("*.png"))

    # the demo keeps its fleet up: kill -9 central and a kiosk, both come back
    demo = tmp_path / "demo"
    for pattern in (f"central --config {demo}", f"agent --config {demo}/agents/selfcheck-01"):
        pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
        assert pids.split(), pattern
        for pid in pids.split():
            os.kill(int(pid), signal.SIGKILL)

    def healthy() -> bool:
        try:
            return httpx.get(f"{api_url}/health", verify=ca, timeout=2).json()["status"] == "ok"
        except httpx.HTTPError:
            return False

    def selfcheck_online() -> bool:
        devs = httpx.get(f"{api_url}/devices", headers=auth, verify=ca, timeout=2).json()
        return any(d["device_id"] == "selfcheck-01" and d["online"] for d in devs)

    wait_until(healthy, 30, what="central restarted by the demo")
    n = len(types())
    wait_until(lambda: selfcheck_online() and len(types()) >= n, 30, what="selfcheck back")
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    proc.wait(60)  # stops by itself, exit 0
    reader.join(10)
    rest = "".join(told)
    assert proc.returncode == 0, rest
    assert "demo stopped" in rest
    story = banner + rest
    assert f"registered a reader as {patron}" in story
    assert f"recognized {patron} by face: gate opened" in story
    assert "Nguyễn" not in story and "Bình" not in story  # no personal data on the console
    assert "security off, read back" in story and "OFFLINE, recorded for later" in story
    assert "reconciled with the library system" in story
    # the exit gate: an unborrowed book alarms, a lent one passes
    assert "exitgate-01 alarmed: 30000007" in story, story
    assert "exitgate-01 let 30000003" in story and "no alarm" in story
    assert "central stopped (killed by SIGKILL" in story and "selfcheck-01 stopped (killed" in story
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "demo")], capture_output=True, text=True
    )
    assert leftover.stdout.strip() == "", "demo left processes behind"


@pytest.mark.integration
def test_bench_sync_with_faults_reports_no_loss(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *CLI,
            "bench",
            "sync",
            "--events",
            "4000",
            "--faults",
            "--json",
            "--work-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    for key in (
        "events",
        "devices",
        "seconds",
        "events_per_s",
        "backlog_drain_s",
        "lost",
        "duplicated",
    ):
        assert key in result
    assert result["events"] == 4000 and result["devices"] == 1
    assert result["lost"] == 0 and result["duplicated"] == 0
    assert [f["fault"] for f in result["faults"]] == [
        "kill -9 agent",
        "restart broker",
        "kill -9 central",
    ]
    assert result["events_per_s"] > result["unbatched_events_per_s"]


@pytest.mark.integration
def test_embedded_broker_fallback_carries_the_same_protocol(tmp_path: Path) -> None:
    """What a machine without mosquitto runs: the amqtt broker in a child process."""
    broker = BrokerProcess(tmp_path / "broker", kind="amqtt")
    broker.start()
    central = CentralProcess(tmp_path / "central", broker)
    assert not central.secure  # the fallback cannot enforce certificates: said, not hidden
    agent = AgentProcess(
        tmp_path / "a",
        agent_config(
            tmp_path / "a",
            "gate-01",
            "gate",
            "tv-tinh",
            broker.url,
            simulator={"enabled": True, "rate_per_s": 50.0},
        ),
        central,
    )
    try:
        central.start()
        agent.start()
        with central.client() as api:
            wait_until(
                lambda: len(api.get("/events", params={"limit": 100}).json()["items"]) >= 30,
                30,
                what="events through amqtt",
            )
            wait_until(lambda: api.get("/devices/gate-01").json()["online"], 10, what="online")
    finally:
        agent.stop()
        central.stop()
        broker.stop()


@pytest.mark.skipif(os.environ.get("BIBLIOEDGE_SKIP_WHEEL") == "1", reason="asked to skip")
def test_built_wheel_maps_every_folder_under_biblioedge(tmp_path: Path) -> None:
    # build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    src = tmp_path / "src"
    junk = (
        ".venv",
        ".git",
        "build",
        "*.egg-info",
        ".typecheck",
        "__pycache__",
        "*_cache",
        "demo-data",
    )
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*junk))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("biblioedge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in [
        "biblioedge/cli/__init__.py",
        "biblioedge/protocol.py",
        "biblioedge/agent/sync.py",
        "biblioedge/fleet/api.py",
        "biblioedge/fleet/migrations/env.py",
        "biblioedge/fleet/migrations/versions/0001_initial.py",
        "biblioedge/fleet/migrations/script.py.mako",
        "biblioedge/provisioning/broker.py",
        "biblioedge/py.typed",
    ]:
        assert module in names
    # every module of every mapped folder is in it (a subpackage missing from pyproject's
    # list would otherwise work in the checkout and be absent on a kiosk)
    folders = {
        "core": "biblioedge",
        "agent": "biblioedge/agent",
        "kiosk": "biblioedge/kiosk",
        "drivers": "biblioedge/drivers",
        "models": "biblioedge/models",
        "fleet": "biblioedge/fleet",
        "provisioning": "biblioedge/provisioning",
    }
    missing = [
        f"{pkg}/{py.relative_to(ROOT / folder).as_posix()}"
        for folder, pkg in folders.items()
        for py in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in py.parts
        and f"{pkg}/{py.relative_to(ROOT / folder).as_posix()}" not in names
    ]
    assert missing == [], missing
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"biblioedge", next(n.split("/")[0] for n in names if ".dist-info" in n)}
    # the wheel works on its own: import it from a target dir, away from the source tree
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import biblioedge.fleet.repo, biblioedge.agent.runtime as r; print(r.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith(str(target))


@pytest.mark.integration
def test_bench_selfcheck_states_its_latencies_and_loses_nothing_through_a_kill() -> None:
    out = subprocess.run(
        [*CLI, "bench", "selfcheck", "--rounds", "1", "--offline", "600", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    loans = result["loans"]
    assert set(loans["latency"]) == {
        "rfid_line_baud",
        "rfid_air_s_per_command",
        "sip2_added_s_per_exchange",
    }
    for name in ("ours", "baseline_whole_memory"):
        assert set(loans[name]) == {"1", "5", "10"}
        assert loans[name]["5"]["sip2_round_trips_per_item"] == 1.0  # one checkout each
    # reading only what the tag holds never costs more RFID exchanges than reading it all
    assert (
        loans["ours"]["5"]["rfid_exchanges_per_item"]
        < loans["baseline_whole_memory"]["5"]["rfid_exchanges_per_item"]
    )
    assert isinstance(loans["met"], bool) and loans["ratio_baseline_over_ours_5_items_p50"] > 0
    off = result["offline_forward"]
    assert off["transactions"] == 600 and 0 < off["killed_at"] < 600
    assert off["lost"] == 0 and off["duplicated"] == 0 and off["refused"] == 0
    assert off["states"] == {"done": 600}

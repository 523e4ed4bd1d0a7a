"""``biblioedge bench rollout``: a release rolled out to a fleet of simulated kiosks.

Everything real but the kiosks' processes: mosquitto with mutual TLS and central's ACL,
central (its rollout engine, its TUF repository over HTTPS), releases built from this source
tree and signed with offline keys, and per kiosk its own enrollment, MQTT connection, outbox,
TUF client and install prefix, where the release is verified, downloaded and installed with
pip before the boot guard and the health gate commit or roll it back (``sim.fleet``).

The release carries biblioedge's wheel alone (its dependencies are the same in both and a
kiosk holds them already), so what is measured is the fleet's update path, not pip
unpacking numpy two hundred times on two cores.

Measured: seconds from creating the rollout to done (or, with ``--bad``, to the halt), bytes
each kiosk downloaded, each wave's duration; the canary's own update time is the same run's
baseline, and ``speedup`` is how much faster the waves were than one kiosk after another.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from biblioedge.demo.fleet import release_cli
from biblioedge.demo.launch import CentralProcess
from biblioedge.provisioning.broker import BrokerProcess
from biblioedge.provisioning.release_build import build_software, native_arch
from biblioedge.sim.fleet import SimFleet, SimSettings, prepare_first_release

SITES = ["tv-tinh", "tv-huyen", "xa-an-binh", "phuong-3"]


def bench_rollout(
    devices: int = 200,
    bad: bool = False,
    sites: int = 2,
    soak_s: float = 2.0,
    max_per_site: int = 0,
    progress: bool = True,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="be-rollout-")) if work_dir is None else work_dir
    try:
        source = Path(__file__).resolve().parents[2]
        return asyncio.run(
            _run(source, root, devices, bad, max(1, sites), soak_s, max_per_site, progress)
        )
    finally:
        if work_dir is None:
            shutil.rmtree(root, ignore_errors=True)


async def _run(
    source: Path,
    root: Path,
    devices: int,
    bad: bool,
    sites: int,
    soak_s: float,
    max_per_site: int,
    progress: bool,
) -> dict[str, Any]:
    def say(message: str) -> None:
        if progress:
            sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
            sys.stderr.flush()

    broker = BrokerProcess(root / "broker")
    central = CentralProcess(root / "central", broker)
    names = [SITES[i] if i < len(SITES) else f"site-{i}" for i in range(sites)]
    fleet = SimFleet(root / "kiosks", central.url, central.enrollment_token)
    result: dict[str, Any] = {"bench": "rollout", "devices": devices, "bad": bad, "sites": sites}
    try:
        broker.start()
        central.start()
        baseline, new = "0.1.1", ("0.1.2rc1" if bad else "0.1.2")
        template, first = await _releases(source, root, central, baseline, new, bad, say)
        settings = SimSettings(soak_s=soak_s, ready_timeout_s=30, retry_s=2.0)
        say(f"enrolling {devices} kiosks at {sites} sites")
        t_enroll = time.monotonic()
        await _enroll(fleet, devices, names, settings, template, first)
        result["enroll_s"] = round(time.monotonic() - t_enroll, 1)
        fleet.start()
        api = central.client()
        await _until(
            lambda: _count(api, baseline) == devices, 120, f"all {devices} kiosks on {baseline}"
        )
        per_site = max_per_site or max(1, -(-devices // sites))
        plan = {"waves": [1, "10%", "100%"], "max_per_site": per_site, "wave_timeout_s": 1200}
        say(f"rolling out {new} (waves 1, 10 %, the rest; {per_site} at once per site)")
        final, seconds = await _roll_out(api, new, plan, bad, result, say)
        if bad:
            await _until(
                lambda: all(
                    k.layout.state()["pending"] is None and k.running == baseline
                    for k in fleet.kiosks
                ),
                180,
                "every kiosk back on the baseline",
            )
            result.update(_rolled_back(fleet, final, baseline))
        else:
            result["on_new"] = sum(1 for k in fleet.kiosks if k.layout.state()["committed"] == new)
        _downloads_and_speedup(result, fleet, devices, seconds, bad)
        return result
    finally:
        await fleet.stop()
        central.stop()
        broker.stop()


async def _releases(
    source: Path, root: Path, central: Any, baseline: str, new: str, bad: bool, say: Any
) -> tuple[Path, str]:
    """Build the baseline and the new release, publish the new one; the kiosks' first
    install (template, release) of the baseline."""
    say("building the releases from this source tree")

    def broken(tree: Path) -> None:
        init = tree / "core" / "__init__.py"
        init.write_text(init.read_text() + '\nraise RuntimeError("broken release")\n')

    for version, patch in ((baseline, None), (new, broken if bad else None)):
        await asyncio.to_thread(
            build_software,
            source,
            root / "releases" / version,
            version=version,
            patch=patch,
            arches=(native_arch(),),
            roles=("gate",),
            with_dependencies=False,
        )
    say("signing offline and uploading to central")
    await asyncio.to_thread(_publish, central, root, root / "releases" / new)
    return await asyncio.to_thread(
        prepare_first_release, root / "releases" / baseline, root / "template"
    )


async def _enroll(
    fleet: SimFleet,
    devices: int,
    names: list[str],
    settings: SimSettings,
    template: Path,
    first: str,
) -> None:
    """Enroll the kiosks one after another, spread over the sites, on the baseline."""
    for i in range(devices):
        k = await asyncio.to_thread(
            fleet.add, f"gate-{i:03d}", names[i % len(names)], "gate", settings
        )
        await asyncio.to_thread(k.install_first, template, first)


async def _roll_out(
    api: Any, new: str, plan: dict[str, Any], bad: bool, result: dict[str, Any], say: Any
) -> tuple[dict[str, Any], float]:
    """Create the rollout and follow it to its end: (its final state, seconds it took)."""
    t0 = time.monotonic()
    started = datetime.now().astimezone()
    r = api.post("/rollouts", json={"release": new, "plan": plan})
    if r.status_code != 201:
        raise RuntimeError(f"central refused the rollout: {r.text}")
    rid = r.json()["rollout_id"]
    sizes = [w["size"] for w in r.json()["waves"]]
    last_line = ""

    def state() -> dict[str, Any]:
        nonlocal last_line
        got: dict[str, Any] = api.get(f"/rollouts/{rid}").json()
        line = " ".join(
            f"w{w['wave']}:{w['states'].get('committed', 0)}/{w['size']}" for w in got["waves"]
        )
        if line != last_line:
            last_line = line
            say(f"{got['state']} {line}")
        return got

    end_states = ("halted",) if bad else ("done", "halted")
    final = await _until(lambda: (g := state())["state"] in end_states and g, 900, "the end")
    seconds = time.monotonic() - t0
    result.update(
        release=new,
        waves=len(sizes),
        wave_sizes=sizes,
        canary_size=sizes[0],
        seconds=round(seconds, 1),
        state=final["state"],
        halt_reason=final["halt_reason"],
    )
    result["wave_s"] = _wave_times(final, started)
    return final, seconds


def _downloads_and_speedup(
    result: dict[str, Any], fleet: SimFleet, devices: int, seconds: float, bad: bool
) -> None:
    downloaded = [k.bytes_downloaded() for k in fleet.kiosks if k.bytes_downloaded()]
    # per kiosk that fetched the release (with --bad, only those that tried it)
    result["bytes_per_device"] = int(statistics.mean(downloaded)) if downloaded else 0
    result["fetched_by"] = len(downloaded)
    canary = result["wave_s"][0] if result["wave_s"] else None
    if canary and not bad:  # the canary's own update time is the one-by-one baseline
        result["canary_s"] = canary
        result["one_by_one_s"] = round(canary * devices, 1)
        result["speedup"] = round(canary * devices / seconds, 1)


def _rolled_back(fleet: Any, final: dict[str, Any], baseline: str) -> dict[str, Any]:
    """How the broken release went: who ran it, how fast it halted, who is back."""
    failed = [t for k in fleet.kiosks for t in k.failed_at]
    first_failure = min(failed) if failed else time.time()
    halted_at = _halt_time(final)
    back = [k.back_at - first_failure for k in fleet.kiosks if k.failed_starts and k.back_at]
    return {
        "ran_bad": sum(1 for k in fleet.kiosks if k.failed_starts),
        "halt_s": round(max(0.0, halted_at - first_failure), 1),
        "rolled_back": sum(
            1
            for k in fleet.kiosks
            if (k.layout.state().get("outcome") or {}).get("result") == "rolled_back"
        ),
        "back_on_previous_s": round(max(back), 1) if back else None,
        "on_previous": sum(1 for k in fleet.kiosks if k.layout.state()["committed"] == baseline),
    }


def _publish(central: Any, root: Path, release: Path) -> None:
    keys = root / "offline-keys"
    release_cli(central, "init", "--keys", str(keys))
    release_cli(central, "upload", str(keys), "--root-only")
    bundle = root / "bundle"
    release_cli(
        central, "sign", "--keys", str(keys), "--out", str(bundle), "--software", str(release)
    )
    release_cli(central, "upload", str(bundle))


def _count(api: Any, version: str) -> int:
    return sum(
        1 for d in api.get("/devices").json() if (d["reported"] or {}).get("software") == version
    )


async def _until(check: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(check)
        if got:
            return got
        await asyncio.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def _wave_times(rollout: dict[str, Any], started: datetime) -> list[float]:
    """Seconds each wave took, from the rollout's own history."""
    marks = [started]
    for h in rollout["history"]:
        if (
            h["what"].startswith("wave ")
            or h["what"] in ("done",)
            or h["what"].startswith("halted")
        ):
            marks.append(datetime.fromisoformat(h["at"]))
    return [round((b - a).total_seconds(), 1) for a, b in zip(marks, marks[1:], strict=False)]


def _halt_time(rollout: dict[str, Any]) -> float:
    for h in rollout["history"]:
        if h["what"].startswith("halted"):
            return datetime.fromisoformat(h["at"]).timestamp()
    return time.time()

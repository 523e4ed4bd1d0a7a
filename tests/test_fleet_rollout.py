"""The fleet manager end to end: IT signs releases offline with ``biblioedge release``, uploads
them to a real central, and rolls them out over real mosquitto (mutual TLS) to simulated
kiosks that update with the real update path into their own prefixes. A good release goes
out wave by wave; a release that dies at import halts at its canary, which is back on the
previous release by itself; no other kiosk ever starts it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from biblioedge.demo.fleet import release_cli
from biblioedge.demo.launch import CentralProcess
from biblioedge.sim.fleet import SimFleet, SimSettings, prepare_first_release

pytestmark = pytest.mark.integration


async def wait_for(what: str, check: Any, within: float) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(check)
        if got:
            return got
        await asyncio.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


async def test_good_release_rolls_out_and_a_broken_one_halts_at_its_canary(
    tmp_path: Path, central: CentralProcess, built_releases: dict[str, Path]
) -> None:
    keys = tmp_path / "offline-keys"
    release_cli(central, "init", "--keys", str(keys))
    release_cli(central, "upload", str(keys), "--root-only")
    for version in ("0.1.2", "0.1.3"):
        bundle = tmp_path / f"bundle-{version}"
        release_cli(
            central,
            "sign",
            "--keys",
            str(keys),
            "--out",
            str(bundle),
            "--software",
            str(built_releases[version]),
        )
        release_cli(central, "upload", str(bundle))
    api = central.client()
    listed = api.get("/releases").json()
    assert {r["version"] for r in listed["releases"]} == {"0.1.2", "0.1.3"}

    template, first = prepare_first_release(built_releases["0.1.1"], tmp_path / "template")
    fleet = SimFleet(tmp_path / "kiosks", central.url, central.enrollment_token)
    settings = SimSettings(soak_s=1.0, ready_timeout_s=15, retry_s=1.0)
    for i, site in enumerate(["tv-tinh", "tv-tinh", "tv-huyen", "tv-huyen"]):
        k = fleet.add(f"gate-{i}", site, "gate", settings)
        k.install_first(template, first)
    fleet.start()
    try:

        def all_report(version: str) -> bool:
            devs = api.get("/devices").json()
            return len(devs) == 4 and all(
                (d["reported"] or {}).get("software") == version for d in devs
            )

        await wait_for("every kiosk reporting 0.1.1", lambda: all_report("0.1.1"), 60)
        plan = {"waves": [1, "50%", "100%"], "max_per_site": 2}
        r = api.post("/rollouts", json={"release": "0.1.2", "plan": plan})
        assert r.status_code == 201, r.text
        rid = r.json()["rollout_id"]
        assert [w["size"] for w in r.json()["waves"]] == [1, 2, 1]
        # a second rollout for the same kiosks is refused while this one runs
        again = api.post("/rollouts", json={"release": "0.1.3"})
        assert again.status_code == 409 and "already in an active rollout" in again.json()["detail"]

        def finished() -> dict[str, Any] | None:
            got = api.get(f"/rollouts/{rid}").json()
            return got if got["state"] in ("done", "halted") else None

        try:
            done = await wait_for("the good rollout", finished, 100)
        except TimeoutError:
            import json

            print(json.dumps(api.get(f"/rollouts/{rid}").json(), indent=1, default=str))
            print(json.dumps([d["reported"] for d in api.get("/devices").json()], indent=1))
            print(central.log_tail())
            raise
        assert done["state"] == "done", done
        assert {t["state"] for t in done["targets"]} == {"committed"}
        assert fleet.versions() == {"0.1.2": 4}
        await wait_for("every kiosk reporting 0.1.2", lambda: all_report("0.1.2"), 30)
        events = api.get("/events", params={"type": "device.update_committed", "limit": 100}).json()
        assert len([e for e in events["items"] if e["payload"]["version"] == "0.1.2"]) == 4

        # the broken release: its canary dies at import, is rolled back by the boot guard
        r = api.post("/rollouts", json={"release": "0.1.3", "plan": plan})
        bad = r.json()["rollout_id"]
        t0 = time.monotonic()

        def halted_rollout() -> dict[str, Any] | None:
            got = api.get(f"/rollouts/{bad}").json()
            return got if got["state"] == "halted" else None

        halted = await wait_for("the bad rollout to halt", halted_rollout, 180)
        assert "rolled back" in halted["halt_reason"]
        canary = next(t for t in halted["targets"] if t["wave"] == 0)
        assert canary["state"] == "failed"
        assert [t["state"] for t in halted["targets"] if t["wave"] > 0] == ["pending"] * 3
        ran_bad = [k.device_id for k in fleet.kiosks if any(v == "0.1.3" for _, v in k.history)]
        assert ran_bad == []  # it never even started: it died at import
        started_bad = [k for k in fleet.kiosks if k.failed_starts]
        assert [k.device_id for k in started_bad] == [canary["device_id"]]
        assert fleet.versions() == {"0.1.2": 4}
        assert time.monotonic() - t0 < 120
        rolled = api.get("/events", params={"type": "device.update_rolled_back"}).json()["items"]
        assert rolled and rolled[0]["device_id"] == canary["device_id"]
    finally:
        await fleet.stop()

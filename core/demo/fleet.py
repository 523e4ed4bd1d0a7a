"""The demo's fleet manager: twenty simulated kiosks at two branches, and two releases.

``run_fleet`` (the hidden ``biblioedge demo-fleet`` child of the demo) runs the kiosks with
the real update path (``sim.fleet``). ``FleetStory`` is what the demo tells: it builds
three releases from this source tree (the one the kiosks start on, a good one and a broken
one that dies at import), signs them with offline keys kept in the demo's data dir, uploads
them, then rolls the good one out wave by wave and the broken one after it, which halts at
its canary; the canary goes back to the good release by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from biblioedge.provisioning.release_build import build_software, native_arch
from biblioedge.sim.fleet import SimFleet, SimSettings, prepare_first_release

log = logging.getLogger("biblioedge.demo.fleet")

BASE, GOOD, BROKEN = "0.1.1", "0.2.0", "0.2.1"
SITES = ("tv-tinh", "tv-huyen")


def kiosk_names() -> list[tuple[str, str, str, str | None]]:
    """(device, site, role, entrance): six gates at two entrances and four self-checks per
    branch."""
    out: list[tuple[str, str, str, str | None]] = []
    for letter, site in zip("ab", SITES, strict=True):
        for i in range(1, 7):
            out.append((f"gate-{letter}{i}", site, "gate", "north" if i <= 3 else "south"))
        for i in range(1, 5):
            out.append((f"self-{letter}{i}", site, "selfcheck", None))
    return out


def build_releases(data: Path, say: Callable[[str], None]) -> dict[str, Path]:
    def broken(tree: Path) -> None:
        init = tree / "core" / "__init__.py"
        init.write_text(init.read_text() + '\nraise RuntimeError("demo: a broken release")\n')

    source = Path(__file__).resolve().parents[2]
    out = {}
    for version, patch in ((BASE, None), (GOOD, None), (BROKEN, broken)):
        folder = data / "releases" / version
        if not (folder / "release.json").exists():
            say(f"fleet: building release {version} from this source tree")
            build_software(
                source,
                folder,
                version=version,
                patch=patch,
                arches=(native_arch(),),
                roles=("gate", "selfcheck"),
                with_dependencies=False,
            )
        out[version] = folder
    return out


def release_cli(central: Any, *args: str) -> None:
    """``biblioedge release ARGS`` against a launched central, run as IT would run it: as its
    own process (the tools below the command line never import it: no import circle), with
    the admin token in the environment rather than on a command line that ``ps`` shows. Its
    JSON is for scripts, not for the person watching the demo: it is shown (on stderr, so
    that a caller's stdout stays its own) only when the command fails."""
    done = subprocess.run(
        [sys.executable, "-m", "biblioedge", "release", *args]
        + ["--central", central.url, "--cacert", str(central.ca_file), "--json"],
        env={**os.environ, "BIBLIOEDGE_API_TOKEN": central.token},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise RuntimeError(f"release {args[0]} failed")


def publish(
    central: Any, data: Path, releases: dict[str, Path], say: Callable[[str], None]
) -> None:
    """Sign (offline keys in ``<data>/release-keys``) and upload what central lacks."""
    keys = data / "release-keys"
    with central.client() as api:
        info = api.get("/releases").json()
        if not info["initialized"]:
            if not (keys / "root.pem").exists():
                release_cli(central, "init", "--keys", str(keys))
            release_cli(central, "upload", str(keys), "--root-only")
            info = api.get("/releases").json()
        have = {r["version"] for r in info["releases"]}
    for version in (GOOD, BROKEN):
        if version in have:
            continue
        bundle = data / "bundles" / version
        release_cli(
            central,
            "sign",
            "--keys",
            str(keys),
            "--out",
            str(bundle),
            "--software",
            str(releases[version]),
        )
        release_cli(central, "upload", str(bundle))
        say(f"fleet: release {version} signed offline and published")


def run_fleet(data: Path, central_url: str, token_file: Path, ca: Path) -> int:
    """The child process: enroll and run the simulated kiosks until stopped."""
    token = token_file.read_text().strip()
    api = httpx.Client(
        base_url=central_url + "/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=ca),
        timeout=10,
    )

    def enrollment(device_id: str, site: str, role: str) -> str:
        r = api.post("/enrollments", json={"device_id": device_id, "site": site, "role": role})
        r.raise_for_status()
        return str(r.json()["token"])

    base = data / "releases" / BASE
    template_root = data / "fleet" / "template"
    template = template_root / "releases" / BASE
    if not (template / ".complete").exists():
        prepare_first_release(base, template_root)

    async def main() -> None:
        fleet = SimFleet(data / "fleet" / "kiosks", central_url, enrollment)
        settings = SimSettings(soak_s=5.0, ready_timeout_s=30, retry_s=3.0)
        for device_id, site, role, entrance in kiosk_names():
            kiosk = await asyncio.to_thread(fleet.add, device_id, site, role, settings)
            await asyncio.to_thread(kiosk.install_first, template, BASE)
            labels = {"fleet": "demo", **({"entrance": entrance} if entrance else {})}
            await asyncio.to_thread(
                api.put, f"/devices/{device_id}/labels", json={"labels": labels}
            )
        fleet.start()
        log.info("%d simulated kiosks running", len(fleet.kiosks))
        try:
            await asyncio.Event().wait()
        finally:
            await fleet.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


class FleetStory:
    """The demo's narrator for releases and rollouts (a thread of the demo process)."""

    def __init__(
        self,
        central: Any,
        data: Path,
        say: Callable[[str], None],
        stop: threading.Event,
        child: Any,
    ):
        self.child = child
        self.central = central
        self.data = data
        self.say = say
        self.stop = stop

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # the story is a demo's commentary: never the demo's end
            log.exception("fleet story stopped")
            self.say(f"fleet: story stopped: {exc}")

    def _wait(self, check: Callable[[], Any], within: float) -> Any:
        deadline = time.monotonic() + within
        while not self.stop.is_set() and time.monotonic() < deadline:
            got = check()
            if got:
                return got
            self.stop.wait(2.0)
        return None

    def _run(self) -> None:
        releases = build_releases(self.data, self.say)
        publish(self.central, self.data, releases, self.say)
        if self.stop.is_set():
            return
        self.child.start()
        with self.central.client() as api:
            names = [n for n, *_ in kiosk_names()]

            def on(version: str) -> int:
                devs = {d["device_id"]: d for d in api.get("/devices").json()}
                return sum(
                    1
                    for n in names
                    if ((devs.get(n) or {}).get("reported") or {}).get("software") == version
                )

            if not self._wait(lambda: on(BASE) + on(GOOD) == len(names), 600):
                return
            self.say(f"fleet: {len(names)} simulated kiosks at {', '.join(SITES)} are online")
            if api.get("/rollouts").json():
                self.say("fleet: rollouts were made before (see the dashboard)")
                return
            plan = {"waves": [1, "25%", "100%"], "max_per_site": 3}
            selector = {"labels": {"fleet": "demo"}}
            for version in (GOOD, BROKEN):
                r = api.post(
                    "/rollouts", json={"release": version, "selector": selector, "plan": plan}
                )
                if r.status_code != 201:
                    self.say(f"fleet: rollout of {version} refused: {r.text}")
                    return
                rid = r.json()["rollout_id"]
                self.say(f"fleet: rolling out {version} in waves of 1, 25 % and the rest ({rid})")
                seen = ""

                def progress(rid: str = rid, version: str = version) -> dict[str, Any] | None:
                    nonlocal seen
                    got: dict[str, Any] = api.get(f"/rollouts/{rid}").json()
                    line = ", ".join(
                        f"wave {w['wave'] + 1} {w['states'].get('committed', 0)}/{w['size']}"
                        for w in got["waves"]
                    )
                    final = got["state"] in ("done", "halted", "aborted")
                    if line != seen and not final:  # the end is told once, below
                        seen = line
                        self.say(f"fleet: {version} {got['state']}: {line}")
                    return got if final else None

                final = self._wait(progress, 1800)
                if final is None:
                    return
                if final["state"] == "done":
                    self.say(f"fleet: {version} done: every wave committed")
                    continue
                if final["state"] == "aborted":
                    self.say(f"fleet: {version} aborted (from the dashboard or the API)")
                    return
                self.say(f"fleet: {version} halted by itself: {final['halt_reason']}")
                if self._wait(lambda: on(GOOD) == len(names), 300):
                    self.say(f"fleet: every kiosk is back on {GOOD}; no one had to do anything")
                return

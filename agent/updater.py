"""Bring the kiosk to the software release central wants, without ever leaving it broken.

Central names a release in the desired-state document (``software``). The updater then, in
order, and only when nothing is in the way:

1. waits while a reader is mid-transaction (a gate passage, a loan, a registration) and, when
   the site has a maintenance window, until it opens;
2. refreshes the TUF metadata and fetches the release's ``release.json`` and the wheels it
   does not hold yet, each verified against its signed hash and length, with progress;
3. builds the release's venv beside the running one (``provisioning.release_install``);
4. switches ``current`` and asks for a restart; the new version proves itself in
   ``agent.selftest`` and is committed after its soak time, or goes back by itself.

A release that was rolled back here is not tried again. A kiosk that cannot reach central, or
whose metadata expired, keeps running what it committed and says why in its state report.

A release below the release floor (``software_floor`` in the same signed desired state, set
by IT at central) is refused before anything is fetched, reason ``below_floor``: an old
release stays signed for ever, and the floor is what keeps one with known holes off the
kiosk. The one exception is the kiosk's own previous committed release, the rollback IT
may need when the newest release misbehaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

from biblioedge.agent.release_client import ReleaseClient, ReleaseUnavailable
from biblioedge.agent.update_loop import Note, UpdateLoop, UpdateSettings
from biblioedge.protocol import UpdateOutcome
from biblioedge.provisioning.bootguard import Layout, LayoutError
from biblioedge.provisioning.release_install import InstallError, build_release
from biblioedge.releases import (
    ReleaseError,
    SoftwareRelease,
    below_floor,
    software_target,
    wheel_target,
)


class Updater(UpdateLoop):
    """One kiosk's software updates. ``want`` is called with each desired state; ``run`` is
    a supervised component (or, in the fleet simulator, one task per simulated kiosk)."""

    name = "updater"
    kind = "software"

    def __init__(
        self,
        layout: Layout,
        client: Callable[[], ReleaseClient],
        settings: UpdateSettings,
        note: Note,
        restart: Callable[[], None],
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(client, settings, note, restart, changed)
        self.layout = layout
        self.wanted: str | None = None
        self.floor: str | None = None
        self.wheels = layout.prefix / "wheels"
        self.refresh_report()

    # -- reporting ---------------------------------------------------------------------------

    def refresh_report(self) -> None:
        state = self.layout.state()
        outcome = state.get("outcome")
        last = None
        if isinstance(outcome, dict) and outcome.get("version"):
            last = UpdateOutcome(
                version=str(outcome["version"]),
                result=outcome["result"],
                reason=str(outcome.get("reason", ""))[:500],
                at=float(outcome.get("at", 0)),
            )
        self.report = self.report.model_copy(
            update={
                "wanted": self.wanted,
                "committed": state["committed"],
                "pending": state["pending"],
                "last": last,
                "refused": [str(v) for v in state.get("refused", [])][-32:],
            }
        )

    # -- control -----------------------------------------------------------------------------

    def want(self, version: str | None, floor: str | None = None) -> None:
        """The release central names and the floor in the same signed document."""
        if (version, floor) != (self.wanted, self.floor):
            self.wanted, self.floor = version, floor
            self.refresh_report()
            self.wake()

    def running(self) -> str | None:
        return self.layout.current_version()

    async def step(self) -> None:
        """One look at what to do; returns quickly unless it installs."""
        wanted = self.wanted
        before = (self.report.committed, self.report.pending, self.report.last)
        self.refresh_report()  # the health gate may have committed or rolled back meanwhile
        if (self.report.committed, self.report.pending, self.report.last) != before:
            self.changed()
        state = self.layout.state()
        if wanted is None or wanted == state["committed"] and state["pending"] is None:
            self._phase("idle")
            return
        if state["pending"] is not None:
            self._phase("trial", detail=f"release {state['pending']} is on trial")
            return
        if wanted in state.get("refused", []):
            self._phase("failed", "rolled_back", f"release {wanted} was rolled back here")
            return
        if below_floor(wanted, self.floor) and wanted != state.get("previous"):
            detail = f"release {wanted} is below the release floor {self.floor}"
            if (self.report.phase, self.report.reason) != ("failed", "below_floor"):
                await self.note(
                    "device.update_failed",
                    {"version": wanted, "reason": "below_floor", "detail": detail},
                )
            self._phase("failed", "below_floor", detail)
            return
        if not self.may_start():
            return
        try:
            await self._install(wanted)
        except (ReleaseUnavailable, InstallError) as exc:
            await self.failed(wanted, exc.reason, exc.detail)
        except LayoutError as exc:
            await self.failed(wanted, "layout", str(exc))

    async def _install(self, version: str) -> None:
        self._phase("downloading")
        client = await asyncio.to_thread(self.client)
        await asyncio.to_thread(client.refresh)
        meta = await asyncio.to_thread(client.info, software_target(version))
        if self.layout.complete(version):
            release_doc = self.layout.release_dir(version) / "release.json"
        else:
            release_doc = self.wheels / f"release-{version}.json"
        fetched = await asyncio.to_thread(client.fetch, meta, release_doc)
        self.bytes_downloaded += meta.length if fetched.downloaded else 0
        try:
            release = SoftwareRelease.model_validate_json(release_doc.read_bytes())
        except ValueError as exc:
            raise ReleaseUnavailable("bad_release", f"release.json: {exc}") from exc
        if release.version != version:
            raise ReleaseUnavailable("bad_release", f"release.json says {release.version}")
        try:
            files = release.files(self.settings.arch, self.settings.role)
        except ReleaseError as exc:
            raise ReleaseUnavailable("bad_release", str(exc)) from exc
        files = [*files, *([release.pip] if release.pip not in files else [])]
        infos = [await asyncio.to_thread(client.info, wheel_target(f)) for f in files]
        progress, seen = self.progress(version, sum(i.length for i in infos))

        paths = []
        for name, info in zip(files, infos, strict=True):
            got = await asyncio.to_thread(client.fetch, info, self.wheels / name, seen)
            if not got.downloaded:
                progress.done += info.length
            paths.append(got.path)
        self.report = self.report.model_copy(update={"done_bytes": progress.total})
        self._phase("installing")
        async with self.settings.install_slots or contextlib.nullcontext():
            await asyncio.to_thread(
                build_release,
                self.layout,
                version,
                [p for p in paths if p.name != release.pip],
                self.wheels / release.pip,
                compile_bytecode=self.settings.compile_bytecode,
            )
        kept = self.layout.release_dir(version) / "release.json"
        if release_doc != kept:  # a release still on disk (the previous one) has it already
            shutil.copyfile(release_doc, kept)
        self._prune_wheels(paths)
        await asyncio.to_thread(self.layout.switch, version)
        self.refresh_report()
        self._phase("restarting")
        await self.note("device.update_installed", {"version": version, "bytes": progress.total})
        self.restart()

    def _prune_wheels(self, keep: list[Path]) -> None:
        """Wheels no release here uses any more are deleted (the cache must not fill a Pi)."""
        wanted = {p.name for p in keep}
        for name in self.layout.installed():
            doc = self.layout.release_dir(name) / "release.json"
            try:
                other = SoftwareRelease.model_validate_json(doc.read_bytes())
                wanted |= {*other.files(self.settings.arch, self.settings.role), other.pip}
            except (OSError, ValueError):
                continue
        for path in self.wheels.glob("*.whl"):
            if path.name not in wanted:
                path.unlink(missing_ok=True)

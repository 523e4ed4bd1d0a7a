"""Rollouts: a signed release, a selection of kiosks, waves, and the rules that stop it.

A rollout puts its kiosks in waves (by default one canary, then 10 %, then the rest). The
engine (``tick``, about once a second at central) starts the kiosks of the current wave by
naming the release in their desired state, within the disruption budget: never more than
``max_per_site`` kiosks of one branch updating at once, and never every gate of one entrance
(gates labelled ``entrance=<name>``). It reads what each kiosk reports: committed, rolled back
by itself with a reason, failed with a reason, or silent past the wave's timeout.

A wave advances when at least ``success`` of it committed. It halts when more than
``errors`` of it failed, or when its kiosks do worse on the new release than before it
(more component crashes, more gate false rejects, more failed loans, compared over equal
time windows); a halt sends the wave's kiosks back to the release they ran before. Kiosks
enrolled while a rollout runs join its next wave. Pause, resume and abort are IT's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from biblioedge.fleet.floor import FloorError, ReleaseFloor
from biblioedge.fleet.releases import ReleaseRepo
from biblioedge.fleet.repo import Repo, StaleVersion
from biblioedge.fleet.rollout_plan import (
    FleetState,
    Health,
    Rollout,
    RolloutError,
    RolloutPlan,
    Selector,
    Track,
    choose,
    control,
    count_health,
    health_window,
    plan_step,
)
from biblioedge.fleet.store.rollouts import RolloutStore
from biblioedge.protocol import DesiredState, utc_now
from biblioedge.releases import (
    VERSION_PATTERN,
    ReleaseError,
    below_floor,
    config_target,
    model_targets,
    software_target,
    split_ref,
)

__all__ = ["Health", "Publish", "RolloutError", "RolloutPlan", "Rollouts", "Selector", "Track"]

log = logging.getLogger("biblioedge.fleet.rollouts")

Publish = Callable[[str, str, DesiredState], Awaitable[bool]]


def _id() -> str:
    return f"r{utc_now():%Y%m%d}{secrets.token_hex(4)}"


class Rollouts:
    """Load, plan, apply: ``RolloutStore`` reads and writes, ``rollout_plan`` decides."""

    def __init__(
        self,
        repo: Repo,
        releases: ReleaseRepo | None,
        publish: Publish | None,
        now: Callable[[], datetime] = utc_now,
        floor: ReleaseFloor | None = None,
    ) -> None:
        self.repo = repo
        self.store = RolloutStore(repo)
        self.releases = releases
        self.publish = publish
        self.now = now
        self.floor = floor
        self._tracks: dict[tuple[str, str], Track] = {}

    # -- reading ----------------------------------------------------------------------------

    def list_all(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.store.list_all(limit)

    def get(self, rollout_id: str) -> dict[str, Any] | None:
        return self.store.get(rollout_id)

    # -- changes ----------------------------------------------------------------------------

    def create(
        self, kind: str, release: str, selector: Selector, plan: RolloutPlan, actor: str
    ) -> dict[str, Any]:
        if kind == "software" and self.floor is not None:
            try:
                self.floor.check(release)
            except FloorError as exc:
                raise RolloutError(exc.status, exc.detail) from exc
        self.track(kind, release)  # refuses an unknown kind or a release not published
        targets = choose(self.store.kiosks().values(), selector, plan, self.store.revoked())
        now = self.now()
        rollout_id = _id()
        row = {
            "rollout_id": rollout_id,
            "kind": kind,
            "release": release,
            "selector": selector.model_dump(),
            "plan": plan.model_dump(),
            "state": "running",
            "wave": 0,
            "halt_reason": None,
            "history": [{"at": now.isoformat(), "what": f"created by {actor}"}],
            "created_by": actor,
            "created_at": now,
            "updated_at": now,
        }
        busy = self.store.create(row, targets)
        if busy:
            names = ", ".join(f"{d} ({r})" for d, r in busy)
            raise RolloutError(409, f"already in an active rollout: {names}")
        log.info("rollout %s of %s to %d kiosks", rollout_id, release, len(targets))
        got = self.get(rollout_id)
        assert got is not None
        return got

    def control(self, rollout_id: str, action: str, actor: str) -> dict[str, Any]:
        """IT's pause, resume or abort (checked and written in one transaction)."""

        def decide(state: str, history: list[Any]) -> dict[str, Any]:
            return control(state, history, action, actor, self.now())

        if not self.store.change(rollout_id, decide):
            raise RolloutError(404, "no such rollout")
        got = self.get(rollout_id)
        assert got is not None
        return got

    def track(self, kind: str, release: str) -> Track:
        """The track of a published release; RolloutError 404 when it is not one."""
        try:
            if kind == "software":
                if not re.match(VERSION_PATTERN, release):
                    raise ReleaseError(release)
                target = software_target(release)
            elif kind == "model":
                target = model_targets(*split_ref(release))[0]
            elif kind == "config":
                target = config_target(*split_ref(release))
            else:
                raise RolloutError(400, f"no such kind of release: {kind}")
        except ReleaseError:
            raise RolloutError(404, f"no such {kind} release") from None
        if self.releases is None:
            return Track(kind)
        found = next((t for t in self.releases.list_targets() if t.path == target), None)
        if found is None:
            raise RolloutError(404, f"{kind} release {release} is not signed and published")
        task = found.custom.get("task") if kind == "model" else None
        if kind == "model" and task not in ("detect", "embed", "liveness"):
            raise RolloutError(404, f"model release {release} names no task")
        return Track(kind, task)

    # -- the engine -------------------------------------------------------------------------

    async def tick(self) -> None:
        for r in await asyncio.to_thread(self.store.active):
            try:
                key = (r["kind"], r["release"])
                track = self._tracks.get(key)  # a release's track never changes: look it up once
                if track is None:
                    track = self._tracks[key] = await asyncio.to_thread(self.track, *key)
                starts = await asyncio.to_thread(self._step, r, track)
            except Exception:
                log.exception("rollout %s step failed", r["rollout_id"])
                continue
            for device_id, version in starts:
                await self._set_desired(track, device_id, version)

    def _step(self, r: dict[str, Any], track: Track) -> list[tuple[str, str | None]]:
        """One look at a rollout: load, plan, apply; returns the desired-state changes to
        publish."""
        now = self.now()
        rollout = Rollout(
            rollout_id=r["rollout_id"],
            release=r["release"],
            track=track,
            selector=Selector.model_validate(r["selector"]),
            plan=RolloutPlan.model_validate(r["plan"]),
            state=r["state"],
            wave=int(r["wave"]),
            halt_reason=r["halt_reason"],
            history=tuple(r["history"]),
        )
        steps = plan_step(rollout, self._load(rollout, now), now)
        self.store.apply(rollout.rollout_id, rollout.state, steps, now)
        if steps.joins:
            wave = steps.joins[0].wave
            log.info(
                "rollout %s: %d new kiosk(s) join wave %d", r["rollout_id"], len(steps.joins), wave
            )
        if steps.halted:
            log.warning("rollout %s halted: %s", r["rollout_id"], steps.halted)
        return steps.desired

    def _load(self, rollout: Rollout, now: datetime) -> FleetState:
        """What one look needs: kiosks, targets, revocations of kiosks that may join (only
        asked for when some are outside the rollout) and the wave's health events."""
        targets = self.store.targets(rollout.rollout_id)
        kiosks = self.store.kiosks()
        outside = [i for i in kiosks if i not in targets]
        may_join = rollout.state == "running" and not rollout.selector.devices and outside
        revoked = self.store.revoked(outside) if may_join else frozenset[str]()
        window = health_window(rollout, targets.values(), now)
        found = self.store.health_events(window[0], window[1], now) if window else []
        return FleetState(kiosks, targets, revoked, found)

    # -- application health -----------------------------------------------------------------

    def health(self, device_ids: list[str], since: datetime, until: datetime) -> Health:
        """Crashes, gate false rejects and failed loans of these kiosks over a time window."""
        found = self.store.health_events(device_ids, since, until)
        return count_health(found, set(device_ids), since, until)

    # -- desired state ----------------------------------------------------------------------

    async def _set_desired(self, track: Track, device_id: str, release: str | None) -> None:
        for _ in range(5):
            device = await asyncio.to_thread(self.repo.get_device, device_id)
            if device is None:
                return
            doc = dict(device.get("desired") or {})
            doc.pop("version", None)
            if not track.desire(doc, release):
                return
            if self.floor is not None:  # every document central signs carries the floor
                doc["software_floor"] = await asyncio.to_thread(self._floor)
            try:
                site, desired = await asyncio.to_thread(
                    self.repo.put_desired, device_id, int(device["desired_version"]), doc
                )
            except StaleVersion:
                continue
            if self.publish is not None:
                await self.publish(site, device_id, desired)
            return

    def _floor(self) -> str | None:
        return None if self.floor is None else self.floor.software

    async def floor_changed(self) -> tuple[int, list[str]]:
        """Re-sign every desired-state document with the current floor (a new version, so
        each kiosk applies it); (documents republished, devices whose desired software is
        now below the floor: they keep running it, but will not install it again)."""
        floor = await asyncio.to_thread(self._floor)
        republished, below = 0, []
        for _, device_id, desired in await asyncio.to_thread(self.repo.all_desired):
            if desired.software is not None and below_floor(desired.software, floor):
                below.append(device_id)
            if desired.software_floor == floor:
                continue
            doc = desired.model_dump(mode="json", exclude={"version"})
            doc["software_floor"] = floor
            try:
                site, new = await asyncio.to_thread(
                    self.repo.put_desired, device_id, desired.version, doc
                )
            except StaleVersion:
                continue  # changed meanwhile: that change carried the floor
            republished += 1
            if self.publish is not None:
                await self.publish(site, device_id, new)
        return republished, below

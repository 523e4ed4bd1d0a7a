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

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, insert, select, update

from biblioedge.fleet.db import devices, events, rollout_targets, rollouts
from biblioedge.fleet.releases import ReleaseRepo
from biblioedge.fleet.repo import Repo, StaleVersion
from biblioedge.protocol import BUILTIN, ID_PATTERN, DesiredState, utc_now
from biblioedge.releases import (
    VERSION_PATTERN,
    ReleaseError,
    config_target,
    model_targets,
    software_target,
    split_ref,
)

log = logging.getLogger("biblioedge.fleet.rollouts")

ACTIVE = ("running", "paused")
#: how a kiosk's own update failure is worded when it will retry by itself
TRANSIENT = {"unreachable", "expired_metadata", "local_error", "disk", "busy"}
Publish = Callable[[str, str, DesiredState], Awaitable[bool]]


class RolloutError(ValueError):
    """A rollout central will not create or change; ``status`` is the HTTP status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


_Id = Annotated[str, Field(pattern=ID_PATTERN)]
_Label = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
_Wave = (
    Annotated[int, Field(ge=1, le=100_000)] | Annotated[str, Field(pattern=r"^([1-9][0-9]?|100)%$")]
)


class Selector(BaseModel):
    """What the schema says is what is checked: a crafted selection is a 422, not a 400."""

    model_config = ConfigDict(extra="forbid")

    sites: list[_Id] = Field(default_factory=list, max_length=100)
    roles: list[Literal["gate", "selfcheck", "desk", "exitgate"]] = Field(
        default_factory=list, max_length=4
    )
    devices: list[_Id] = Field(default_factory=list, max_length=10_000)
    labels: dict[_Label, _Label] = Field(
        default_factory=dict, max_length=16, json_schema_extra={"additionalProperties": False}
    )

    def matches(self, row: dict[str, Any]) -> bool:
        labels = row.get("labels") or {}
        return (
            (not self.sites or row["site"] in self.sites)
            and (not self.roles or row["role"] in self.roles)
            and (not self.devices or row["device_id"] in self.devices)
            and all(labels.get(k) == v for k, v in self.labels.items())
        )


class RolloutPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    waves: list[_Wave] = Field(
        default_factory=lambda: list[int | str]([1, "10%", "100%"]),
        min_length=1,
        max_length=10,
        description="Wave sizes: a count of kiosks or a share of all of them; the last wave "
        "takes every kiosk left",
    )
    success: float = Field(
        default=1.0, gt=0, le=1, description="Fraction of a wave that must commit to advance"
    )
    errors: float = Field(
        default=0.0, ge=0, lt=1, description="A wave halts when more than this fraction fails"
    )
    max_per_site: int = Field(default=5, ge=1, le=1000, description="Updating at once per site")
    entrance_label: str = Field(default="entrance", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    wave_timeout_s: float = Field(default=1800, ge=5, le=7 * 86400)
    health: bool = Field(default=True, description="Halt on worse application health")
    health_factor: float = Field(default=1.5, ge=1, le=100)
    min_events: int = Field(default=3, ge=1, le=10_000)

    def sizes(self, total: int) -> list[int]:
        """Kiosks per wave for ``total`` targets: a count, or a share of all (rounded up);
        the last wave takes the rest. Empty waves are dropped."""
        sizes, left = [], total
        for i, w in enumerate(self.waves):
            if i == len(self.waves) - 1:
                n = left
            else:
                n = w if isinstance(w, int) else -(-total * int(w[:-1]) // 100)
            n = min(n, left)
            if n > 0:
                sizes.append(n)
            left -= n
        return sizes


@dataclass
class Health:
    crashes: int = 0
    decisions: int = 0
    false_rejects: int = 0
    checkouts: int = 0
    failed_loans: int = 0


@dataclass(frozen=True)
class Track:
    """Where one kind of release lives in a kiosk's desired and reported state. Software is
    one version; a model is the active model of its task; a configuration document is one."""

    kind: str
    task: str | None = None

    def report(self, reported: dict[str, Any]) -> dict[str, Any]:
        key = {"software": "update", "model": "model_update", "config": "config_update"}
        return reported.get(key[self.kind]) or {}

    def current(self, reported: dict[str, Any]) -> str | None:
        """What the kiosk runs now (on trial or committed)."""
        if self.kind == "software":
            return self.report(reported).get("committed") or reported.get("software")
        if self.kind == "model":
            return (reported.get("models") or {}).get(self.task or "") or BUILTIN
        return reported.get("config_release") or BUILTIN

    def runs(self, reported: dict[str, Any], release: str | None) -> bool:
        """The kiosk runs ``release`` and it is not on trial any more."""
        doc = self.report(reported)
        if self.kind == "software":
            committed = doc.get("committed") or reported.get("software")
            return committed == release and doc.get("pending") is None
        return self.current(reported) == release and doc.get("pending") is None

    def desire(self, doc: dict[str, Any], release: str | None) -> bool:
        """Names ``release`` in a desired-state document; False when it already did."""
        if self.kind == "software":
            before, doc["software"] = doc.get("software"), release
        elif self.kind == "model":
            models = dict(doc.get("models") or {})
            before, models[self.task or ""] = models.get(self.task or ""), release or BUILTIN
            doc["models"] = models
        else:
            before, doc["config_release"] = doc.get("config_release"), release
        return before != release


def _id() -> str:
    return f"r{utc_now():%Y%m%d}{secrets.token_hex(4)}"


class Rollouts:
    def __init__(
        self,
        repo: Repo,
        releases: ReleaseRepo | None,
        publish: Publish | None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.repo = repo
        self.releases = releases
        self.publish = publish
        self.now = now
        self._tracks: dict[tuple[str, str], Track] = {}

    # -- reading ----------------------------------------------------------------------------

    def _devices(self, ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        q = select(devices).where(devices.c.role.is_not(None))
        if ids is not None:
            q = q.where(devices.c.device_id.in_(ids))
        with self.repo.engine.connect() as conn:
            return {r.device_id: dict(r._mapping) for r in conn.execute(q)}

    def list_all(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.repo.engine.connect() as conn:
            rows = conn.execute(
                select(rollouts).order_by(rollouts.c.created_at.desc()).limit(limit)
            ).fetchall()
            return [self._summary(conn, dict(r._mapping)) for r in rows]

    def get(self, rollout_id: str) -> dict[str, Any] | None:
        with self.repo.engine.connect() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.rollout_id == rollout_id)).first()
            if row is None:
                return None
            out = self._summary(conn, dict(row._mapping))
            out["targets"] = [
                dict(t._mapping)
                for t in conn.execute(
                    select(rollout_targets)
                    .where(rollout_targets.c.rollout_id == rollout_id)
                    .order_by(rollout_targets.c.wave, rollout_targets.c.device_id)
                )
            ]
            return out

    def _summary(self, conn: Any, r: dict[str, Any]) -> dict[str, Any]:
        rows = conn.execute(
            select(rollout_targets.c.wave, rollout_targets.c.state).where(
                rollout_targets.c.rollout_id == r["rollout_id"]
            )
        ).fetchall()
        waves: dict[int, dict[str, int]] = {}
        for wave, state in rows:
            counts = waves.setdefault(int(wave), {})
            counts[state] = counts.get(state, 0) + 1
        r["waves"] = [
            {"wave": w, "size": sum(c.values()), "states": c} for w, c in sorted(waves.items())
        ]
        r["targets_total"] = len(rows)
        return r

    # -- changes ----------------------------------------------------------------------------

    def create(
        self, kind: str, release: str, selector: Selector, plan: RolloutPlan, actor: str
    ) -> dict[str, Any]:
        self.track(kind, release)  # refuses an unknown kind or a release not published
        chosen = [d for d in self._devices().values() if selector.matches(d)]
        if not chosen:
            raise RolloutError(404, "the selection matches no kiosk")
        chosen.sort(key=lambda d: (not d["online"], d["site"], d["device_id"]))
        ids = [d["device_id"] for d in chosen]
        now = self.now()
        rollout_id = _id()
        with self.repo.engine.begin() as conn:
            busy = conn.execute(
                select(rollout_targets.c.device_id, rollouts.c.rollout_id)
                .join(rollouts, rollouts.c.rollout_id == rollout_targets.c.rollout_id)
                .where(
                    and_(
                        rollouts.c.state.in_(ACTIVE),
                        rollouts.c.kind == kind,
                        rollout_targets.c.device_id.in_(ids),
                    )
                )
                .limit(5)
            ).fetchall()
            if busy:
                names = ", ".join(f"{d} ({r})" for d, r in busy)
                raise RolloutError(409, f"already in an active rollout: {names}")
            conn.execute(
                insert(rollouts).values(
                    rollout_id=rollout_id,
                    kind=kind,
                    release=release,
                    selector=selector.model_dump(),
                    plan=plan.model_dump(),
                    state="running",
                    wave=0,
                    halt_reason=None,
                    history=[{"at": now.isoformat(), "what": f"created by {actor}"}],
                    created_by=actor,
                    created_at=now,
                    updated_at=now,
                )
            )
            rows, start = [], 0
            for wave, size in enumerate(plan.sizes(len(chosen))):
                for d in chosen[start : start + size]:
                    rows.append(
                        {
                            "rollout_id": rollout_id,
                            "device_id": d["device_id"],
                            "site": d["site"],
                            "wave": wave,
                            "state": "pending",
                        }
                    )
                start += size
            conn.execute(insert(rollout_targets), rows)
        log.info("rollout %s of %s to %d kiosks", rollout_id, release, len(chosen))
        got = self.get(rollout_id)
        assert got is not None
        return got

    def control(self, rollout_id: str, action: str, actor: str) -> dict[str, Any]:
        allowed = {"pause": ("running",), "resume": ("paused",), "abort": (*ACTIVE, "halted")}
        new = {"pause": "paused", "resume": "running", "abort": "aborted"}[action]
        with self.repo.engine.begin() as conn:
            row = conn.execute(
                select(rollouts.c.state, rollouts.c.history).where(
                    rollouts.c.rollout_id == rollout_id
                )
            ).first()
            if row is None:
                raise RolloutError(404, "no such rollout")
            if row.state not in allowed[action]:
                raise RolloutError(409, f"cannot {action} a rollout that is {row.state}")
            history = [*row.history, {"at": self.now().isoformat(), "what": f"{action} by {actor}"}]
            values: dict[str, Any] = {"state": new, "history": history, "updated_at": self.now()}
            if action == "resume":
                values["halt_reason"] = None
            conn.execute(
                update(rollouts).where(rollouts.c.rollout_id == rollout_id).values(**values)
            )
        got = self.get(rollout_id)
        assert got is not None
        return got

    def track(self, kind: str, release: str) -> Track:
        """The track of a published release; RolloutError 404 when it is not one."""
        import re

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
        import asyncio

        with self.repo.engine.connect() as conn:
            running = [
                dict(r._mapping)
                for r in conn.execute(
                    select(rollouts).where(rollouts.c.state.in_(("running", "halted", "paused")))
                )
            ]
        for r in running:
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
        """One look at a rollout; returns the desired-state changes to publish."""
        plan = RolloutPlan.model_validate(r["plan"])
        now = self.now()
        rid, release = r["rollout_id"], r["release"]
        with self.repo.engine.connect() as conn:
            targets = {
                t.device_id: dict(t._mapping)
                for t in conn.execute(
                    select(rollout_targets).where(rollout_targets.c.rollout_id == rid)
                )
            }
        fleet = self._devices()
        changes: list[tuple[str, str | None]] = []
        updates: dict[str, dict[str, Any]] = {}
        if r["state"] == "running":
            self._join_new(r, plan, targets, fleet)
        # what each kiosk reports
        for device_id, t in targets.items():
            d = fleet.get(device_id)
            if d is None:
                continue
            new = self._observe(track, t, d, release, plan, now)
            if new:
                updates[device_id] = new
                t.update(new)
        wave = int(r["wave"])
        in_wave = [t for t in targets.values() if t["wave"] == wave]
        history = list(r["history"])
        state, reason = r["state"], r["halt_reason"]
        if state == "running" and in_wave:
            failed = [t for t in in_wave if t["state"] == "failed"]
            if failed and len(failed) / len(in_wave) > plan.errors:
                why = "; ".join(f"{t['device_id']}: {t['reason']}" for t in failed[:3])
                reason = f"wave {wave}: {len(failed)} of {len(in_wave)} failed ({why})"
            elif plan.health:
                reason = self._health_halt(in_wave, plan, now)
                if reason:
                    reason = f"wave {wave}: {reason}"
            if reason:
                state = "halted"
                history.append({"at": now.isoformat(), "what": f"halted: {reason}"})
                for t in in_wave:
                    if t["state"] in ("committed", "updating") and t["previous"]:
                        changes.append((t["device_id"], t["previous"]))
                        updates.setdefault(t["device_id"], {}).update(
                            state="reverting", reason="halted: going back", finished_at=None
                        )
                        t["state"] = "reverting"
                log.warning("rollout %s halted: %s", rid, reason)
        if state == "running":
            changes += self._start(track, in_wave, fleet, targets, plan, release, updates, now)
            done = [t for t in in_wave if t["state"] in ("committed", "failed", "skipped")]
            committed = sum(1 for t in in_wave if t["state"] == "committed")
            if in_wave and len(done) == len(in_wave) and committed / len(in_wave) >= plan.success:
                last = max(t["wave"] for t in targets.values())
                if wave >= last:
                    state = "done"
                    history.append({"at": now.isoformat(), "what": "done"})
                else:
                    wave += 1
                    history.append({"at": now.isoformat(), "what": f"wave {wave} started"})
        with self.repo.engine.begin() as conn:
            for device_id, values in updates.items():
                conn.execute(
                    update(rollout_targets)
                    .where(
                        and_(
                            rollout_targets.c.rollout_id == rid,
                            rollout_targets.c.device_id == device_id,
                        )
                    )
                    .values(**values)
                )
            if (state, wave, reason) != (r["state"], r["wave"], r["halt_reason"]):
                conn.execute(
                    update(rollouts)
                    .where(and_(rollouts.c.rollout_id == rid, rollouts.c.state == r["state"]))
                    .values(
                        state=state,
                        wave=wave,
                        halt_reason=reason,
                        history=history[-200:],
                        updated_at=now,
                    )
                )
        return changes

    def _join_new(
        self,
        r: dict[str, Any],
        plan: RolloutPlan,
        targets: dict[str, dict[str, Any]],
        fleet: dict[str, dict[str, Any]],
    ) -> None:
        """Kiosks enrolled during the rollout join its next wave (never the canary)."""
        selector = Selector.model_validate(r["selector"])
        if selector.devices:
            return  # an explicit list of kiosks is exactly that list
        new = [d for i, d in fleet.items() if i not in targets and selector.matches(d)]
        if not new:
            return
        last = max((t["wave"] for t in targets.values()), default=0)
        wave = min(int(r["wave"]) + 1, last) if last else 0
        rows = [
            {
                "rollout_id": r["rollout_id"],
                "device_id": d["device_id"],
                "site": d["site"],
                "wave": wave,
                "state": "pending",
            }
            for d in new
        ]
        with self.repo.engine.begin() as conn:
            conn.execute(insert(rollout_targets), rows)
        for row in rows:
            targets[row["device_id"]] = {
                **row,
                "previous": None,
                "reason": None,
                "started_at": None,
                "finished_at": None,
            }
        log.info("rollout %s: %d new kiosk(s) join wave %d", r["rollout_id"], len(rows), wave)

    def _observe(
        self,
        track: Track,
        t: dict[str, Any],
        d: dict[str, Any],
        release: str,
        plan: RolloutPlan,
        now: datetime,
    ) -> dict[str, Any] | None:
        reported = d.get("reported") or {}
        update_doc = track.report(reported)
        last = update_doc.get("last") or {}
        if t["state"] == "reverting":
            if track.runs(reported, t["previous"]):
                return {"state": "rolled_back", "finished_at": now}
            return None
        if t["state"] != "updating":
            return None
        if track.runs(reported, release):
            return {"state": "committed", "finished_at": now, "reason": None}
        if last.get("version") == release and last.get("result") == "rolled_back":
            return {
                "state": "failed",
                "finished_at": now,
                "reason": f"rolled back: {last.get('reason', '')}"[:500],
            }
        if release in (update_doc.get("refused") or []):
            return {
                "state": "failed",
                "finished_at": now,
                "reason": "rolled back earlier on this kiosk",
            }
        if (
            update_doc.get("phase") == "failed"
            and update_doc.get("wanted") == release
            and update_doc.get("reason") not in TRANSIENT
        ):
            why = f"{update_doc.get('reason')}: {update_doc.get('detail') or ''}"
            return {"state": "failed", "finished_at": now, "reason": why[:500]}
        started = t["started_at"]
        if started is not None and now - started > timedelta(seconds=plan.wave_timeout_s):
            if not d["online"]:
                return {"state": "skipped", "finished_at": now, "reason": "offline"}
            return {"state": "failed", "finished_at": now, "reason": "not committed in time"}
        return None

    def _start(
        self,
        track: Track,
        in_wave: list[dict[str, Any]],
        fleet: dict[str, dict[str, Any]],
        targets: dict[str, dict[str, Any]],
        plan: RolloutPlan,
        release: str,
        updates: dict[str, dict[str, Any]],
        now: datetime,
    ) -> list[tuple[str, str | None]]:
        """Start pending kiosks of the wave within the disruption budget."""
        updating = [t for t in targets.values() if t["state"] == "updating"]
        per_site: dict[str, int] = {}
        per_entrance: dict[str, int] = {}
        for t in updating:
            per_site[t["site"]] = per_site.get(t["site"], 0) + 1
            e = self._entrance(fleet.get(t["device_id"]), plan)
            if e:
                per_entrance[e] = per_entrance.get(e, 0) + 1
        gates: dict[str, int] = {}
        for kiosk in fleet.values():
            e = self._entrance(kiosk, plan)
            if e:
                gates[e] = gates.get(e, 0) + 1
        changes: list[tuple[str, str | None]] = []
        for t in in_wave:
            if t["state"] != "pending":
                continue
            d = fleet.get(t["device_id"])
            if d is None:
                updates[t["device_id"]] = {
                    "state": "skipped",
                    "reason": "no longer registered",
                    "finished_at": now,
                }
                continue
            if per_site.get(t["site"], 0) >= plan.max_per_site:
                continue
            e = self._entrance(d, plan)
            if e and gates[e] > 1 and per_entrance.get(e, 0) >= gates[e] - 1:
                continue  # the entrance keeps at least one gate working
            current = track.current(d.get("reported") or {})
            per_site[t["site"]] = per_site.get(t["site"], 0) + 1
            if e:
                per_entrance[e] = per_entrance.get(e, 0) + 1
            values = {"state": "updating", "previous": current, "started_at": now, "reason": None}
            if current == release:
                values.update(state="committed", finished_at=now)
            else:
                changes.append((t["device_id"], release))
            updates[t["device_id"]] = values
            t.update(values)
        return changes

    def _entrance(self, d: dict[str, Any] | None, plan: RolloutPlan) -> str | None:
        if d is None or d.get("role") != "gate":
            return None
        e = (d.get("labels") or {}).get(plan.entrance_label)
        return f"{d['site']}/{e}" if e else None

    # -- application health -----------------------------------------------------------------

    def _health_halt(
        self, wave: list[dict[str, Any]], plan: RolloutPlan, now: datetime
    ) -> str | None:
        on_new = [t for t in wave if t["state"] in ("committed", "updating") and t["started_at"]]
        if not on_new:
            return None
        start = min(t["started_at"] for t in on_new)
        span = max(now - start, timedelta(seconds=60))
        ids = [t["device_id"] for t in on_new]
        after = self.health(ids, start, now)
        before = self.health(ids, start - span, start)
        f = plan.health_factor
        if after.crashes >= plan.min_events and after.crashes > before.crashes * f:
            return f"{after.crashes} component crashes on the new release, {before.crashes} before"
        if after.false_rejects >= plan.min_events and after.decisions:
            rate = after.false_rejects / after.decisions
            base = before.false_rejects / before.decisions if before.decisions else 0.0
            if rate > base * f + 0.01:
                return f"gate false rejects {rate:.1%} on the new release, {base:.1%} before"
        if after.failed_loans >= plan.min_events and after.checkouts:
            rate = after.failed_loans / after.checkouts
            base = before.failed_loans / before.checkouts if before.checkouts else 0.0
            if rate > base * f + 0.01:
                return f"failed loans {rate:.1%} on the new release, {base:.1%} before"
        return None

    def health(self, device_ids: list[str], since: datetime, until: datetime) -> Health:
        """Crashes, gate false rejects (a face refused, then the same gate let the reader in
        by card within 30 s) and failed loans of these kiosks over a time window."""
        q = (
            select(events.c.device_id, events.c.type, events.c.occurred_at, events.c.payload)
            .where(
                and_(
                    events.c.device_id.in_(device_ids),
                    events.c.occurred_at >= since,
                    events.c.occurred_at < until,
                    events.c.type.in_(
                        ("device.component_crashed", "gate.decision", "circ.checkout")
                    ),
                )
            )
            .order_by(events.c.device_id, events.c.occurred_at)
            .limit(200_000)
        )
        h = Health()
        refused_at: dict[str, datetime] = {}
        with self.repo.engine.connect() as conn:
            for device_id, etype, at, payload in conn.execute(q):
                if etype == "device.component_crashed":
                    h.crashes += 1
                elif etype == "gate.decision":
                    h.decisions += 1
                    if (
                        payload.get("decision") == "deny"
                        and payload.get("reason") == "unknown_face"
                    ):
                        refused_at[device_id] = at
                    elif payload.get("decision") == "grant" and payload.get("method") != "face":
                        seen = refused_at.pop(device_id, None)
                        if seen is not None and at - seen <= timedelta(seconds=30):
                            h.false_rejects += 1
                else:
                    h.checkouts += 1
                    if payload.get("result") not in ("ok", None):
                        h.failed_loans += 1
        return h

    # -- desired state ----------------------------------------------------------------------

    async def _set_desired(self, track: Track, device_id: str, release: str | None) -> None:
        import asyncio

        for _ in range(5):
            device = await asyncio.to_thread(self.repo.get_device, device_id)
            if device is None:
                return
            doc = dict(device.get("desired") or {})
            doc.pop("version", None)
            if not track.desire(doc, release):
                return
            try:
                site, desired = await asyncio.to_thread(
                    self.repo.put_desired, device_id, int(device["desired_version"]), doc
                )
            except StaleVersion:
                continue
            if self.publish is not None:
                await self.publish(site, device_id, desired)
            return

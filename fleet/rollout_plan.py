"""The rollout planner: what to do next, decided from what is known, touching nothing.

``plan_step(rollout, fleet, now)`` is a pure function: it reads a rollout, the fleet as the
database last saw it (kiosks, the rollout's targets, revoked kiosks, the health events of
the wave) and the time, and returns the ``Steps`` to take — targets to add, target rows to
change, the rollout's new state, the desired-state changes to publish. It does no I/O, so
every rule (waves, thresholds, the disruption budget, health halts, joins, pause and
abort) is tested from a table of cases without a database (tests/test_rollout_plan.py);
``fleet/rollouts.py`` loads, plans and applies, ``fleet/store/rollouts.py`` holds the SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from biblioedge.protocol import BUILTIN, ID_PATTERN

ACTIVE = ("running", "paused")
#: how a kiosk's own update failure is worded when it will retry by itself
TRANSIENT = {"unreachable", "expired_metadata", "local_error", "disk", "busy"}
#: at most this many health events are counted per time window (as one query returned them)
HEALTH_EVENTS_LIMIT = 200_000
HEALTH_TYPES = ("device.component_crashed", "gate.decision", "circ.checkout")
#: IT sets a kiosk aside (the dashboard's quarantine) with this label: no rollout takes it
QUARANTINE_LABEL = "quarantine"
QUARANTINE_ON = "on"


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

    def matches(self, row: Mapping[str, Any]) -> bool:
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

    def report(self, reported: Mapping[str, Any]) -> dict[str, Any]:
        key = {"software": "update", "model": "model_update", "config": "config_update"}
        return reported.get(key[self.kind]) or {}

    def current(self, reported: Mapping[str, Any]) -> str | None:
        """What the kiosk runs now (on trial or committed)."""
        if self.kind == "software":
            return self.report(reported).get("committed") or reported.get("software")
        if self.kind == "model":
            return (reported.get("models") or {}).get(self.task or "") or BUILTIN
        return reported.get("config_release") or BUILTIN

    def runs(self, reported: Mapping[str, Any], release: str | None) -> bool:
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


# -- what the planner reads -----------------------------------------------------------------


@dataclass(frozen=True)
class Kiosk:
    """A registered kiosk (one with a role) as the registry last saw it."""

    device_id: str
    site: str
    role: str
    online: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    reported: Mapping[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The fields a ``Selector`` matches on."""
        return {
            "device_id": self.device_id,
            "site": self.site,
            "role": self.role,
            "labels": self.labels,
        }


@dataclass(frozen=True)
class Target:
    """One kiosk of a rollout: its wave, where it is, what it ran before (a table row)."""

    device_id: str
    site: str
    wave: int
    state: str = "pending"
    previous: str | None = None
    reason: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Rollout:
    rollout_id: str
    release: str
    track: Track
    selector: Selector
    plan: RolloutPlan
    state: str
    wave: int
    halt_reason: str | None = None
    history: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class HealthEvent:
    device_id: str
    type: str
    occurred_at: datetime
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class FleetState:
    """What central knows at one look: kiosks by id, the rollout's targets by id, which of
    the kiosks outside the rollout are revoked, and the health events of the current wave
    (see ``health_window``)."""

    kiosks: Mapping[str, Kiosk]
    targets: Mapping[str, Target]
    revoked: frozenset[str] = frozenset()
    events: Sequence[HealthEvent] = ()


# -- what the planner returns -----------------------------------------------------------------


@dataclass(frozen=True)
class RolloutChange:
    state: str
    wave: int
    halt_reason: str | None
    history: tuple[Mapping[str, Any], ...]


@dataclass
class Steps:
    """What to write and publish, in this order: ``joins`` (new target rows), ``updates``
    (column values per target), ``rollout`` (None when state, wave and reason stay), then
    ``desired`` (device, release to name in its desired state)."""

    joins: list[Target] = field(default_factory=list)
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    rollout: RolloutChange | None = None
    desired: list[tuple[str, str | None]] = field(default_factory=list)
    #: for the log: why the rollout halted in this step
    halted: str | None = None


# -- creating and controlling -------------------------------------------------------------------


def choose(
    kiosks: Iterable[Kiosk], selector: Selector, plan: RolloutPlan, revoked: frozenset[str]
) -> list[Target]:
    """The targets of a new rollout in waves: the selection minus revoked kiosks (they
    never report) and quarantined ones (set aside by IT), online ones first, then by site
    and id; RolloutError 404 when none."""
    chosen = [
        k
        for k in kiosks
        if selector.matches(k.row())
        and k.device_id not in revoked
        and k.labels.get(QUARANTINE_LABEL) != QUARANTINE_ON
    ]
    if not chosen:
        raise RolloutError(404, "the selection matches no kiosk")
    chosen.sort(key=lambda k: (not k.online, k.site, k.device_id))
    targets, start = [], 0
    for wave, size in enumerate(plan.sizes(len(chosen))):
        targets += [Target(k.device_id, k.site, wave) for k in chosen[start : start + size]]
        start += size
    return targets


def control(
    state: str, history: Sequence[Mapping[str, Any]], action: str, actor: str, now: datetime
) -> dict[str, Any]:
    """The rollout columns after IT's pause, resume or abort; RolloutError 409 when the
    rollout's state does not allow it."""
    allowed = {"pause": ("running",), "resume": ("paused",), "abort": (*ACTIVE, "halted")}
    new = {"pause": "paused", "resume": "running", "abort": "aborted"}[action]
    if state not in allowed[action]:
        raise RolloutError(409, f"cannot {action} a rollout that is {state}")
    values: dict[str, Any] = {
        "state": new,
        "history": [*history, {"at": now.isoformat(), "what": f"{action} by {actor}"}],
        "updated_at": now,
    }
    if action == "resume":
        values["halt_reason"] = None
    return values


# -- one look at a running rollout ------------------------------------------------------------


def plan_step(rollout: Rollout, fleet: FleetState, now: datetime) -> Steps:
    """One look at a rollout: observe what kiosks report, halt on failures or worse health
    (sending the wave back), start pending kiosks within the budget, advance or finish."""
    plan, release, track = rollout.plan, rollout.release, rollout.track
    targets = dict(fleet.targets)
    steps = Steps()
    if rollout.state == "running":
        steps.joins = joins(rollout, fleet)
        targets.update((t.device_id, t) for t in steps.joins)
    for device_id, t in targets.items():  # what each kiosk reports
        kiosk = fleet.kiosks.get(device_id)
        if kiosk is None:
            continue
        new = observe(track, t, kiosk, release, plan, now)
        if new:
            steps.updates[device_id] = new
            targets[device_id] = replace(t, **new)
    wave = rollout.wave
    in_wave = [t for t in targets.values() if t.wave == wave]
    history = list(rollout.history)
    state, reason = rollout.state, rollout.halt_reason
    if state == "running" and in_wave:
        reason = halt(wave, in_wave, plan, fleet.events, now)
        if reason:
            state, steps.halted = "halted", reason
            history.append({"at": now.isoformat(), "what": f"halted: {reason}"})
            for t in in_wave:
                if t.state in ("committed", "updating") and t.previous:
                    steps.desired.append((t.device_id, t.previous))
                    back = {"state": "reverting", "reason": "halted: going back"}
                    steps.updates.setdefault(t.device_id, {}).update(back, finished_at=None)
                    targets[t.device_id] = replace(t, state="reverting")
    if state == "running":
        steps.desired += start(track, in_wave, fleet.kiosks, targets, plan, release, steps, now)
        in_wave = [targets[t.device_id] for t in in_wave]
        done = [t for t in in_wave if t.state in ("committed", "failed", "skipped")]
        committed = sum(1 for t in in_wave if t.state == "committed")
        if in_wave and len(done) == len(in_wave) and committed / len(in_wave) >= plan.success:
            if wave >= max(t.wave for t in targets.values()):
                state = "done"
                history.append({"at": now.isoformat(), "what": "done"})
            else:
                wave += 1
                history.append({"at": now.isoformat(), "what": f"wave {wave} started"})
    if (state, wave, reason) != (rollout.state, rollout.wave, rollout.halt_reason):
        steps.rollout = RolloutChange(state, wave, reason, tuple(history[-200:]))
    return steps


def halt(
    wave: int,
    in_wave: list[Target],
    plan: RolloutPlan,
    events: Sequence[HealthEvent],
    now: datetime,
) -> str | None:
    """Why the running wave halts: more than ``errors`` of it failed, or it does worse on
    the new release than before; None when it goes on."""
    failed = [t for t in in_wave if t.state == "failed"]
    if failed and len(failed) / len(in_wave) > plan.errors:
        why = "; ".join(f"{t.device_id}: {t.reason}" for t in failed[:3])
        return f"wave {wave}: {len(failed)} of {len(in_wave)} failed ({why})"
    reason = health_halt(in_wave, plan, events, now) if plan.health else None
    return f"wave {wave}: {reason}" if reason else None


def joins(rollout: Rollout, fleet: FleetState) -> list[Target]:
    """Kiosks enrolled during the rollout join its next wave (never the canary); an explicit
    list of kiosks is exactly that list, and revoked kiosks never join."""
    if rollout.selector.devices:
        return []
    new = [
        k
        for i, k in fleet.kiosks.items()
        if i not in fleet.targets and rollout.selector.matches(k.row()) and i not in fleet.revoked
    ]
    if not new:
        return []
    last = max((t.wave for t in fleet.targets.values()), default=0)
    wave = min(rollout.wave + 1, last) if last else 0
    return [Target(k.device_id, k.site, wave) for k in new]


def observe(
    track: Track, t: Target, kiosk: Kiosk, release: str, plan: RolloutPlan, now: datetime
) -> dict[str, Any] | None:
    """The target's new columns from what its kiosk reports, or None when nothing changed."""
    reported = kiosk.reported
    update_doc = track.report(reported)
    last = update_doc.get("last") or {}
    if t.state == "reverting":
        if track.runs(reported, t.previous):
            return {"state": "rolled_back", "finished_at": now}
        return None
    if t.state != "updating":
        return None
    if track.runs(reported, release):
        return {"state": "committed", "finished_at": now, "reason": None}
    if last.get("version") == release and last.get("result") == "rolled_back":
        why = f"rolled back: {last.get('reason', '')}"[:500]
        return {"state": "failed", "finished_at": now, "reason": why}
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
    started = t.started_at
    if started is not None and now - started > timedelta(seconds=plan.wave_timeout_s):
        if not kiosk.online:
            return {"state": "skipped", "finished_at": now, "reason": "offline"}
        return {"state": "failed", "finished_at": now, "reason": "not committed in time"}
    return None


def start(
    track: Track,
    in_wave: list[Target],
    kiosks: Mapping[str, Kiosk],
    targets: dict[str, Target],
    plan: RolloutPlan,
    release: str,
    steps: Steps,
    now: datetime,
) -> list[tuple[str, str | None]]:
    """Start pending kiosks of the wave within the disruption budget: at most
    ``max_per_site`` of a site updating, and an entrance keeps at least one gate working.
    Records the starts in ``steps.updates`` and ``targets``; returns what to publish."""
    per_site: dict[str, int] = {}
    per_entrance: dict[str, int] = {}
    for t in targets.values():
        if t.state == "updating":
            per_site[t.site] = per_site.get(t.site, 0) + 1
            e = entrance(kiosks.get(t.device_id), plan)
            if e:
                per_entrance[e] = per_entrance.get(e, 0) + 1
    gates: dict[str, int] = {}
    for kiosk in kiosks.values():
        e = entrance(kiosk, plan)
        if e:
            gates[e] = gates.get(e, 0) + 1
    changes: list[tuple[str, str | None]] = []
    for t in in_wave:  # as observed: only this loop changes them further, each once
        if t.state != "pending":
            continue
        d = kiosks.get(t.device_id)
        if d is None:
            # written now, counted as skipped from the next look on
            steps.updates[t.device_id] = {
                "state": "skipped",
                "reason": "no longer registered",
                "finished_at": now,
            }
            continue
        if per_site.get(t.site, 0) >= plan.max_per_site:
            continue
        e = entrance(d, plan)
        if e and gates[e] > 1 and per_entrance.get(e, 0) >= gates[e] - 1:
            continue  # the entrance keeps at least one gate working
        current = track.current(d.reported)
        per_site[t.site] = per_site.get(t.site, 0) + 1
        if e:
            per_entrance[e] = per_entrance.get(e, 0) + 1
        values: dict[str, Any] = {
            "state": "updating",
            "previous": current,
            "started_at": now,
            "reason": None,
        }
        if current == release:
            values.update(state="committed", finished_at=now)
        else:
            changes.append((t.device_id, release))
        steps.updates[t.device_id] = values
        targets[t.device_id] = replace(t, **values)
    return changes


def entrance(d: Kiosk | None, plan: RolloutPlan) -> str | None:
    """The entrance a gate belongs to (``site/label``), None for other kiosks."""
    if d is None or d.role != "gate":
        return None
    e = d.labels.get(plan.entrance_label)
    return f"{d.site}/{e}" if e else None


# -- application health -----------------------------------------------------------------------


def health_window(
    rollout: Rollout, targets: Iterable[Target], now: datetime
) -> tuple[list[str], datetime] | None:
    """Which kiosks' health events a look may need, and since when (until ``now``): those of
    the current wave on the new release. Observing only takes kiosks off that list, which
    only narrows the windows ``health_halt`` compares, so this covers them all."""
    if rollout.state != "running" or not rollout.plan.health:
        return None
    on_new = [
        t
        for t in targets
        if t.wave == rollout.wave and t.state in ("committed", "updating") and t.started_at
    ]
    if not on_new:
        return None
    start = min(t.started_at for t in on_new if t.started_at is not None)
    span = max(now - start, timedelta(seconds=60))
    return [t.device_id for t in on_new], start - span


def health_halt(
    wave: list[Target], plan: RolloutPlan, events: Sequence[HealthEvent], now: datetime
) -> str | None:
    """Why the wave does worse on the new release than its kiosks did before it, comparing
    equal time windows (at least a minute); None when it does not."""
    on_new = [t for t in wave if t.state in ("committed", "updating") and t.started_at]
    if not on_new:
        return None
    start = min(t.started_at for t in on_new if t.started_at is not None)
    span = max(now - start, timedelta(seconds=60))
    ids = {t.device_id for t in on_new}
    after = count_health(events, ids, start, now)
    before = count_health(events, ids, start - span, start)
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


def count_health(
    events: Iterable[HealthEvent], device_ids: set[str], since: datetime, until: datetime
) -> Health:
    """Crashes, gate false rejects (a face refused, then the same gate let the reader in
    by card within 30 s) and failed loans of these kiosks over ``[since, until)``."""
    window = sorted(
        (
            e
            for e in events
            if e.device_id in device_ids
            and since <= e.occurred_at < until
            and e.type in HEALTH_TYPES
        ),
        key=lambda e: (e.device_id, e.occurred_at),
    )[:HEALTH_EVENTS_LIMIT]
    h = Health()
    refused_at: dict[str, datetime] = {}
    for e in window:
        if e.type == "device.component_crashed":
            h.crashes += 1
        elif e.type == "gate.decision":
            h.decisions += 1
            if e.payload.get("decision") == "deny" and e.payload.get("reason") == "unknown_face":
                refused_at[e.device_id] = e.occurred_at
            elif e.payload.get("decision") == "grant" and e.payload.get("method") != "face":
                seen = refused_at.pop(e.device_id, None)
                if seen is not None and e.occurred_at - seen <= timedelta(seconds=30):
                    h.false_rejects += 1
        else:
            h.checkouts += 1
            if e.payload.get("result") not in ("ok", None):
                h.failed_loans += 1
    return h

"""The rollout planner from tables, without a database: each case is a rollout, the fleet as
central last saw it and the time, and what the planner must decide — waves, the success and
error thresholds, the disruption budget, health halts, kiosks that join, pause and abort.
The same rules run against a real database in test_rollouts.py and with real kiosks in
test_fleet_rollout.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from biblioedge.fleet.rollout_plan import (
    FleetState,
    HealthEvent,
    Kiosk,
    Rollout,
    RolloutError,
    RolloutPlan,
    Selector,
    Target,
    Track,
    choose,
    control,
    health_window,
    plan_step,
)

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def kiosk(
    device_id: str,
    version: str = "1.0",
    *,
    site: str = "tv-tinh",
    role: str = "gate",
    online: bool = True,
    labels: dict[str, str] | None = None,
    **update: Any,
) -> Kiosk:
    """A kiosk reporting ``version`` committed, and ``update`` in its update document."""
    doc = {"phase": "idle", "committed": version, "pending": None, **update}
    reported = {"device_id": device_id, "software": version, "update": doc}
    return Kiosk(device_id, site, role, online, labels or {}, reported)


def t(
    device_id: str, wave: int = 0, state: str = "pending", *, site: str = "tv-tinh", **kw: Any
) -> Target:
    if state in ("updating", "committed", "reverting") and "started_at" not in kw:
        kw["started_at"] = NOW - 5 * MIN
    if state in ("updating", "committed", "reverting") and "previous" not in kw:
        kw["previous"] = "1.0"
    return Target(device_id, site, wave, state, **kw)


def ev(device_id: str, etype: str, ago: timedelta, **payload: Any) -> HealthEvent:
    return HealthEvent(device_id, etype, NOW - ago, payload)


@dataclass
class Case:
    name: str
    kiosks: list[Kiosk]
    targets: list[Target]
    plan: RolloutPlan = field(default_factory=RolloutPlan)
    state: str = "running"
    wave: int = 0
    selector: Selector = field(default_factory=Selector)
    revoked: frozenset[str] = frozenset()
    events: list[HealthEvent] = field(default_factory=list)
    # what the planner must decide
    desired: set[tuple[str, str | None]] = field(default_factory=set)
    states: dict[str, str] = field(default_factory=dict)  # target states written
    joins: dict[str, int] = field(default_factory=dict)  # device -> wave
    then: tuple[str, int] | None = None  # the rollout's new (state, wave); None: unchanged
    why: str = ""  # in the halt reason


def run(case: Case) -> Any:
    rollout = Rollout(
        "r1",
        "2.0",
        Track("software"),
        case.selector,
        case.plan,
        case.state,
        case.wave,
        "earlier halt" if case.state == "halted" else None,
        ({"at": "x", "what": "created by it"},),
    )
    fleet = FleetState(
        {k.device_id: k for k in case.kiosks},
        {x.device_id: x for x in case.targets},
        case.revoked,
        case.events,
    )
    return plan_step(rollout, fleet, NOW)


CASES = [
    # -- waves and thresholds -------------------------------------------------------------
    Case(
        "the canary starts alone",
        [kiosk("g0"), kiosk("g1"), kiosk("g2")],
        [t("g0"), t("g1", 1), t("g2", 2)],
        desired={("g0", "2.0")},
        states={"g0": "updating"},
    ),
    Case(
        "a kiosk already on the release commits at once and the wave advances",
        [kiosk("g0", "2.0"), kiosk("g1")],
        [t("g0"), t("g1", 1)],
        states={"g0": "committed"},
        then=("running", 1),
    ),
    Case(
        "a wave that committed advances",
        [kiosk("g0", "2.0"), kiosk("g1")],
        [t("g0", state="updating"), t("g1", 1)],
        states={"g0": "committed"},
        then=("running", 1),
    ),
    Case(
        "the next wave starts on the following look",
        [kiosk("g0", "2.0"), kiosk("g1"), kiosk("g2")],
        [t("g0", state="committed"), t("g1", 1), t("g2", 1)],
        wave=1,
        desired={("g1", "2.0"), ("g2", "2.0")},
        states={"g1": "updating", "g2": "updating"},
    ),
    Case(
        "the last wave done finishes the rollout",
        [kiosk("g0", "2.0"), kiosk("g1", "2.0")],
        [t("g0", state="committed"), t("g1", 1, "updating")],
        wave=1,
        states={"g1": "committed"},
        then=("done", 1),
    ),
    Case(
        "a wave on trial waits",
        [kiosk("g0", "2.0", pending="2.0", phase="trial"), kiosk("g1")],
        [t("g0", state="updating"), t("g1", 1)],
    ),
    Case(
        "failures within the error threshold and commits at the success threshold advance",
        [kiosk("a", "2.0"), kiosk("b", "2.0"), kiosk("c", "2.0"), kiosk("d"), kiosk("e")],
        [
            t("a", state="committed"),
            t("b", state="committed"),
            t("c", state="committed"),
            t("d", state="failed", reason="x"),
            t("e", 1),
        ],
        plan=RolloutPlan(success=0.75, errors=0.3),
        then=("running", 1),
    ),
    Case(
        "below the success threshold the wave stays",
        [kiosk("a", "2.0"), kiosk("b", "2.0"), kiosk("c"), kiosk("d"), kiosk("e")],
        [
            t("a", state="committed"),
            t("b", state="committed"),
            t("c", state="failed", reason="x"),
            t("d", state="failed", reason="x"),
            t("e", 1),
        ],
        plan=RolloutPlan(success=0.75, errors=0.5),
    ),
    Case(
        "more failures than the error threshold halt and send the committed ones back",
        [kiosk("a", "2.0"), kiosk("b", reason="install_failed", phase="failed", wanted="2.0")],
        [t("a", state="committed"), t("b", state="updating"), t("c", 1)],
        plan=RolloutPlan(errors=0.4),
        desired={("a", "1.0")},
        states={"a": "reverting", "b": "failed"},
        then=("halted", 0),
        why="1 of 2 failed (b: install_failed",
    ),
    Case(
        "a canary that rolled back by itself halts; nothing else starts",
        [
            kiosk(
                "g0",
                refused=["2.0"],
                last={"version": "2.0", "result": "rolled_back", "reason": "self-test failed"},
            ),
            kiosk("g1"),
        ],
        [t("g0", state="updating"), t("g1", 1)],
        states={"g0": "failed"},
        then=("halted", 0),
        why="rolled back: self-test failed",
    ),
    Case(
        "a release the kiosk refused before fails it",
        [kiosk("g0", refused=["2.0"]), kiosk("g1")],
        [t("g0", state="updating"), t("g1", 1)],
        states={"g0": "failed"},
        then=("halted", 0),
        why="g0: rolled back earlier on this kiosk",
    ),
    Case(
        "a transient failure is left to the kiosk's own retry",
        [kiosk("g0", phase="failed", wanted="2.0", reason="unreachable"), kiosk("g1")],
        [t("g0", state="updating"), t("g1", 1)],
    ),
    Case(
        "past the wave timeout an online kiosk failed, an offline one is skipped",
        [kiosk("on"), kiosk("off", online=False), kiosk("g1")],
        [
            t("on", state="updating", started_at=NOW - 31 * MIN),
            t("off", state="updating", started_at=NOW - 31 * MIN),
            t("g1", 1),
        ],
        plan=RolloutPlan(errors=0.5, success=0.5, health=False),
        states={"on": "failed", "off": "skipped"},
    ),
    Case(
        "a pending kiosk no longer registered is skipped",
        [kiosk("g1")],
        [t("gone"), t("g1", 1)],
        states={"gone": "skipped"},
    ),
    # -- the disruption budget -------------------------------------------------------------
    Case(
        "at most max_per_site of a branch update at once",
        [kiosk(f"s{i}", role="selfcheck") for i in range(5)],
        [t(f"s{i}") for i in range(5)],
        plan=RolloutPlan(waves=["100%"], max_per_site=2),
        desired={("s0", "2.0"), ("s1", "2.0")},
        states={"s0": "updating", "s1": "updating"},
    ),
    Case(
        "kiosks already updating count against the budget",
        [kiosk(f"s{i}", role="selfcheck") for i in range(4)],
        [t("s0", state="updating"), t("s1"), t("s2"), t("s3")],
        plan=RolloutPlan(waves=["100%"], max_per_site=2),
        desired={("s1", "2.0")},
        states={"s1": "updating"},
    ),
    Case(
        "the budget is per site",
        [kiosk("a", site="tv-tinh"), kiosk("b", site="tv-tinh"), kiosk("c", site="tv-huyen")],
        [t("a"), t("b"), t("c", site="tv-huyen")],
        plan=RolloutPlan(waves=["100%"], max_per_site=1),
        desired={("a", "2.0"), ("c", "2.0")},
        states={"a": "updating", "c": "updating"},
    ),
    Case(
        "an entrance keeps one gate working",
        [kiosk("n1", labels={"entrance": "north"}), kiosk("n2", labels={"entrance": "north"})],
        [t("n1"), t("n2")],
        plan=RolloutPlan(waves=["100%"]),
        desired={("n1", "2.0")},
        states={"n1": "updating"},
    ),
    Case(
        "the only gate of an entrance may update",
        [kiosk("n1", labels={"entrance": "north"}), kiosk("s1", labels={"entrance": "south"})],
        [t("n1"), t("s1")],
        plan=RolloutPlan(waves=["100%"]),
        desired={("n1", "2.0"), ("s1", "2.0")},
        states={"n1": "updating", "s1": "updating"},
    ),
    Case(
        "the entrance label counts for gates only",
        [
            kiosk("k1", role="selfcheck", labels={"entrance": "north"}),
            kiosk("k2", role="selfcheck", labels={"entrance": "north"}),
        ],
        [t("k1"), t("k2")],
        plan=RolloutPlan(waves=["100%"]),
        desired={("k1", "2.0"), ("k2", "2.0")},
        states={"k1": "updating", "k2": "updating"},
    ),
    # -- application health -----------------------------------------------------------------
    Case(
        "more crashes on the new release than before halt the wave",
        [kiosk("g0", "2.0", pending="2.0", phase="trial"), kiosk("g1")],
        [t("g0", state="updating"), t("g1", 1)],
        events=[ev("g0", "device.component_crashed", k * MIN) for k in (1, 2, 3)]
        + [ev("g0", "device.component_crashed", 6 * MIN)],
        desired={("g0", "1.0")},
        states={"g0": "reverting"},
        then=("halted", 0),
        why="3 component crashes on the new release, 1 before",
    ),
    Case(
        "as many crashes as before do not halt",
        [kiosk("g0", "2.0", pending="2.0", phase="trial"), kiosk("g1")],
        [t("g0", state="updating"), t("g1", 1)],
        events=[ev("g0", "device.component_crashed", k * MIN) for k in (1, 2, 3, 6, 7, 8)],
    ),
    Case(
        "fewer than min_events crashes do not halt",
        [kiosk("g0", "2.0", pending="2.0", phase="trial"), kiosk("g1")],
        [t("g0", state="updating"), t("g1", 1)],
        events=[ev("g0", "device.component_crashed", k * MIN) for k in (1, 2)],
    ),
    Case(
        "health halts can be turned off",
        [kiosk("g0", "2.0", pending="2.0", phase="trial"), kiosk("g1")],
        [t("g0", state="updating"), t("g1", 1)],
        plan=RolloutPlan(health=False),
        events=[ev("g0", "device.component_crashed", k * MIN) for k in (1, 2, 3)],
    ),
    Case(
        "gate false rejects: refused by face, then in by card within 30 s",
        [kiosk("g0", "2.0", pending="2.0", phase="trial"), kiosk("g1")],
        [t("g0", state="updating"), t("g1", 1)],
        events=[
            e
            for k in range(4)
            for e in (
                ev("g0", "gate.decision", (k + 1) * MIN, decision="deny", reason="unknown_face"),
                ev(
                    "g0",
                    "gate.decision",
                    (k + 1) * MIN - 5 * timedelta(seconds=1),
                    decision="grant",
                    method="card",
                ),
            )
        ],
        desired={("g0", "1.0")},
        states={"g0": "reverting"},
        then=("halted", 0),
        why="gate false rejects 50.0% on the new release, 0.0% before",
    ),
    Case(
        "a card entry long after a face refusal is no false reject",
        [kiosk("g0", "2.0", pending="2.0", phase="trial"), kiosk("g1")],
        [t("g0", state="updating"), t("g1", 1)],
        events=[
            e
            for k in range(4)
            for e in (
                ev("g0", "gate.decision", (k + 1) * MIN, decision="deny", reason="unknown_face"),
                ev(
                    "g0",
                    "gate.decision",
                    (k + 1) * MIN - 40 * timedelta(seconds=1),
                    decision="grant",
                    method="card",
                ),
            )
        ],
    ),
    Case(
        "failed loans halt a self-check wave",
        [kiosk("s0", "2.0", role="selfcheck"), kiosk("s1", role="selfcheck")],
        [t("s0", state="committed"), t("s1", 1)],
        events=[ev("s0", "circ.checkout", k * MIN, result="ils_error") for k in (1, 2, 3)]
        + [ev("s0", "circ.checkout", 7 * MIN, result="ok")],
        desired={("s0", "1.0")},
        states={"s0": "reverting"},
        then=("halted", 0),
        why="failed loans 100.0% on the new release, 0.0% before",
    ),
    # -- kiosks that join -------------------------------------------------------------------
    Case(
        "a kiosk enrolled during the rollout joins the next wave",
        [kiosk("g0", pending="2.0", phase="trial"), kiosk("g1"), kiosk("g2"), kiosk("new")],
        [t("g0", state="updating"), t("g1", 1), t("g2", 2)],
        joins={"new": 1},
    ),
    Case(
        "in the last wave it joins the last wave and starts",
        [kiosk("g0", "2.0"), kiosk("g1", pending="2.0", phase="trial"), kiosk("new")],
        [t("g0", state="committed"), t("g1", 1, "updating")],
        wave=1,
        joins={"new": 1},
        desired={("new", "2.0")},
        states={"new": "updating"},
    ),
    Case(
        "with one wave only it joins that wave",
        [kiosk("g0", pending="2.0", phase="trial"), kiosk("new")],
        [t("g0", state="updating")],
        joins={"new": 0},
        desired={("new", "2.0")},
        states={"new": "updating"},
    ),
    Case(
        "a revoked kiosk never joins",
        [kiosk("g0", pending="2.0", phase="trial"), kiosk("g1"), kiosk("new")],
        [t("g0", state="updating"), t("g1", 1)],
        revoked=frozenset({"new"}),
    ),
    Case(
        "a kiosk outside the selection never joins",
        [kiosk("g0", pending="2.0", phase="trial"), kiosk("g1"), kiosk("s", role="selfcheck")],
        [t("g0", state="updating"), t("g1", 1)],
        selector=Selector(roles=["gate"]),
    ),
    Case(
        "an explicit list of kiosks is exactly that list",
        [kiosk("g0", pending="2.0", phase="trial"), kiosk("g1"), kiosk("new")],
        [t("g0", state="updating"), t("g1", 1)],
        selector=Selector(devices=["g0", "g1"]),
    ),
    # -- pause, halt, abort -----------------------------------------------------------------
    Case(
        "a paused rollout observes but starts nothing and takes no one in",
        [kiosk("g0", "2.0"), kiosk("g1"), kiosk("new")],
        [t("g0", state="updating"), t("g1")],
        state="paused",
        states={"g0": "committed"},
    ),
    Case(
        "a halted rollout follows its kiosks back and starts nothing",
        [kiosk("g0"), kiosk("g1")],
        [t("g0", state="reverting"), t("g1")],
        state="halted",
        states={"g0": "rolled_back"},
    ),
    Case(
        "a halted rollout does not halt again",
        [kiosk("g0", "2.0"), kiosk("g1", "1.0")],
        [t("g0", state="committed"), t("g1", state="failed", reason="x")],
        state="halted",
    ),
    Case(
        "an aborted rollout changes nothing of its own",
        [kiosk("g0", "2.0"), kiosk("g1"), kiosk("new")],
        [t("g0", state="committed"), t("g1")],
        state="aborted",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_step(case: Case) -> None:
    steps = run(case)
    assert set(steps.desired) == case.desired
    assert len(steps.desired) == len(case.desired)  # each kiosk named once
    assert {d: v["state"] for d, v in steps.updates.items() if "state" in v} == case.states
    assert {j.device_id: j.wave for j in steps.joins} == case.joins
    if case.then is None:
        assert steps.rollout is None
    else:
        assert steps.rollout is not None
        assert (steps.rollout.state, steps.rollout.wave) == case.then
        assert case.why in (steps.rollout.halt_reason or "")
        assert steps.rollout.history[0] == {"at": "x", "what": "created by it"}
        assert steps.rollout.history[-1]["at"] == NOW.isoformat()


def test_a_start_records_what_the_kiosk_ran_before() -> None:
    steps = run(Case("", [kiosk("g0", "1.4"), kiosk("g1")], [t("g0"), t("g1", 1)]))
    assert steps.updates["g0"] == {
        "state": "updating",
        "previous": "1.4",
        "started_at": NOW,
        "reason": None,
    }


def test_the_planner_does_not_change_what_it_was_given() -> None:
    case = CASES[0]
    before = list(case.targets)
    run(case)
    run(case)
    assert case.targets == before


@pytest.mark.parametrize(
    ("waves", "online", "revoked", "expected"),
    [
        ([1, "10%", "100%"], "abcdefghij", "", [["a"], ["b"], list("cdefghij")]),
        (["50%", "100%"], "abc", "", [["a", "b"], ["c"]]),
        ([5, "100%"], "abc", "", [["a", "b", "c"]]),  # empty waves are dropped
        (["100%"], "ab", "b", [["a"]]),  # revoked kiosks never report: never chosen
        ([1, "100%"], "b", "", [["b"], ["a"]]),  # online kiosks first
    ],
)
def test_choose_puts_the_selection_in_waves(
    waves: list[int | str], online: str, revoked: str, expected: list[list[str]]
) -> None:
    names = sorted(set(online) | set("ab"))
    kiosks = [kiosk(n, online=n in online) for n in names]
    targets = choose(kiosks, Selector(), RolloutPlan(waves=waves), frozenset(revoked))
    got: dict[int, list[str]] = {}
    for x in targets:
        got.setdefault(x.wave, []).append(x.device_id)
        assert x.state == "pending"
    assert [got[w] for w in sorted(got)] == expected


def test_choose_refuses_an_empty_selection() -> None:
    with pytest.raises(RolloutError, match="matches no kiosk") as exc:
        choose([kiosk("g0")], Selector(sites=["nowhere"]), RolloutPlan(), frozenset())
    assert exc.value.status == 404


@pytest.mark.parametrize(
    ("state", "action", "then"),
    [
        ("running", "pause", "paused"),
        ("paused", "resume", "running"),
        ("running", "abort", "aborted"),
        ("paused", "abort", "aborted"),
        ("halted", "abort", "aborted"),
        ("paused", "pause", 409),
        ("halted", "resume", 409),
        ("running", "resume", 409),
        ("done", "abort", 409),
        ("aborted", "abort", 409),
    ],
)
def test_control(state: str, action: str, then: str | int) -> None:
    history = [{"at": "x", "what": "created by it"}]
    if isinstance(then, int):
        with pytest.raises(RolloutError) as exc:
            control(state, history, action, "it", NOW)
        assert exc.value.status == then and state in exc.value.detail
        return
    values = control(state, history, action, "it", NOW)
    assert values["state"] == then
    assert values["history"][-1] == {"at": NOW.isoformat(), "what": f"{action} by it"}
    assert ("halt_reason" in values) == (action == "resume")


def test_the_health_window_covers_every_window_a_look_compares() -> None:
    """The loader reads events from ``health_window``: it must reach back as far as the
    earliest 'before' window, for kiosks of the current wave on the new release only."""
    rollout = Rollout("r1", "2.0", Track("software"), Selector(), RolloutPlan(), "running", 1)
    targets = [
        t("old", 0, "committed", started_at=NOW - 60 * MIN),
        t("a", 1, "updating", started_at=NOW - 10 * MIN),
        t("b", 1, "committed", started_at=NOW - 30 * MIN),
        t("c", 1),
    ]
    window = health_window(rollout, targets, NOW)
    assert window is not None
    ids, since = window
    assert sorted(ids) == ["a", "b"] and since == NOW - 60 * MIN
    assert health_window(rollout, [t("c", 1)], NOW) is None
    paused = Rollout("r1", "2.0", Track("software"), Selector(), RolloutPlan(), "paused", 1)
    assert health_window(paused, targets, NOW) is None

"""Rollouts at central: waves, thresholds, the disruption budget, halts on failures and on
application health, kiosks that join, pause/resume/abort, and the refusals — on a real
database, with kiosks' reports written as the bridge writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from biblioedge.fleet.db import devices, events
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.rollouts import RolloutError, RolloutPlan, Rollouts, Selector


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def tick(self, s: float) -> None:
        self.t += timedelta(seconds=s)


@pytest.fixture
def fleet(tmp_path: Path) -> Any:
    repo = Repo(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    repo.migrate()
    clock = Clock()
    engine = Rollouts(repo, None, None, now=clock)
    yield repo, engine, clock
    repo.close()


def kiosk(
    repo: Repo, device_id: str, site: str, role: str = "gate", version: str = "1.0", **labels: str
) -> None:
    repo.register_device(device_id, site, role)
    report(repo, device_id, committed=version)
    if labels:
        repo.set_labels(device_id, labels)


def report(
    repo: Repo,
    device_id: str,
    *,
    committed: str,
    pending: str | None = None,
    phase: str = "idle",
    **extra: Any,
) -> None:
    doc = {
        "device_id": device_id,
        "software": committed,
        "update": {"phase": phase, "committed": committed, "pending": pending, **extra},
    }
    with repo.engine.begin() as conn:
        conn.execute(
            update(devices)
            .where(devices.c.device_id == device_id)
            .values(reported=doc, online=True)
        )


def step(engine: Rollouts, rollout_id: str) -> list[tuple[str, str | None]]:
    r = engine.get(rollout_id)
    assert r is not None
    return engine._step(r, engine.track(r["kind"], r["release"]))


def states(engine: Rollouts, rollout_id: str) -> dict[str, str]:
    r = engine.get(rollout_id)
    assert r is not None
    return {t["device_id"]: t["state"] for t in r["targets"]}


def test_waves_advance_on_commits_and_new_kiosks_join(fleet: Any) -> None:
    repo, engine, clock = fleet
    for i in range(10):
        kiosk(repo, f"g{i:02}", "tv-tinh" if i < 5 else "tv-huyen")
    r = engine.create("software", "2.0", Selector(), RolloutPlan(max_per_site=10), "it")
    assert [w["size"] for w in r["waves"]] == [1, 1, 8]  # one canary, 10 %, the rest
    started = step(engine, r["rollout_id"])
    assert len(started) == 1 and started[0][1] == "2.0"  # only the canary
    canary = started[0][0]
    report(repo, canary, committed="2.0")
    step(engine, r["rollout_id"])  # committed: wave 1 next
    assert engine.get(r["rollout_id"])["wave"] == 1
    second = step(engine, r["rollout_id"])
    assert len(second) == 1
    report(repo, second[0][0], committed="2.0")
    kiosk(repo, "g99", "tv-tinh")  # enrolled during the rollout
    step(engine, r["rollout_id"])
    rest = step(engine, r["rollout_id"])
    assert {d for d, _ in rest} == {f"g{i:02}" for i in range(10)} - {canary, second[0][0]} | {
        "g99"
    }
    for d, _ in rest:
        report(repo, d, committed="2.0")
    step(engine, r["rollout_id"])
    done = engine.get(r["rollout_id"])
    assert done["state"] == "done" and set(states(engine, r["rollout_id"]).values()) == {
        "committed"
    }


def test_a_failing_canary_halts_and_the_others_never_start(fleet: Any) -> None:
    repo, engine, clock = fleet
    for i in range(5):
        kiosk(repo, f"g{i}", "tv-tinh")
    r = engine.create("software", "2.0", Selector(), RolloutPlan(), "it")
    ((canary, _),) = step(engine, r["rollout_id"])
    # the kiosk rolled the release back by itself and says why
    report(
        repo,
        canary,
        committed="1.0",
        phase="failed",
        refused=["2.0"],
        last={
            "version": "2.0",
            "result": "rolled_back",
            "reason": "self-test failed: broker",
            "at": 0,
        },
    )
    back = step(engine, r["rollout_id"])
    got = engine.get(r["rollout_id"])
    assert got["state"] == "halted" and "self-test failed" in got["halt_reason"]
    assert back == []  # the canary is already back; nothing else was started
    assert [s for d, s in states(engine, r["rollout_id"]).items() if d != canary] == ["pending"] * 4
    assert step(engine, r["rollout_id"]) == []  # halted stays halted
    with pytest.raises(RolloutError) as exc:
        engine.control(r["rollout_id"], "resume", "it")
    assert exc.value.status == 409
    engine.control(r["rollout_id"], "abort", "it")
    assert engine.get(r["rollout_id"])["state"] == "aborted"


def test_halt_sends_a_wave_that_committed_back_to_its_previous_release(fleet: Any) -> None:
    repo, engine, clock = fleet
    for i in range(4):
        kiosk(repo, f"g{i}", "tv-tinh")
    plan = RolloutPlan(waves=["50%", "100%"], errors=0.4)
    r = engine.create("software", "2.0", Selector(), plan, "it")
    wave0 = [d for d, _ in step(engine, r["rollout_id"])]
    assert len(wave0) == 2
    report(repo, wave0[0], committed="2.0")
    report(
        repo,
        wave0[1],
        committed="1.0",
        phase="failed",
        reason="install_failed",
        wanted="2.0",
        detail="no space",
    )
    back = step(engine, r["rollout_id"])
    assert engine.get(r["rollout_id"])["state"] == "halted"
    assert back == [(wave0[0], "1.0")]  # the one that committed goes back
    report(repo, wave0[0], committed="1.0")
    step(engine, r["rollout_id"])
    assert states(engine, r["rollout_id"])[wave0[0]] == "rolled_back"


def test_application_health_halts_a_wave(fleet: Any) -> None:
    repo, engine, clock = fleet
    for i in range(3):
        kiosk(repo, f"g{i}", "tv-tinh")
    r = engine.create(
        "software", "2.0", Selector(), RolloutPlan(waves=[1, "100%"], success=1.0), "it"
    )
    ((canary, _),) = step(engine, r["rollout_id"])
    report(repo, canary, committed="2.0", pending="2.0", phase="trial")
    seq = iter(range(1000))

    def event(etype: str, at: datetime, **payload: Any) -> None:
        with repo.engine.begin() as conn:
            n = next(seq)
            conn.execute(
                insert(events).values(
                    event_id=f"e{n}",
                    device_id=canary,
                    site="tv-tinh",
                    type=etype,
                    seq=n,
                    occurred_at=at,
                    received_at=at,
                    payload=payload,
                )
            )

    before = clock() - timedelta(seconds=30)
    event("gate.decision", before, decision="grant", method="face")
    clock.tick(60)
    # on the new release, readers the gate knew are refused by face and come in by card
    for k in range(4):
        t = clock() - timedelta(seconds=50 - k * 10)
        event("gate.decision", t, decision="deny", method="face", reason="unknown_face")
        event("gate.decision", t + timedelta(seconds=5), decision="grant", method="card")
    step(engine, r["rollout_id"])
    got = engine.get(r["rollout_id"])
    assert got["state"] == "halted" and "false rejects" in got["halt_reason"]


def test_disruption_budget_per_site_and_per_entrance(fleet: Any) -> None:
    repo, engine, clock = fleet
    for i in range(6):
        kiosk(repo, f"s{i}", "tv-tinh", role="selfcheck")
    kiosk(repo, "north-1", "tv-tinh", entrance="north")
    kiosk(repo, "north-2", "tv-tinh", entrance="north")
    plan = RolloutPlan(waves=["100%"], max_per_site=3)
    r = engine.create("software", "2.0", Selector(), plan, "it")
    first = {d for d, _ in step(engine, r["rollout_id"])}
    assert len(first) == 3  # three of the branch at once
    for d in first:
        report(repo, d, committed="2.0")
    seen = set(first)
    for _ in range(6):
        step(engine, r["rollout_id"])
        now = {d for d, s in states(engine, r["rollout_id"]).items() if s == "updating"}
        assert not {"north-1", "north-2"} <= now  # never both gates of the entrance
        assert len(now) <= 3
        for d in now:
            report(repo, d, committed="2.0")
        seen |= now
    assert engine.get(r["rollout_id"])["state"] == "done"


def test_refusals(fleet: Any) -> None:
    repo, engine, clock = fleet
    kiosk(repo, "g1", "tv-tinh")
    with pytest.raises(RolloutError, match="matches no kiosk") as exc:
        engine.create("software", "2.0", Selector(sites=["nowhere"]), RolloutPlan(), "it")
    assert exc.value.status == 404
    engine.create("software", "2.0", Selector(), RolloutPlan(), "it")
    with pytest.raises(RolloutError, match="already in an active rollout") as exc:
        engine.create("software", "3.0", Selector(), RolloutPlan(), "it")
    assert exc.value.status == 409
    with pytest.raises(ValueError):
        RolloutPlan(waves=["0%"])
    assert RolloutPlan(waves=[1, "10%", "100%"]).sizes(200) == [1, 20, 179]
    assert RolloutPlan(waves=[1, "10%", "100%"]).sizes(1) == [1]


class Listed:
    """Central's release listing as the rollout engine reads it (path and signed custom)."""

    def __init__(self, *targets: tuple[str, dict[str, Any]]) -> None:
        from biblioedge.fleet.releases import Target

        self.targets = [Target(path, 1, "0" * 64, custom) for path, custom in targets]

    def list_targets(self) -> list[Any]:
        return self.targets


def model_report(repo: Repo, device_id: str, active: str, **update_doc: Any) -> None:
    doc = {
        "device_id": device_id,
        "software": "1.0",
        "models": {"embed": active},
        "model_update": {"phase": "idle", "pending": None, **update_doc},
    }
    with repo.engine.begin() as conn:
        conn.execute(update(devices).where(devices.c.device_id == device_id).values(reported=doc))


def test_a_model_rollout_names_the_model_per_task_and_reverts_to_the_one_before(
    tmp_path: Path,
) -> None:
    repo = Repo(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    repo.migrate()
    listed = Listed(
        (
            "models/arc/2/manifest.json",
            {"kind": "model", "name": "arc", "version": "2", "task": "embed"},
        ),
        ("config/tuning/1.json", {"kind": "config", "name": "tuning", "version": "1"}),
    )
    engine = Rollouts(repo, listed, None)  # type: ignore[arg-type]
    for i in range(4):
        kiosk(repo, f"g{i}", "tv-tinh")
        model_report(repo, f"g{i}", "arc@1")
    with pytest.raises(RolloutError) as refused:
        engine.create("model", "arc@9", Selector(), RolloutPlan(), "it")
    assert refused.value.status == 404
    r = engine.create("model", "arc@2", Selector(), RolloutPlan(waves=[1, 3]), "it")
    track = engine.track("model", "arc@2")
    assert track.task == "embed"
    ((canary, wanted),) = step(engine, r["rollout_id"])
    doc: dict[str, Any] = {"software": "1.0", "models": {"detect": "scrf@1"}}
    assert track.desire(doc, wanted) and doc["models"] == {"detect": "scrf@1", "embed": "arc@2"}
    model_report(repo, canary, "arc@2", pending="arc@2", phase="trial")  # on trial: not yet
    step(engine, r["rollout_id"])
    assert states(engine, r["rollout_id"])[canary] == "updating"
    model_report(repo, canary, "arc@2", committed="arc@2")
    step(engine, r["rollout_id"])
    second = step(engine, r["rollout_id"])
    assert len(second) == 3
    bad = second[0][0]  # the model went back by itself on one kiosk of the wave
    model_report(
        repo,
        bad,
        "arc@1",
        last={"version": "arc@2", "result": "rolled_back", "reason": "self-test failed", "at": 1},
    )
    reverts = step(engine, r["rollout_id"])
    assert engine.get(r["rollout_id"])["state"] == "halted"
    assert sorted(reverts) == sorted((d, "arc@1") for d, _ in second if d != bad)
    config = engine.create("config", "tuning@1", Selector(), RolloutPlan(), "it")
    ((first, ref),) = step(engine, config["rollout_id"])
    doc = {}
    assert engine.track("config", "tuning@1").desire(doc, ref) and doc == {
        "config_release": "tuning@1"
    }
    starts = {t["device_id"]: t["previous"] for t in engine.get(config["rollout_id"])["targets"]}
    assert starts[first] == "builtin"  # no document before: going back means none
    repo.close()

"""Face models and configuration documents on a kiosk: signed offline, served by central's TUF
repository over HTTP, verified, staged, switched, then committed or rolled back by the same
health gate as software."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import onnx_graphs as g
import pytest
from tuf_kit import TufServer, tuf_server

from biblioedge.agent.artifact_update import (
    ConfigTrack,
    ConfigUpdater,
    ModelTrack,
    ModelUpdater,
    TrackState,
)
from biblioedge.agent.config import AgentConfig, apply_tunables
from biblioedge.agent.release_client import ReleaseClient
from biblioedge.agent.selftest import RESTART_EXIT, ReleaseTrial, TrialSettings
from biblioedge.agent.update_loop import UpdateSettings
from biblioedge.cli.release import config_targets, model_targets
from biblioedge.models.engine import check_model
from biblioedge.models.manifest import Manifest
from biblioedge.models.store import ModelStore
from biblioedge.releases import ConfigRelease


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.restarts = 0

    async def note(self, etype: str, payload: dict[str, Any]) -> None:
        self.events.append((etype, payload))

    def restart(self) -> None:
        self.restarts += 1

    def types(self) -> list[str]:
        return [e for e, _ in self.events]


def publish_model(srv: TufServer, tmp: Path, version: int, **over: Any) -> Manifest:
    """A small real ONNX embedder with its manifest, signed and published."""
    blob = g.embedder(tmp / f"arc{version}.onnx", 128, seed=version)
    doc = g.manifest_for(
        blob,
        name="arc-test",
        task="embed",
        layout="arcface",
        input_size=(112, 112),
        normalization={"mean": 127.5, "std": 127.5, "rgb": True},
        embedding_size=128,
        threshold=0.3,
    )
    doc["version"] = str(version)
    doc.update(over)
    manifest = tmp / f"arc{version}.json"
    manifest.write_text(json.dumps(doc))
    srv.sign(model_targets(manifest, blob))
    return Manifest.model_validate(doc)


def client_for(srv: TufServer, tmp: Path) -> Any:
    root = srv.repo.root_bytes(1)
    made: list[ReleaseClient] = []

    def client() -> ReleaseClient:
        if not made:
            made.append(ReleaseClient(tmp / "tuf", srv.url, None, bootstrap=root))
        return made[0]

    return client


def models_kiosk(srv: TufServer, tmp: Path) -> tuple[ModelUpdater, ModelTrack, Recorder]:
    rec = Recorder()
    track = ModelTrack(TrackState(tmp / "updates" / "model.json"), ModelStore(tmp / "models"))
    updater = ModelUpdater(
        track,
        client_for(srv, tmp),
        UpdateSettings(arch="x86_64", role="gate", retry_s=0.1),
        rec.note,
        rec.restart,
        check=check_model,
    )
    return updater, track, rec


async def trial(
    track: Any, *, healthy: bool, soak_s: float = 0.2
) -> tuple[list[int], list[tuple[str, dict[str, Any]]]]:
    """The health gate at the next start, with a self-test that passes or fails."""
    events: list[tuple[str, dict[str, Any]]] = []
    exits: list[int] = []

    async def note(etype: str, payload: dict[str, object]) -> None:
        events.append((etype, dict(payload)))

    async def check() -> str | None:
        return None if healthy else "face engine not loaded"

    t = ReleaseTrial(
        None,
        TrialSettings("0.1.1", soak_s=soak_s, ready_timeout_s=0.3, poll_s=0.05),
        {"face engine": check},
        note,
        exits.append,
        lambda: 0,
        [track],
    )
    task = asyncio.create_task(t.run())
    for _ in range(100):
        await asyncio.sleep(0.05)
        if exits or any(e.startswith("device.update_") for e, _ in events):
            break
    task.cancel()
    return exits, events


async def test_a_model_is_fetched_checked_activated_and_committed_after_its_soak(
    tmp_path: Path,
) -> None:
    with tuf_server(tmp_path) as srv:
        m1 = publish_model(srv, tmp_path, 1)
        m2 = publish_model(srv, tmp_path, 2)
        updater, track, rec = models_kiosk(srv, tmp_path)
        updater.want({"embed": m1.ref})
        await updater.step()
        assert track.active() == {"embed": m1.ref} and rec.restarts == 1
        assert updater.report.pending == m1.ref and updater.report.total_bytes > 0
        exits, events = await trial(track, healthy=True)
        assert not exits and events[-1][0] == "device.update_committed"
        assert events[-1][1] == {"version": m1.ref, "reason": "", "kind": "model"}
        updater.want({"embed": m2.ref})
        await updater.step()
        assert track.active() == {"embed": m2.ref} and updater.report.committed == m1.ref
        assert (
            "device.update_installed",
            {"kind": "model", "version": m2.ref, "task": "embed"},
        ) in (rec.events)
        # the engine now loads the new model from the store
        from biblioedge.models.engine import FaceEngine

        assert FaceEngine(track.store).embedder.name == m2.ref


async def test_a_model_that_fails_the_self_test_goes_back_and_is_not_tried_again(
    tmp_path: Path,
) -> None:
    with tuf_server(tmp_path) as srv:
        m1 = publish_model(srv, tmp_path, 1)
        m2 = publish_model(srv, tmp_path, 2)
        updater, track, rec = models_kiosk(srv, tmp_path)
        updater.want({"embed": m1.ref})
        await updater.step()
        await trial(track, healthy=True)
        updater.want({"embed": m2.ref})
        await updater.step()
        exits, events = await trial(track, healthy=False)
        assert exits == [RESTART_EXIT]
        assert track.active() == {"embed": m1.ref}  # the model store went back by itself
        _, after = await trial(track, healthy=True)  # the next start reports how it ended
        assert (
            after[0][0] == "device.update_rolled_back"
            and "self-test failed" in (after[0][1]["reason"])
        )
        await updater.step()
        assert updater.report.phase == "failed" and updater.report.reason == "rolled_back"
        assert m2.ref in updater.report.refused and rec.restarts == 2  # not installed again


async def test_a_model_that_never_reaches_the_self_test_is_rolled_back_before_start(
    tmp_path: Path,
) -> None:
    with tuf_server(tmp_path) as srv:
        m1 = publish_model(srv, tmp_path, 1)
        updater, track, _ = models_kiosk(srv, tmp_path)
        updater.want({"embed": m1.ref})
        await updater.step()
        assert track.before_start(max_attempts=2) is None
        assert track.before_start(max_attempts=2) is None
        reason = track.before_start(max_attempts=2)  # a third start: it died twice
        assert reason == "did not start 2 times" and track.active() == {}  # built-in dlib
        assert track.state.load()["refused"] == [m1.ref]


async def test_bad_model_releases_are_refused_with_a_reason_and_nothing_switches(
    tmp_path: Path,
) -> None:
    with tuf_server(tmp_path) as srv:
        m1 = publish_model(srv, tmp_path, 1)
        updater, track, rec = models_kiosk(srv, tmp_path)
        updater.want({"embed": m1.ref})
        await updater.step()
        await trial(track, healthy=True)
        # a manifest for another task than central asked for
        updater.want({"detect": m1.ref})
        await updater.step()
        assert updater.report.reason == "bad_release" and "not detect" in (
            updater.report.detail or ""
        )
        # a model whose outputs do not fit its manifest: refused at activation by the load check
        bad = publish_model(srv, tmp_path, 3, embedding_size=256)
        updater.want({"embed": bad.ref})
        updater.wake()
        await updater.step()
        assert updater.report.reason == "bad_model", updater.report
        # an unknown release
        updater.want({"embed": "arc-test@9"})
        await updater.step()
        assert updater.report.reason == "unknown_release"
        assert track.active() == {"embed": m1.ref} and rec.restarts == 1
        assert track.state.pending() is None
        failed = [p for e, p in rec.events if e == "device.update_failed"]
        assert [p["reason"] for p in failed] == ["bad_release", "bad_model", "unknown_release"]


async def test_a_tampered_model_file_is_refused(tmp_path: Path) -> None:
    with tuf_server(tmp_path) as srv:
        m1 = publish_model(srv, tmp_path, 1)
        files = list((srv.repo.targets_dir / "models" / "arc-test" / "1").rglob("*model.bin"))
        assert files
        for f in files:
            f.chmod(0o644)
            f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
        updater, track, _ = models_kiosk(srv, tmp_path)
        updater.want({"embed": m1.ref})
        await updater.step()
        assert updater.report.reason == "tampered" and track.active() == {}


def config_kiosk(
    srv: TufServer, tmp: Path
) -> tuple[ConfigUpdater, ConfigTrack, Recorder, AgentConfig]:
    rec = Recorder()
    cfg = AgentConfig.model_validate(
        {"device_id": "g1", "site": "tv-tinh", "role": "gate", "data_dir": str(tmp / "data")}
    )
    track = ConfigTrack(TrackState(tmp / "updates" / "config.json"), tmp / "updates" / "config")
    updater = ConfigUpdater(
        track,
        client_for(srv, tmp),
        UpdateSettings(arch="x86_64", role="gate", retry_s=0.1),
        rec.note,
        rec.restart,
        lambda doc: apply_tunables(cfg, doc.config) and None,
    )
    return updater, track, rec, cfg


def publish_config(srv: TufServer, tmp: Path, version: str, config: dict[str, Any]) -> str:
    doc = ConfigRelease(name="gate-tuning", version=version, config=config)
    path = tmp / f"cfg-{version}.json"
    path.write_text(doc.model_dump_json())
    srv.sign(config_targets(path))
    return f"gate-tuning@{version}"


async def test_a_configuration_document_applies_at_the_next_start_and_goes_back_if_unhealthy(
    tmp_path: Path,
) -> None:
    with tuf_server(tmp_path) as srv:
        tunable = publish_config(srv, tmp_path, "1", {"log": {"level": "DEBUG"}})
        second = publish_config(srv, tmp_path, "2", {"log": {"level": "WARNING"}})
        updater, track, rec, cfg = config_kiosk(srv, tmp_path)
        updater.want(tunable)
        await updater.step()
        assert rec.restarts == 1 and track.effective() == tunable
        doc = track.document(track.effective())
        assert doc is not None and apply_tunables(cfg, doc.config).log.level == "DEBUG"
        _, events = await trial(track, healthy=True)
        assert events[-1] == (
            "device.update_committed",
            {"version": tunable, "reason": "", "kind": "config"},
        )
        updater.want(second)
        await updater.step()
        assert track.effective() == second
        exits, _ = await trial(track, healthy=False)
        assert exits == [RESTART_EXIT] and track.effective() == tunable  # the previous applies
        await updater.step()
        assert updater.report.reason == "rolled_back" and rec.restarts == 2


async def test_a_document_with_settings_that_are_not_tunable_is_refused(tmp_path: Path) -> None:
    with tuf_server(tmp_path) as srv:
        ref = publish_config(srv, tmp_path, "1", {"security": {"central_url": "https://evil"}})
        updater, track, rec, _ = config_kiosk(srv, tmp_path)
        updater.want(ref)
        await updater.step()
        assert updater.report.reason == "bad_config" and "not tunable" in (
            updater.report.detail or ""
        )
        assert track.effective() is None and rec.restarts == 0
        assert not list(track.folder.glob("*.json"))


@pytest.mark.parametrize("name", ["../x@1", "a@", "@1", "a@b@c"])
def test_release_names_that_are_not_name_at_version_are_refused(name: str) -> None:
    from biblioedge.protocol import DesiredState

    with pytest.raises(ValueError):
        DesiredState(version=1, models={"embed": name})
    with pytest.raises(ValueError):
        DesiredState(version=1, config_release=name)

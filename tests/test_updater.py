"""The kiosk's update logic end to end on one machine: real releases signed offline, served
by central's TUF repository over HTTP, verified and installed into a temporary prefix, then
the health gate that commits a release or rolls it back."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tuf_kit import TufServer, tuf_server

from biblioedge.agent.release_client import ReleaseClient
from biblioedge.agent.selftest import RESTART_EXIT, ReleaseTrial, TrialSettings
from biblioedge.agent.update_loop import UpdateSettings
from biblioedge.agent.updater import Updater
from biblioedge.agent.window import in_window, valid_window
from biblioedge.cli.release import software_targets
from biblioedge.provisioning.bootguard import Layout
from biblioedge.provisioning.release_build import native_arch
from biblioedge.provisioning.release_install import build_release
from biblioedge.releases import SoftwareRelease


class Kiosk:
    """One kiosk's updater with its events and restart requests recorded."""

    def __init__(self, srv: TufServer, tmp: Path, releases: dict[str, Path], **settings: Any):
        self.layout = Layout(tmp / "prefix")
        first = releases["0.1.1"]
        rel = SoftwareRelease.model_validate_json((first / "release.json").read_text())
        wheels = [first / "wheels" / f for f in rel.files(native_arch(), "gate")]
        build_release(self.layout, "0.1.1", wheels, first / "wheels" / rel.pip)
        self.layout.adopt("0.1.1")
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.restarts = 0
        root = srv.repo.root_bytes(1)

        def client() -> ReleaseClient:
            return ReleaseClient(tmp / "tuf", srv.url, None, bootstrap=root)

        self.updater = Updater(
            self.layout,
            client,
            UpdateSettings(arch=native_arch(), role="gate", retry_s=0.1, **settings),
            self.note,
            self.restart,
        )

    async def note(self, etype: str, payload: dict[str, Any]) -> None:
        self.events.append((etype, payload))

    def restart(self) -> None:
        self.restarts += 1

    def running(self) -> str:
        out = subprocess.run(
            [
                str(self.layout.current / "bin" / "python"),
                "-c",
                "import biblioedge; print(biblioedge.__version__)",
            ],
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() or out.stderr.strip().splitlines()[-1]


def publish(srv: TufServer, releases: dict[str, Path], *versions: str) -> None:
    for v in versions:
        srv.sign(software_targets(releases[v]))


async def test_kiosk_installs_the_wanted_release_and_restarts_into_it(
    tmp_path: Path, built_releases: dict[str, Path]
) -> None:
    with tuf_server(tmp_path) as srv:
        publish(srv, built_releases, "0.1.2")
        kiosk = Kiosk(srv, tmp_path, built_releases)
        kiosk.updater.want("0.1.2")
        await kiosk.updater.step()
        assert kiosk.restarts == 1
        assert kiosk.layout.state()["pending"] == "0.1.2"
        assert kiosk.running() == "0.1.2"
        assert [e for e, _ in kiosk.events] == ["device.update_installed"]
        report = kiosk.updater.report
        assert report.phase == "restarting" and report.total_bytes > 0
        assert report.done_bytes == report.total_bytes
        # the wheels it fetched are kept for the next release; release.json is in the release
        assert (kiosk.layout.release_dir("0.1.2") / "release.json").exists()
        assert kiosk.updater.bytes_downloaded > 0
        # after the restart, on trial: the updater waits for the health gate
        await kiosk.updater.step()
        assert kiosk.updater.report.phase == "trial"


async def test_no_update_while_a_reader_is_mid_transaction_or_outside_the_window(
    tmp_path: Path, built_releases: dict[str, Path]
) -> None:
    with tuf_server(tmp_path) as srv:
        publish(srv, built_releases, "0.1.2")
        busy = [True]
        kiosk = Kiosk(
            srv,
            tmp_path,
            built_releases,
            busy=lambda: busy[0],
            window=lambda: "22:00-06:00",
            now=lambda: (
                datetime(2026, 12, 2, 23, 30) if not busy[0] else datetime(2026, 12, 2, 12, 0)
            ),
        )
        kiosk.updater.want("0.1.2")
        await kiosk.updater.step()
        assert (kiosk.updater.report.phase, kiosk.updater.report.reason) == ("waiting", "busy")
        busy[0] = False  # the reader walked away; 23:30 is inside the window
        await kiosk.updater.step()
        assert kiosk.restarts == 1
    assert in_window("22:00-06:00", datetime(2026, 1, 1, 5, 59))
    assert not in_window("22:00-06:00", datetime(2026, 1, 1, 6, 0))
    assert in_window("01:00-03:00", datetime(2026, 1, 1, 2, 0))
    with pytest.raises(ValueError):
        valid_window("25:00-06:00")


async def test_a_bad_release_is_refused_with_its_reason_and_nothing_half_installed(
    tmp_path: Path, built_releases: dict[str, Path]
) -> None:
    with tuf_server(tmp_path) as srv:
        publish(srv, built_releases, "0.1.2")
        kiosk = Kiosk(srv, tmp_path, built_releases)
        kiosk.updater.want("9.9.9")  # never signed
        await kiosk.updater.step()
        assert (kiosk.updater.report.phase, kiosk.updater.report.reason) == (
            "failed",
            "unknown_release",
        )
        assert kiosk.events[-1][0] == "device.update_failed"
        # a tampered wheel on central's disk
        for path in (srv.repo.targets_dir / "wheels").glob("*biblioedge-0.1.2-*"):
            path.chmod(0o644)
            path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
        kiosk.updater.want("0.1.2")
        await kiosk.updater.step()
        assert kiosk.updater.report.reason == "tampered"
        assert not (kiosk.layout.releases / "0.1.2").exists()
        assert kiosk.layout.current_version() == "0.1.1" and kiosk.restarts == 0


async def trial(
    layout: Layout, version: str, healthy: bool, soak_s: float = 0.3
) -> tuple[ReleaseTrial, list[Any], list[int]]:
    events: list[Any] = []
    exits: list[int] = []

    async def note(etype: str, payload: dict[str, Any]) -> None:
        events.append((etype, payload))

    async def broker() -> str | None:
        return None if healthy else "not connected"

    t = ReleaseTrial(
        layout,
        TrialSettings(version, soak_s=soak_s, ready_timeout_s=0.5, poll_s=0.05),
        {"broker": broker},
        note,
        exits.append,
        lambda: 0,
    )
    task = asyncio.create_task(t.run())
    for _ in range(100):
        await asyncio.sleep(0.05)
        if exits or (t.ready and layout.state()["pending"] is None and events):
            break
    task.cancel()
    return t, events, exits


async def test_health_gate_commits_after_the_soak_or_rolls_back(
    tmp_path: Path, built_releases: dict[str, Path]
) -> None:
    with tuf_server(tmp_path) as srv:
        publish(srv, built_releases, "0.1.2", "0.1.3")
        kiosk = Kiosk(srv, tmp_path, built_releases)
        kiosk.updater.want("0.1.2")
        await kiosk.updater.step()
        t, events, exits = await trial(kiosk.layout, "0.1.2", healthy=True)
        assert t.ready and exits == []
        assert kiosk.layout.state()["committed"] == "0.1.2"
        assert events == [("device.update_committed", {"version": "0.1.2", "reason": ""})]
        # 0.1.3 installs, but its self-test fails: rolled back, exit for systemd to restart
        kiosk.updater.want("0.1.3")
        await kiosk.updater.step()
        assert kiosk.layout.current_version() == "0.1.3"
        t, events, exits = await trial(kiosk.layout, "0.1.3", healthy=False)
        assert exits == [RESTART_EXIT]
        assert kiosk.layout.current_version() == "0.1.2"
        state = kiosk.layout.state()
        assert "0.1.3" in state["refused"] and "self-test failed" in state["outcome"]["reason"]
        # the previous release, started again, reports the rollback; the updater does not retry
        _, events, _ = await trial(kiosk.layout, "0.1.2", healthy=True, soak_s=0)
        assert events[0][0] == "device.update_rolled_back"
        await kiosk.updater.step()
        assert (kiosk.updater.report.phase, kiosk.updater.report.reason) == (
            "failed",
            "rolled_back",
        )
        assert kiosk.running() == "0.1.2"

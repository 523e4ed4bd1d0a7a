"""Many simulated kiosks in one process, each with the real update path, for the demo's fleet
and ``bench rollout``.

Each simulated kiosk is enrolled through the real path (its own key and certificate), syncs
over its own mutual-TLS MQTT connection with the real ``Sync`` (signed desired state in,
state reports and events out, through its own SQLite outbox), and updates with the real
``Updater`` into its own install prefix: TUF verification against central over HTTPS, wheels
downloaded, the release's venv built with pip, the ``current`` switch, the boot guard, and the
health gate (``ReleaseTrial``) that commits or rolls back.

What is simulated is only the process restart: where systemd would start the agent again,
the kiosk runs the boot guard, then asks the release's own interpreter to import biblioedge
and say its version, as the agent's first step would. A release that dies at import fails
there, start after start, until the boot guard rolls it back.

The first release of every kiosk is copied from one prepared venv, to keep setting up 200
kiosks short; every update after that is installed for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biblioedge.agent.config import AgentConfig, load_config
from biblioedge.agent.metrics import AgentMetrics
from biblioedge.agent.release_client import ReleaseClient
from biblioedge.agent.selftest import ReleaseTrial, TrialSettings
from biblioedge.agent.store import AsyncStore, Store
from biblioedge.agent.sync import Sync
from biblioedge.agent.update_loop import UpdateSettings
from biblioedge.agent.updater import Updater
from biblioedge.protocol import DesiredState, ReportedState, utc_now
from biblioedge.provisioning.bootguard import Layout
from biblioedge.provisioning.release_build import native_arch

log = logging.getLogger("biblioedge.sim.fleet")


class _Ctx:
    def heartbeat(self) -> None:
        pass


@dataclass
class SimSettings:
    soak_s: float = 3.0
    ready_timeout_s: float = 20.0
    max_attempts: int = 3
    retry_s: float = 2.0
    restart_s: float = 0.2
    #: one install per core of this machine at a time: real kiosks install on their own CPU,
    #: here two hundred share two cores, and unbounded they would starve central and broker
    install_slots: int = max(1, os.cpu_count() or 1)


class SimKiosk:
    def __init__(
        self,
        root: Path,
        device_id: str,
        site: str,
        role: str,
        settings: SimSettings,
        slots: asyncio.Semaphore | None = None,
    ):
        self.root = root
        self.device_id = device_id
        self.site = site
        self.role = role
        self.settings = settings
        self.slots = slots
        self.layout = Layout(root / "prefix", settings.max_attempts)
        self.config: AgentConfig | None = None
        self.running: str | None = None
        self.wanted: str | None = None
        self.floor: str | None = None
        self.desired_version = 0
        self.starts = 0
        self.failed_starts = 0
        self.updater: Updater | None = None
        self.sync: Sync | None = None
        self.store: AsyncStore | None = None
        self._restart = asyncio.Event()
        self.history: list[tuple[float, str]] = []  # (time, version) each start that ran
        self.failed_at: list[float] = []  # each start that died before it could run
        self.back_at: float | None = None  # the first start that ran after one that died
        self._client: ReleaseClient | None = None
        self._bytes_before = 0  # downloaded by the updaters of earlier starts

    # -- setup -------------------------------------------------------------------------------

    def enroll(self, central_url: str, token: str) -> None:
        from biblioedge.provisioning.enroll import enroll

        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "identity" / "device.crt").exists():
            enroll(central_url, token, self.root, self.root / "agent.toml")
        self.config = load_config(
            self.root / "agent.toml",
            environ={},
            overrides={"metrics": {"enabled": False}, "sync": {"state_interval_s": 5.0}},
        )

    def install_first(self, template: Path, version: str) -> None:
        """The first release, copied from a prepared venv (setup, not what is measured)."""
        if self.layout.current_version() is not None:
            return
        target = self.layout.release_dir(version)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(template, target, symlinks=True)
        self.layout.adopt(version)

    # -- the kiosk ---------------------------------------------------------------------------

    def state(self) -> ReportedState:
        assert self.config is not None
        return ReportedState(
            device_id=self.device_id,
            site=self.site,
            role=self.role,  # type: ignore[arg-type]
            online=True,
            software=self.running or "",
            desired_version=self.desired_version,
            update=None if self.updater is None else self.updater.report,
            reported_at=utc_now(),
        )

    async def on_desired(self, desired: DesiredState) -> None:
        if desired.version <= self.desired_version:
            return
        self.desired_version = desired.version
        self.wanted = desired.software
        self.floor = desired.software_floor
        if self.updater is not None:
            self.updater.want(desired.software, desired.software_floor)
        if self.sync is not None:
            self.sync.state_changed()

    async def note(self, etype: str, payload: dict[str, Any]) -> None:
        assert self.store is not None and self.config is not None
        await self.store.call(
            self.store.store.append,
            [(etype, payload)],
            device_id=self.device_id,
            site=self.site,
        )
        if self.sync is not None:
            self.sync.wake()

    def _release_client(self) -> ReleaseClient:
        assert self.config is not None
        ca = self.root / "identity" / "ca.crt"
        context = ssl.create_default_context(cafile=ca)
        central = self.config.security.central_url or ""
        return ReleaseClient(self.root / "tuf", central, context)

    async def probe(self) -> str | None:
        """What a start of ``current`` would do first: import biblioedge, say the version."""
        python = self.layout.current / "bin" / "python"
        proc = await asyncio.create_subprocess_exec(
            str(python),
            "-c",
            "import biblioedge; print(biblioedge.__version__)",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        return (out.decode().strip() or None) if proc.returncode == 0 else None

    async def run(self) -> None:
        assert self.config is not None
        self.store = AsyncStore(Store(self.root / "agent.sqlite3"))
        metrics = AgentMetrics()
        cfg = self.config
        self.sync = Sync(lambda: cfg, self.store, metrics, self.state, self.on_desired)
        sync_task = asyncio.create_task(self.sync.run(_Ctx()))  # type: ignore[arg-type]
        try:
            while True:
                await self._one_start()
        finally:
            sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sync_task
            if self._client is not None:
                self._client.close()
            self.store.close()

    async def _one_start(self) -> None:
        """One start as systemd makes it: boot guard, then the release, until it exits."""
        await asyncio.to_thread(self.layout.before_start)
        self.starts += 1
        version = await self.probe()
        if version is None:  # died at import: Restart=always starts it again
            self.failed_starts += 1
            self.failed_at.append(time.time())
            await asyncio.sleep(self.settings.restart_s)
            return
        self.running = version
        self.history.append((time.time(), version))
        if self.failed_at and self.back_at is None:
            self.back_at = time.time()
        self._restart.clear()
        s = self.settings

        async def release_ok() -> str | None:
            return None if await self.probe() == version else "the release does not start"

        async def broker() -> str | None:
            assert self.sync is not None
            return None if self.sync.status.connected else "not connected"

        trial = ReleaseTrial(
            self.layout,
            TrialSettings(version, soak_s=s.soak_s, ready_timeout_s=s.ready_timeout_s, poll_s=0.2),
            {"release": release_ok, "broker": broker},
            self.note,
            lambda _code: self._restart.set(),
            lambda: 0,
        )
        if self.updater is not None:
            self._bytes_before += self.updater.bytes_downloaded
        self.updater = Updater(
            self.layout,
            self._client_once,
            UpdateSettings(
                arch=native_arch(),
                role=self.role,
                retry_s=s.retry_s,
                compile_bytecode=False,
                install_slots=self.slots,
            ),
            self.note,
            self._restart.set,
            self.sync.state_changed if self.sync else (lambda: None),
        )
        self.updater.want(self.wanted, self.floor)
        if self.sync is not None:
            self.sync.state_changed()
        tasks = [asyncio.create_task(trial.run()), asyncio.create_task(self.updater.run())]
        try:
            await self._restart.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(s.restart_s)

    def bytes_downloaded(self) -> int:
        return self._bytes_before + (self.updater.bytes_downloaded if self.updater else 0)

    def _client_once(self) -> ReleaseClient:
        if self._client is None:
            self._client = self._release_client()
        return self._client


class SimFleet:
    """Enrolls and runs ``SimKiosk``s; ``token`` makes a one-time enrollment token."""

    def __init__(self, root: Path, central_url: str, token: Callable[[str, str, str], str]):
        self.root = root
        self.central_url = central_url
        self.token = token
        self.kiosks: list[SimKiosk] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._slots: asyncio.Semaphore | None = None

    def add(
        self, device_id: str, site: str, role: str, settings: SimSettings | None = None
    ) -> SimKiosk:
        settings = settings or SimSettings()
        if self._slots is None:
            self._slots = asyncio.Semaphore(settings.install_slots)
        kiosk = SimKiosk(self.root / device_id, device_id, site, role, settings, self._slots)
        kiosk.enroll(self.central_url, self.token(device_id, site, role))
        self.kiosks.append(kiosk)
        return kiosk

    def start(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        # every kiosk's blocking steps (TUF, layout) go through the default executor: give
        # it room, or a few long installs would hold everyone else's small steps
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=64, thread_name_prefix="sim")
        )
        for k in self.kiosks:
            self._tasks.append(asyncio.create_task(k.run(), name=f"sim:{k.device_id}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def versions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.kiosks:
            key = k.layout.state()["committed"] or "?"
            out[key] = out.get(key, 0) + 1
        return out


def prepare_first_release(release_dir: Path, into: Path, role: str = "gate") -> tuple[Path, str]:
    """Build the template venv of a ``release build`` directory once (for install_first)."""
    from biblioedge.provisioning.release_install import build_release
    from biblioedge.releases import SoftwareRelease

    release = SoftwareRelease.model_validate_json((release_dir / "release.json").read_text())
    layout = Layout(into)
    wheels = [release_dir / "wheels" / f for f in release.files(native_arch(), role)]
    build_release(layout, release.version, wheels, release_dir / "wheels" / release.pip)
    return layout.release_dir(release.version), release.version

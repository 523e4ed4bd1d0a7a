"""The health gate of a release: a real self-test before READY, a soak before commit.

At every start the agent runs its self-test: the store opens and answers, the broker is
connected, the role's components are up (the gate's camera and relay, the self-check's reader
and library system, the desk's card reader), and the face engine is loaded where the role has
one. Only then does it tell systemd ``READY=1``.

When the running release is on trial (``current`` was just switched to it), passing is not
enough: it must stay healthy for ``soak_s`` with no component crashing, and is committed only
then. If the self-test fails or does not pass within ``ready_timeout_s``, or a component
crashes during the soak, the release is rolled back at once with that reason and the agent
exits so that systemd starts the previous one. A release that dies before getting here is
rolled back by the boot guard. The next start reports how the trial ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from biblioedge.agent.store import AsyncStore, Store
from biblioedge.provisioning.bootguard import Layout

if TYPE_CHECKING:
    from biblioedge.agent.role import Role

log = logging.getLogger("biblioedge.agent.selftest")

Check = Callable[[], Awaitable[str | None]]  # None when healthy, else what is wrong


class Track(Protocol):
    """A kind of release that can be on trial: a model, a configuration document."""

    kind: str

    def on_trial(self) -> bool: ...
    def commit(self) -> bool: ...
    def roll_back(self, reason: str) -> None: ...
    def take_outcome(self) -> dict[str, Any] | None: ...


class SoftwareTrack:
    """The running software release, on trial when ``current`` was just switched to it."""

    kind = "software"

    def __init__(self, layout: Layout, version: str) -> None:
        self.layout = layout
        self.version = version

    def on_trial(self) -> bool:
        state = self.layout.state()
        return bool(state["pending"] == self.version == self.layout.current_version())

    def commit(self) -> bool:
        return self.layout.commit(self.version)

    def roll_back(self, reason: str) -> None:
        self.layout.roll_back(reason)

    def take_outcome(self) -> dict[str, Any] | None:
        return self.layout.take_outcome()


Note = Callable[[str, dict[str, object]], Awaitable[None]]
RESTART_EXIT = 75  # the unit's RestartForceExitStatus


def sd_notify(message: str) -> bool:
    """systemd's notify protocol, without a library: one datagram to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        s.sendall(message.encode())
        return True
    return False


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None


@dataclass
class TrialSettings:
    version: str
    soak_s: float = 600.0
    ready_timeout_s: float = 120.0
    poll_s: float = 0.5


class ReleaseTrial:
    """Supervised component: self-test, READY, watchdog, and the commit or the rollback."""

    name = "release"

    def __init__(
        self,
        layout: Layout | None,
        settings: TrialSettings,
        checks: dict[str, Check],
        note: Note,
        exit_for_restart: Callable[[int], None],
        crashes: Callable[[], int],
        tracks: Sequence[Track] = (),
    ) -> None:
        self.layout = layout
        software = [SoftwareTrack(layout, settings.version)] if layout is not None else []
        self.tracks: list[Track] = [*software, *tracks]
        self.settings = settings
        self.checks = checks
        self.note = note
        self.exit_for_restart = exit_for_restart
        self.crashes = crashes
        self.ready = False
        self.problem: str | None = "self-test not run yet"

    async def self_test(self) -> str | None:
        for name, check in self.checks.items():
            try:
                problem = await check()
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is not None:
                return f"{name}: {problem}"
        return None

    def on_trial(self) -> list[Track]:
        return [t for t in self.tracks if t.on_trial()]

    async def report_outcome(self) -> None:
        for track in self.tracks:
            outcome = await asyncio.to_thread(track.take_outcome)
            if outcome is None:
                continue
            etype = (
                "device.update_committed"
                if outcome["result"] == "committed"
                else "device.update_rolled_back"
            )
            payload = {"version": outcome["version"], "reason": outcome["reason"]}
            if track.kind != "software":
                payload["kind"] = track.kind
            await self.note(etype, payload)

    async def run(self, ctx: object = None) -> None:
        await self.report_outcome()  # how the last trial ended, from whichever side of it
        trial = self.on_trial()
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while True:
            self._beat(ctx)
            self.problem = await self.self_test()
            if self.problem is None or time.monotonic() > deadline:
                break
            await asyncio.sleep(self.settings.poll_s)
        if self.problem is not None:
            if trial:
                await self._roll_back(trial, f"self-test failed: {self.problem}")
                return
            log.warning("self-test: %s (running committed release anyway)", self.problem)
        self.ready = True
        sd_notify(f"READY=1\nSTATUS=self-test {'passed' if self.problem is None else 'failed'}")
        log.info("self-test passed%s", " (release on trial)" if trial else "")
        crashes = self.crashes()
        soak_end = time.monotonic() + self.settings.soak_s
        beat = watchdog_interval() or 5.0
        while True:
            self._beat(ctx)
            sd_notify("WATCHDOG=1")
            if trial and self.crashes() > crashes:
                await self._roll_back(trial, "a component crashed during the soak time")
                return
            if trial and time.monotonic() >= soak_end:
                problem = await self.self_test()
                if problem is not None:
                    await self._roll_back(trial, f"unhealthy at the end of the soak: {problem}")
                    return
                for track in trial:
                    if await asyncio.to_thread(track.commit):
                        log.info("%s release on trial committed", track.kind)
                await self.report_outcome()
                trial = []
            await asyncio.sleep(min(beat, self.settings.poll_s * 4))

    def _beat(self, ctx: object) -> None:
        heartbeat = getattr(ctx, "heartbeat", None)
        if heartbeat is not None:
            heartbeat()

    async def _roll_back(self, trial: list[Track], reason: str) -> None:
        for track in trial:
            log.error("%s release on trial fails: %s; rolling back", track.kind, reason)
            await asyncio.to_thread(track.roll_back, reason)
        sd_notify(f"STATUS=rolled back: {reason[:200]}")
        self.exit_for_restart(RESTART_EXIT)


def kiosk_checks(
    store: AsyncStore,
    connected: Callable[[], bool],
    health: Callable[[], Mapping[str, str]],
    roles: Callable[[], Sequence[Role]],
) -> dict[str, Check]:
    """The self-test of a running kiosk: the store answers, the broker is connected, each
    role is up under the supervisor (``health``) with its drivers, and its face engine is
    loaded where it has one."""

    async def store_answers() -> str | None:
        await store.call(Store.outbox_depth, store.store)
        return None

    async def broker() -> str | None:
        return None if connected() else "not connected"

    async def role() -> str | None:
        for r in roles():  # none: a role with no hardware configured (simulated kiosks)
            state = health().get(r.name)
            if state != "up":
                return f"{r.name} is {state or 'not started'}"
            if problem := r.health().get("role"):
                return problem
        return None

    async def face() -> str | None:
        return next((p for r in roles() if (p := r.health().get("face engine"))), None)

    return {"store": store_answers, "broker": broker, "role": role, "face engine": face}

"""Kiosks reduced to their sync, many in one process: each enrolled through the product's
own path (its own key, CSR and certificate from central's CA, its own entry in the broker's
ACL), each with its own SQLite outbox and the agent's real ``Sync`` over its own mutual-TLS
MQTT connection. What is absent is the rest of a kiosk (camera, relay, screen, updater):
for ``bench continuity --phase reconnect`` and the tests of central at a fleet's scale.
(``sim.fleet`` is the heavier kiosk with the real update path, for ``bench rollout``.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from biblioedge import __version__
from biblioedge.agent.config import AgentConfig, load_config
from biblioedge.agent.metrics import AgentMetrics
from biblioedge.agent.store import AsyncStore, Store
from biblioedge.agent.sync import Sync
from biblioedge.protocol import DesiredState, ReportedState, utc_now
from biblioedge.sim.roles import RoleSimulator


class _Ctx:
    def heartbeat(self) -> None:
        pass


class SyncKiosk:
    """One simulated kiosk: its identity on disk, its outbox, the agent's real ``Sync``."""

    def __init__(self, root: Path, device_id: str, site: str, role: str) -> None:
        self.root = root
        self.device_id = device_id
        self.site = site
        self.role = role
        self.config: AgentConfig | None = None
        self.store: AsyncStore | None = None
        self.sync: Sync | None = None
        self.task: asyncio.Task[None] | None = None
        #: the seqs of the last ``queue``
        self.first: int = 0
        self.last: int = 0

    def enroll(
        self,
        central_url: str,
        token: Callable[[str, str, str], str],
        sync: dict[str, Any] | None = None,
        broker_url: str | None = None,
    ) -> None:
        """Enroll (once: an enrolled kiosk keeps its identity) with a one-time token from
        ``token(device_id, site, role)``; ``sync`` overrides the agent's [sync] settings,
        ``broker_url`` the broker enrollment named (a bench's broker on a new port)."""
        from biblioedge.provisioning.enroll import enroll

        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "identity" / "device.crt").exists():
            secret = token(self.device_id, self.site, self.role)
            enroll(central_url, secret, self.root, self.root / "agent.toml")
        self.config = load_config(
            self.root / "agent.toml",
            environ={},
            overrides={
                "metrics": {"enabled": False},
                # the kiosks re-report state only when it changes (the reconnect itself
                # reports it): a thousand periodic reports would be noise in the measure
                # and look at their outboxes when woken (``queue`` wakes them), not every
                # half second: a real kiosk polls on its own CPU, here a thousand kiosks polling
                # twice a second would take the CPU central is measured on (2 s still checks the
                # ack timeout often enough)
                "sync": {"state_interval_s": 3600.0, "idle_poll_s": 2.0, **(sync or {})},
                **({"broker": {"url": broker_url}} if broker_url else {}),
            },
        )

    def state(self) -> ReportedState:
        return ReportedState(
            device_id=self.device_id,
            site=self.site,
            role=self.role,  # type: ignore[arg-type]
            online=True,
            software=__version__,
            reported_at=utc_now(),
        )

    async def _desired(self, _desired: DesiredState) -> None:
        return None

    def start(self) -> None:
        assert self.config is not None
        cfg = self.config
        self.store = AsyncStore(Store(self.root / "agent.sqlite3"))
        self.sync = Sync(lambda: cfg, self.store, AgentMetrics(), self.state, self._desired)
        self.task = asyncio.create_task(self.sync.run(_Ctx()), name=f"kiosk:{self.device_id}")  # type: ignore[arg-type]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
            self.store = None

    @property
    def connected(self) -> bool:
        return self.sync is not None and self.sync.status.connected

    async def queue(self, n: int, seed: int) -> None:
        """``n`` events of its role into the outbox, as the kiosk's flows write them."""
        assert self.store is not None
        sim = RoleSimulator(self.role, self.site, seed)  # type: ignore[arg-type]
        items = [sim.next_event() for _ in range(n)]
        events = await self.store.call(
            self.store.store.append, items, device_id=self.device_id, site=self.site
        )
        self.first, self.last = events[0].seq, events[-1].seq
        if self.sync is not None:
            self.sync.wake()

    async def depth(self) -> int:
        assert self.store is not None
        return await self.store.call(self.store.store.outbox_depth)

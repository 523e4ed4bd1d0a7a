"""The runtime's events: what the kiosk records durably, and the outbox's own alarm."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.metrics import AgentMetrics
from biblioedge.agent.storage import StorageGuard
from biblioedge.agent.store import AsyncStore, DiskFull, NotRecorded, OutboxFull, Store
from biblioedge.agent.supervisor import Context
from biblioedge.protocol import Event

log = logging.getLogger("biblioedge.agent")


class Events:
    """Records events in the outbox within its bound, and nudges sync to send them."""

    def __init__(
        self,
        config: Callable[[], AgentConfig],
        store: AsyncStore,
        metrics: AgentMetrics,
        storage: Callable[[], StorageGuard],
        wake: Callable[[], None],
    ) -> None:
        self._config = config
        self.store = store
        self.metrics = metrics
        self._storage = storage
        self._wake = wake
        #: the outbox's depth as last seen by :class:`OutboxWatch` (reported state)
        self.outbox_depth = 0

    async def emit(self, etype: str, payload: dict[str, Any], *, critical: bool = False) -> Event:
        """Record one event durably and nudge sync. Raises OutboxFull at the bound.

        ``critical`` events (the device's own alarms and state changes, a handful per day)
        bypass the bound: the alarm that says the outbox is full must not be refused by it.
        """
        (event,) = await self.emit_many([(etype, payload)], critical=critical)
        return event

    async def note(self, etype: str, payload: dict[str, Any]) -> None:
        """The device's own bookkeeping (started, alarms, desired state): past the outbox
        bound, and on a full disk it costs only this record, never the caller."""
        try:
            await self.emit_many([(etype, payload)], critical=True)
        except NotRecorded as exc:
            log.error("could not record %s: %s", etype, exc)

    async def emit_many(
        self, items: list[tuple[str, dict[str, Any]]], *, critical: bool = False
    ) -> list[Event]:
        storage = self._storage()
        if storage.full and not critical:  # refuse what cannot be kept, and say why
            self.metrics.events_refused.labels("disk_full").inc(len(items))
            raise DiskFull(f"the disk is full: {storage.cause}")
        cfg = self._config()
        try:
            events = await self.store.call(
                self.store.store.append,
                items,
                device_id=cfg.device_id,
                site=cfg.site,
                max_events=None if critical else cfg.outbox.max_events,
            )
        except OutboxFull:
            self.metrics.events_refused.labels("outbox_full").inc(len(items))
            log.error("outbox full: %d events refused", len(items))
            raise
        except DiskFull:
            self.metrics.events_refused.labels("disk_full").inc(len(items))
            raise
        for etype, _ in items:
            self.metrics.events_recorded.labels(etype).inc()
        self._wake()
        return events


class OutboxWatch:
    """Keeps the outbox gauges fresh and raises one alarm event per excursion above the mark."""

    name = "outbox"

    def __init__(self, events: Events, config: Callable[[], AgentConfig]) -> None:
        self.events = events
        self._config = config
        self.alarmed = False

    async def run(self, ctx: Context) -> None:
        ev = self.events
        while True:
            ctx.heartbeat()
            depth = await ev.store.call(Store.outbox_depth, ev.store.store)
            cfg = self._config().outbox
            fill = depth / cfg.max_events
            ev.metrics.outbox_depth.set(depth)
            ev.metrics.outbox_fill.set(fill)
            ev.outbox_depth = depth
            if fill >= cfg.alarm_ratio and not self.alarmed:
                self.alarmed = True
                log.warning(
                    "outbox %.0f%% full (%d events): central unreachable for long?",
                    fill * 100,
                    depth,
                )
                await ev.note(
                    "device.outbox_alarm",
                    {"depth": depth, "max_events": cfg.max_events, "state": "raised"},
                )
            elif fill < cfg.alarm_ratio * 0.9 and self.alarmed:
                self.alarmed = False
                log.info("outbox back to %d events", depth)
                await ev.note(
                    "device.outbox_alarm",
                    {"depth": depth, "max_events": cfg.max_events, "state": "cleared"},
                )
            await asyncio.sleep(0.5)

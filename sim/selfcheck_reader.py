"""The demo's reader at the self-check (``selfcheck.demo_reader``): borrows two or three books
from the demo catalogue, the first time opens "my account" and renews all, takes the receipt,
later brings them back, on the simulated pad.

While the library system answers, the reader logs in with the patron barcode and PIN; while
it is away (the demo stops it for a while) the simulated camera recognises the reader, as a
barcode-and-PIN login is refused offline. Everything else is the real flow.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from biblioedge.agent.supervisor import Context

log = logging.getLogger("biblioedge.agent.selfcheck")

READERS = ("P000101", "P000102", "P000103", "P000104")
BOOKS = ("30000001", "30000002", "30000003", "30000004", "30000005", "30000006", "30000009")


class DemoReader:
    name = "demo-reader"

    def __init__(self, station: Callable[[], Any], pause_s: float = 2.0, seed: int = 7) -> None:
        self.station = station
        self.pause_s = pause_s
        self.rng = random.Random(seed)
        self.renewed = False  # "my account" is shown once: the story, not every session

    async def _until(self, ctx: Context, steps: tuple[str, ...], within_s: float = 30) -> bool:
        for _ in range(int(within_s / 0.2)):
            ctx.heartbeat()
            s = self.station()
            if s is not None and s.view.step in steps:
                return True
            await asyncio.sleep(0.2)
        return False

    async def _my_account(self, ctx: Context, station: Any) -> None:
        """Open "my account", renew all, go back to the loans."""
        self.renewed = True
        station.tap("account")
        if not await self._until(ctx, ("account",)):
            return
        await asyncio.sleep(self.pause_s)
        if "renew_all" in station.view.actions:
            station.tap("renew_all")
            await asyncio.sleep(0.5)
            await self._until(ctx, ("account",))
            await asyncio.sleep(self.pause_s)
        station.tap("back")
        await self._until(ctx, ("results", "ready"))

    async def run(self, ctx: Context) -> None:
        from biblioedge.drivers.rfid.sim import catalogue_tags
        from biblioedge.drivers.sip2.dummy import CATALOGUE, NOT_OFFLINE, PIN, SETS

        tags = catalogue_tags(CATALOGUE, sets=SETS, not_offline=NOT_OFFLINE)
        while True:
            await asyncio.sleep(self.pause_s)
            if not await self._until(ctx, ("idle",)):
                continue
            station = self.station()
            sim = station.simulator
            if sim is None:
                log.warning("the demo reader needs selfcheck.rfid = sim")
                return
            patron = self.rng.choice(READERS)
            books = self.rng.sample(BOOKS, self.rng.choice((2, 3)))
            if station.flow.online:
                station.scanned(patron)
                await self._until(ctx, ("pin",), 5)
                station.pin(PIN)
            else:
                station.face(patron)
            if not await self._until(ctx, ("ready", "refused")) or station.view.step != "ready":
                station.tap("new_session")
                continue
            await asyncio.sleep(self.pause_s)
            pad = [t for b in books for t in tags[b]]
            for tag in pad:
                tag.afi = 0x07
            sim.place(*pad)
            if await self._until(ctx, ("results",)):
                await asyncio.sleep(self.pause_s)
                if not self.renewed and station.flow.online:
                    await self._my_account(ctx, station)
                station.tap("finish")
            await self._until(ctx, ("receipt", "idle"))
            await asyncio.sleep(self.pause_s)
            sim.clear()
            station.tap("new_session")
            await asyncio.sleep(self.pause_s * 3)
            # back with the same books
            await self._until(ctx, ("idle",))
            station.tap("return")
            await asyncio.sleep(self.pause_s)
            lent = [t for t in pad if t.afi != 0x07]
            if not lent:
                station.tap("cancel")
                continue
            sim.place(*lent)
            await self._until(ctx, ("returned",))
            await asyncio.sleep(self.pause_s)
            sim.clear()
            station.tap("new_session")

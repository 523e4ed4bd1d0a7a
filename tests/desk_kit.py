"""A desk under test: the real flow, real chip stack and face engine, and central's real ingest
and registration code fed from the desk's outbox (bench_desk.OutboxPump, no broker needed)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biblioedge.agent.desk.flow import DeskFlow, DeskSettings, DeskView
from biblioedge.agent.store import Store
from biblioedge.agent.supervisor import Context
from biblioedge.bench.desk import OutboxPump, simulated_desk
from biblioedge.demo.samples import desk_person
from biblioedge.drivers.cccd.chipsim import CccdChip, VpcdCard
from biblioedge.drivers.cccd.simdata import Citizen, TestPki, chip_files, demo_citizen, make_pki
from biblioedge.models.engine import FaceEngine

SITE, DESK = "tv-tinh", "desk-1"
_ENGINE: FaceEngine | None = None
_PEOPLE: dict[int, tuple[bytes, list[Any]]] = {}


def engine() -> FaceEngine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = FaceEngine()
    return _ENGINE


def person(index: int) -> tuple[bytes, list[Any]]:
    if index not in _PEOPLE:
        _PEOPLE[index] = desk_person(index, frames=8)
    return _PEOPLE[index]


@dataclass
class Desk:
    flow: DeskFlow
    store: Store
    central: OutboxPump
    citizen: Citizen
    qr: str
    pki: TestPki
    card: VpcdCard
    prints: Path
    views: list[DeskView] = field(default_factory=list)

    async def until(self, step: str, within: float = 60.0) -> DeskView:
        deadline = time.monotonic() + within
        while self.flow.view.step != step:
            if time.monotonic() > deadline:
                seen = [(v.step, v.message) for v in self.views[-8:]]
                raise AssertionError(f"never reached {step}; last views {seen}")
            await asyncio.sleep(0.05)
        return self.flow.view

    async def seen(self, message: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while message not in self.messages():
            assert time.monotonic() < deadline, f"never showed {message}"
            await asyncio.sleep(0.05)

    def messages(self) -> list[str]:
        return [v.message for v in self.views]


@contextlib.asynccontextmanager
async def running_desk(
    tmp: Path,
    port: int,
    *,
    live_person: int = 3,
    chip_person: int = 3,
    tamper: bool = False,
    settings: DeskSettings | None = None,
    files_hook: Callable[[dict[str, bytes]], None] | None = None,
) -> AsyncIterator[Desk]:
    photo, _ = person(chip_person)
    _, frames = person(live_person)
    citizen, qr = demo_citizen(photo)
    pki = make_pki()
    files = citizen.files(pki)
    if tamper:  # a changed DG13 after signing: the SOD hash no longer matches
        files["DG13"] = files["DG13"].replace("Bình".encode(), "Bính".encode())
    if files_hook is not None:
        files_hook(files)
    card = VpcdCard(
        CccdChip(citizen.mrz_information(), chip_files(files), can=citizen.can), port=port
    )
    card.insert()
    store = Store(tmp / "desk.sqlite3")
    central = OutboxPump(tmp)
    prints = tmp / "cards"
    flow = simulated_desk(
        store,
        engine(),
        frames,
        pki.csca,
        prints,
        settings or DeskSettings(librarian="lan", answer_wait_s=3.0),
        site=SITE,
        device=DESK,
        seal_key=central.seal_key.public_key(),
    )
    desk = Desk(flow, store, central, citizen, qr, pki, card, prints)
    flow.on_view = desk.views.append
    tasks = [
        asyncio.create_task(flow.run(Context("desk", 60))),
        asyncio.create_task(central.run(store, flow.answers_arrived, SITE)),
    ]
    try:
        yield desk
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        desk.card.remove()
        flow.store.close()

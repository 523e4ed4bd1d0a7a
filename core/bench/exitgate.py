"""``biblioedge bench exitgate``: people walking through the exit with stacks of books.

The real exit-gate flow (``agent.exitgate``) runs on the 3M 810 driver over a pty against the
reader simulator on a noisy line (garbage before every answer), with the relay board on a pty
of its own. Each pass carries a stack of 1 to 10 items, each item secured (AFI 0x07, not
lent) with probability ``secured_share`` and lent (0xC2) otherwise; the whole stack enters
the field at once and stays ``dwell`` (600 ms at walking speed), then a gap before the next
person. Every item is new, so every secured one must alarm and no lent one may.

Time is scaled by ``scale`` so 1,000 passes finish in minutes: the line runs at
19200 × scale baud, the tag's air time per command is 4 ms / scale, the dwell and the gap
are divided by scale. Everything the flow waits for shrinks by the same factor; what does not
shrink is Python's own time (thread hops, the pty), which makes the ratio below if anything
worse than at scale 1. Unscaled equivalents (× scale) are printed beside the measured ones.

read-to-alarm: from the start of the inventory that first reports a stack to the relay
command, per alarm. The baseline, on the same simulated reader right after each pass that
carried a secured item (so both see the same load): the reader's own inventory cycle for
that same stack, timed with the driver alone — one inventory and one AFI read per tag, the
least this reader protocol allows to know a stack's security state. ``alarm_ratio`` = p95
read-to-alarm / p95 cycle. The flow runs its own cycle (``ExitGate.cycle``) back to back
while people walk, paused between passes for the baseline; the reader-failure handling and
the passage counting of ``ExitGate.run`` are not exercised here (tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import sys
import time
from typing import Any

from biblioedge.agent.exitgate.flow import ExitGate, ExitSettings
from biblioedge.drivers.gate import CH340Relay
from biblioedge.drivers.rfid.iso28560 import TagData, decode
from biblioedge.drivers.rfid.m810 import M810Reader
from biblioedge.drivers.rfid.sim import M810Simulator, SimTag, item_tag
from biblioedge.drivers.sim_serial import RelayBoardSimulator

BAUD = 19200
AIR_S = 0.004
DWELL_S = 0.6
GAP_S = 0.3
SECURED, LENT = 0x07, 0xC2


def _p(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_exitgate(
    passes: int = 1000,
    *,
    scale: float = 3.0,
    secured_share: float = 0.3,
    seed: int = 2026,
    progress: bool = False,
) -> dict[str, Any]:
    return asyncio.run(_bench(passes, scale, secured_share, seed, progress))


async def _bench(
    passes: int, scale: float, secured_share: float, seed: int, progress: bool
) -> dict[str, Any]:
    rng = random.Random(seed)
    sim = M810Simulator(baud=round(BAUD * scale), air_s=AIR_S / scale, noise=True).start()
    board = RelayBoardSimulator().start()
    reader = M810Reader(sim.port)
    relay = CH340Relay(board.port)
    events: list[dict[str, Any]] = []

    async def emit(etype: str, payload: dict[str, Any]) -> None:
        if etype == "exit.alarm":
            events.append(payload)

    gate = ExitGate(
        reader=reader,
        relay=relay,
        emit=emit,
        settings=ExitSettings(forget_s=GAP_S / scale / 2, realarm_s=60.0, alarm_show_s=1.0),
    )
    stacks, secured_uids = _stacks(rng, passes, secured_share)
    cycles, walked_s = await _walk(gate, sim, reader, stacks, secured_uids, scale, progress)
    alarmed, read_to_alarm = _alarms(events, stacks)
    gate.close()
    reader.close()
    relay.close()
    sim.stop()
    board.stop()
    lent_uids = {t.uid for s in stacks for t in s} - secured_uids
    detected = len(secured_uids & alarmed)
    p95_alarm, p95_cycle = _p(read_to_alarm, 0.95), _p(cycles, 0.95)
    return {
        "passes": passes,
        "items": len(secured_uids) + len(lent_uids),
        "secured_items": len(secured_uids),
        "lent_items": len(lent_uids),
        "secured_detected": round(detected / max(1, len(secured_uids)), 4),
        "secured_missed": len(secured_uids) - detected,
        "false_alarms": len(lent_uids & alarmed),
        "alarms": len(read_to_alarm),
        "read_to_alarm_ms_p50": round(_p(read_to_alarm, 0.5), 2),
        "read_to_alarm_ms_p95": round(p95_alarm, 2),
        "reader_cycle_ms_p50": round(_p(cycles, 0.5), 2),
        "reader_cycle_ms_p95": round(p95_cycle, 2),
        "alarm_ratio": round(p95_alarm / p95_cycle, 3) if p95_cycle else None,
        "read_to_alarm_ms_p95_unscaled": round(p95_alarm * scale, 1),
        "reader_cycle_ms_p95_unscaled": round(p95_cycle * scale, 1),
        "mean_stack": round(statistics.mean(len(s) for s in stacks), 2),
        "scale": scale,
        "line": _line(scale),
        "flow_cycles": gate.cycles,
        "trouble": dict(gate.bad),
        "wall_s": round(walked_s, 1),
        "targets": {"secured_detected": 1.0, "false_alarms": 0, "alarm_ratio": 1.5},
    }


def _stacks(
    rng: random.Random, passes: int, secured_share: float
) -> tuple[list[list[SimTag]], set[str]]:
    """What each person carries (1 to 10 new items), and which items are secured."""
    stacks: list[list[SimTag]] = []
    secured_uids: set[str] = set()
    n = 0
    for _ in range(passes):
        stack = []
        for _ in range(rng.randint(1, 10)):
            n += 1
            afi = SECURED if rng.random() < secured_share else LENT
            tag = item_tag(TagData(f"4{n:07d}", owner_institution="VNTVTN"), afi=afi)
            if afi == SECURED:
                secured_uids.add(tag.uid)
            stack.append(tag)
        stacks.append(stack)
    return stacks, secured_uids


async def _walk(
    gate: ExitGate,
    sim: M810Simulator,
    reader: M810Reader,
    stacks: list[list[SimTag]],
    secured_uids: set[str],
    scale: float,
    progress: bool,
) -> tuple[list[float], float]:
    """Everyone walks through; (the baseline cycles, seconds it took)."""
    cycles: list[float] = []  # the baseline, per stack that holds a secured item
    walking = asyncio.Event()

    async def drive() -> None:  # the flow's own loop, paused between passes
        while walking.is_set():
            await gate.cycle()

    started = time.monotonic()
    for i, stack in enumerate(stacks):
        walking.set()
        task = asyncio.create_task(drive())
        sim.place(*stack)
        await asyncio.sleep(DWELL_S / scale)
        sim.lift(*(t.uid for t in stack))
        await asyncio.sleep(GAP_S / scale)  # the flow names and records meanwhile
        walking.clear()
        await task  # ends with its current cycle: the reader is free
        if any(t.uid in secured_uids for t in stack):
            # the baseline, now, under the same load: the same stack, the driver alone
            sim.place(*stack)
            cycles.append(await asyncio.to_thread(_bare_cycle, reader))
            sim.lift(*(t.uid for t in stack))
        if progress and (i + 1) % 100 == 0:
            sys.stderr.write(f"exitgate: {i + 1}/{len(stacks)} passes\n")
    walking.set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):  # the last alarms are named and recorded
            await drive()
    walking.clear()
    return cycles, time.monotonic() - started


def _alarms(
    events: list[dict[str, Any]], stacks: list[list[SimTag]]
) -> tuple[set[str], list[float]]:
    """(the tags the gate alarmed for, read-to-alarm ms of each alarm)."""
    item_uid: dict[str, str] = {}
    for stack in stacks:
        for tag in stack:
            item_uid[_item_of(tag)] = tag.uid
    alarmed: set[str] = set()
    read_to_alarm: list[float] = []
    for p in events:
        if "items" not in p:
            continue
        read_to_alarm.append(p["read_to_alarm_ms"])
        for it in p["items"]:
            uid = it.get("uid") or item_uid.get(it.get("item_id") or "", "")
            alarmed.add(uid)
    return alarmed, read_to_alarm


def _line(scale: float) -> dict[str, Any]:
    return {
        "baud": round(BAUD * scale),
        "air_ms_per_command": round(AIR_S / scale * 1000, 3),
        "noise": "2 garbage bytes before every answer",
        "dwell_ms": round(DWELL_S / scale * 1000, 1),
        "gap_ms": round(GAP_S / scale * 1000, 1),
    }


def _bare_cycle(reader: Any) -> float:
    """The driver alone, timed on its own thread: inventory, then each tag's AFI (ms)."""
    t0 = time.monotonic()
    for uid in reader.inventory():
        reader.read_afi(uid)
    return (time.monotonic() - t0) * 1000


def _item_of(tag: Any) -> str:
    return str(decode(bytes(tag.memory)).primary_item_id)

"""``biblioedge bench selfcheck``: a self-check's loans, from tags on the pad to done, and the
offline backlog forwarded through a kill -9.

Loans: the real flow (``agent.selfcheck``) with the 3M 810 driver on a pty against the reader
simulator, which takes the time its answer's bytes take at 19200 baud plus a stated air time
per tag command, and the dummy library system speaking SIP2 over loopback TCP behind a proxy
that adds a stated delay per exchange. Every security write is read back. The baseline, in
the same run, reads each tag's whole memory (28 blocks) as simple readers do, instead of
stopping where its data ends.

Offline: N transactions recorded while the library system was away, then forwarded by a
separate process that is killed with SIGKILL part way; a second process finishes. The dummy
counts the checkouts it granted per item: lost = items never lent, duplicated = items lent
more than once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biblioedge.agent.selfcheck.flow import SelfCheck
from biblioedge.agent.selfcheck.offline import OfflineDesk, OfflineRules
from biblioedge.agent.store import Store
from biblioedge.drivers.rfid.iso28560 import TagData
from biblioedge.drivers.rfid.m810 import BAUD, M810Reader
from biblioedge.drivers.rfid.reader import PadItem, read_item
from biblioedge.drivers.rfid.sim import M810Simulator, SimTag, item_tag
from biblioedge.drivers.sip2.client import Account
from biblioedge.drivers.sip2.dummy import Library, build
from biblioedge.drivers.sip2.library import Sip2Library
from biblioedge.procs import free_port, wait_port

AIR_S = 0.004  # per tag command: ISO 15693 at 26 kbit/s, one block read or write
SIP_RTT_S = 0.010  # per SIP2 exchange: a library system on the LAN
SIZES = (1, 5, 10)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def dummy_ils(open_catalogue: bool = False) -> Iterator[tuple[int, Any]]:
    """The dummy library system on a loopback port, in a thread of this process, so the
    benchmark can read what it granted."""
    lib = Library(open=open_catalogue)
    port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        server = build(lib)
        async with server.start("127.0.0.1", port):
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    wait_port("127.0.0.1", port, 20)
    try:
        yield port, lib
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)


class DelayProxy:
    """TCP on loopback with ``delay_s`` added to each exchange (half each way)."""

    def __init__(self, target: int, delay_s: float) -> None:
        self.port = free_port()
        self.target = target
        self.half = delay_s / 2
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        wait_port("127.0.0.1", self.port, 10)

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    await asyncio.sleep(self.half)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _WholeMemory(SelfCheck):
    """The baseline: every tag's 28 blocks read, whatever its data holds."""

    def scan(self) -> list[PadItem]:
        out = []
        for uid in self.reader.inventory():
            self.reader.read_blocks(uid, 0, 28)
            out.append(read_item(self.reader, uid, self.afi))
        return out


def _loan_tags() -> list[SimTag]:
    return [
        item_tag(
            TagData(
                f"31{i:06d}",  # clear of the demo catalogue's hold and fee items
                owner_institution="VN-TVTN",
                type_of_usage=0x10,
                elements={"title": f"Sách thử {i}"},
            )
        )
        for i in range(1, max(SIZES) + 1)
    ]


def _stack_loans(
    flow: SelfCheck,
    library: Sip2Library,
    reader: M810Reader,
    pad: M810Simulator,
    stack: list[SimTag],
    rounds: int,
) -> dict[str, Any]:
    """``rounds`` loans of this stack, each given back after: its times and its traffic."""
    n = len(stack)
    times, trips, exchanges = [], 0, 0
    for r in range(rounds):
        for tag in stack:
            tag.afi = 0x07
        pad.clear()
        pad.place(*stack)
        flow.identify(f"P{100 + r:06d}", "card_qr")
        t0, rt0, ex0 = (
            time.perf_counter(),
            library.client.round_trips,
            reader.exchanges,
        )
        results = flow.borrow()
        times.append(time.perf_counter() - t0)
        trips += library.client.round_trips - rt0
        exchanges += reader.exchanges - ex0
        if sum(x.ok for x in results) != n:
            raise RuntimeError(f"only {sum(x.ok for x in results)} of {n} lent: {results}")
        flow.end()
        flow.give_back()
    return {
        "p50_s": round(statistics.median(times), 3),
        "p95_s": round(_percentile(times, 0.95), 3),
        "sip2_round_trips_per_item": round(trips / (rounds * n), 2),
        "rfid_exchanges_per_item": round(exchanges / (rounds * n), 2),
    }


def _loans(rounds: int, say: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "latency": {
            "rfid_line_baud": BAUD,
            "rfid_air_s_per_command": AIR_S,
            "sip2_added_s_per_exchange": SIP_RTT_S,
        },
        "rounds": rounds,
    }
    tags = _loan_tags()
    with dummy_ils(open_catalogue=True) as (port, _lib), tempfile.TemporaryDirectory() as tmp:
        proxy = DelayProxy(port, SIP_RTT_S)
        pad = M810Simulator(baud=BAUD, air_s=AIR_S).start()
        reader = M810Reader(pad.port)
        library = Sip2Library(Account.from_url(f"sip2://kiosk:kiosk@127.0.0.1:{proxy.port}"))
        store = Store(Path(tmp) / "agent.sqlite3")
        try:
            for name, cls in (("ours", SelfCheck), ("baseline_whole_memory", _WholeMemory)):
                flow = cls(library, reader, OfflineDesk(store), lambda t, p: None)
                sizes: dict[str, Any] = {}
                for n in SIZES:
                    sizes[str(n)] = _stack_loans(flow, library, reader, pad, tags[:n], rounds)
                    say(f"{name}: {n} items p50 {sizes[str(n)]['p50_s']} s")
                out[name] = sizes
        finally:
            reader.close()
            library.close()
            pad.stop()
            proxy.close()
            store.close()
    out["ratio_baseline_over_ours_5_items_p50"] = round(
        out["baseline_whole_memory"]["5"]["p50_s"] / out["ours"]["5"]["p50_s"], 2
    )
    out["target_5_items_p95_s"] = 2.0
    out["met"] = out["ours"]["5"]["p95_s"] <= 2.0
    return out


def _forwarder(db: Path, url: str) -> subprocess.Popen[bytes]:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from biblioedge.agent.selfcheck.offline import OfflineDesk\n"
        "from biblioedge.agent.store import Store\n"
        "from biblioedge.drivers.sip2.client import Account\n"
        "from biblioedge.drivers.sip2.library import Sip2Library\n"
        "lib = Sip2Library(Account.from_url(sys.argv[2]))\n"
        "out = OfflineDesk(Store(Path(sys.argv[1]))).forward(lib)\n"
        "sys.exit(0 if out.pending == 0 else 3)\n"
    )
    return subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code, str(db), url], stdout=subprocess.DEVNULL
    )


def _offline(count: int, say: Any) -> dict[str, Any]:
    with dummy_ils(open_catalogue=True) as (port, lib), tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "agent.sqlite3"
        store = Store(db)
        desk = OfflineDesk(store, OfflineRules(max_items_per_reader=10))
        t0 = time.perf_counter()
        for i in range(count):
            # readers P100000 and up: clear of the dummy's blocked and owing demo readers
            got = desk.lend(f"P{100000 + i // 10:06d}", f"32{i:06d}", blocked=lambda _: False)
            if not isinstance(got, tuple):
                raise RuntimeError(f"offline loan {i} refused: {got}")
        record_s = time.perf_counter() - t0
        url = f"sip2://kiosk:kiosk@127.0.0.1:{port}?timeout=5"

        def done() -> int:
            return int(
                store.conn.execute(
                    "SELECT count(*) FROM offline_tx WHERE state = 'done'"
                ).fetchone()[0]
            )

        t0 = time.perf_counter()
        first = _forwarder(db, url)
        while done() < count * 0.4 and first.poll() is None:
            time.sleep(0.05)
        killed_at = done()
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        say(f"offline: killed the forwarder with -9 at {killed_at} of {count}")
        second = _forwarder(db, url)
        rc = second.wait()
        forward_s = time.perf_counter() - t0
        states = dict(
            store.conn.execute("SELECT state, count(*) FROM offline_tx GROUP BY state").fetchall()
        )
        store.close()
        granted = dict(lib.checkouts)
    lent = {f"32{i:06d}" for i in range(count)}
    return {
        "transactions": count,
        "record_s": round(record_s, 2),
        "forward_s": round(forward_s, 2),
        "forward_per_s": round(count / forward_s, 1),
        "killed_at": killed_at,
        "second_exit": rc,
        "states": states,
        "refused": states.get("refused", 0),
        "lost": len(lent - set(granted)),
        "duplicated": sum(1 for item in lent if granted.get(item, 0) > 1),
    }


def bench_selfcheck(
    rounds: int = 20, offline: int = 10_000, progress: bool = True
) -> dict[str, Any]:
    def say(message: str) -> None:
        if progress:
            sys.stderr.write(message + "\n")

    result = {"loans": _loans(rounds, say)}
    if offline:
        result["offline_forward"] = _offline(offline, say)
    return result

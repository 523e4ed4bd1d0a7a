"""The exit security gate on its real parts: the 3M 810 driver on a pty against the simulated
reader (at its real line speed), the relay board and the passage counter on ptys of their own,
and the dummy library system as a process speaking SIP2 over TCP for smart mode."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from ils import Dummy

from biblioedge.agent.config import validate_config
from biblioedge.agent.exitgate.flow import ExitGate
from biblioedge.drivers.rfid.iso28560 import TagData
from biblioedge.drivers.rfid.sim import SimTag, item_tag
from biblioedge.drivers.sip2.client import Account
from biblioedge.drivers.sip2.dummy import CATALOGUE
from biblioedge.drivers.sip2.library import Sip2Library
from biblioedge.settings import ConfigError

SECURED, LENT = 0x07, 0xC2


def book(item: str, afi: int, title: str = "") -> SimTag:
    elements = {"title": title} if title else {}
    return item_tag(TagData(item, owner_institution="VNTVTN", elements=elements), afi=afi)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, etype: str, payload: dict[str, Any]) -> None:
        self.events.append((etype, payload))

    def alarms(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [
            p
            for t, p in self.events
            if t == "exit.alarm" and (reason is None or p["reason"] == reason)
        ]

    def alarmed_items(self) -> list[str | None]:
        return [i["item_id"] for p in self.alarms() for i in p.get("items", [])]


async def until(cond: Callable[[], bool], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"waited {within} s for {what}")


def config(tmp: Path, **exitgate: Any) -> Any:
    return validate_config(
        {
            "role": "exitgate",
            "site": "tv-tinh",
            "device_id": "exit-01",
            "data_dir": str(tmp),
            "exitgate": {
                "enabled": True,
                "rfid": "sim",
                "relay": "sim",
                "counter": "sim",
                "forget_s": 0.5,
                **exitgate,
            },
        }
    )


@contextlib.asynccontextmanager
async def running(tmp: Path, record: Recorder, **exitgate: Any) -> AsyncIterator[ExitGate]:
    """The exit gate as the agent builds it, its loop running."""
    from biblioedge.agent.exitgate.build import build_exitgate
    from biblioedge.agent.supervisor import Context

    gate, closables = await build_exitgate(config(tmp, **exitgate), record)
    task = asyncio.create_task(gate.run(Context("exitgate", 30)))
    try:
        await until(lambda: gate.view.mode == "idle" and gate.cycles > 0, "the first inventory")
        yield gate
        assert not task.done(), task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for c in closables:
            c.close()


def relay_pulses(gate: ExitGate) -> int:
    return sum(1 for _, ch, on in gate.relay_board.history if ch == 1 and on)


async def walk(gate: ExitGate, *tags: SimTag, dwell: float = 0.6) -> None:
    """Carry these tags through the field: in at once, out after ``dwell`` seconds."""
    gate.simulator.place(*tags)
    await asyncio.sleep(dwell)
    gate.simulator.lift(*(t.uid for t in tags))


@pytest.mark.asyncio
async def test_an_unborrowed_book_alarms_and_a_borrowed_one_does_not(tmp_path: Path) -> None:
    record = Recorder()
    async with running(tmp_path, record) as gate:
        await walk(gate, book("30000002", LENT, "Dế Mèn phiêu lưu ký"))
        await walk(gate, book("30000001", SECURED, "Truyện Kiều"))
        await until(lambda: bool(record.alarms()), "the alarm event")
        (alarm,) = record.alarms()
        assert alarm["reason"] == "afi_secured" and not alarm["offline"]
        assert alarm["items"] == [{"item_id": "30000001", "afi": SECURED}]
        assert alarm["read_to_alarm_ms"] >= 0
        assert relay_pulses(gate) == 1  # light and buzzer, once
        assert gate.view.mode == "alarm" and gate.view.message == "exit_alarm"
        assert [(i.item_id, i.title) for i in gate.view.items] == [("30000001", "Truyện Kiều")]
        # nobody is named: the event says what left, never who carried it
        assert set(alarm) == {"reason", "items", "offline", "read_to_alarm_ms"}
        await until(lambda: gate.view.mode == "idle", "the alarm screen to clear", 20)
        assert "30000002" not in record.alarmed_items()


@pytest.mark.asyncio
async def test_a_tag_that_stays_alarms_once_per_interval(tmp_path: Path) -> None:
    record = Recorder()
    async with running(tmp_path, record, realarm_s=1.0) as gate:
        tag = book("30000003", SECURED)
        gate.simulator.place(tag)
        await until(lambda: len(record.alarms()) >= 1, "the first alarm")
        first_cycles, started = gate.cycles, time.monotonic()
        await until(lambda: len(record.alarms()) >= 3, "two more alarms", 30)
        elapsed = time.monotonic() - started
        cycles = gate.cycles - first_cycles
        gate.simulator.clear()
        # many inventories saw the tag, but it alarmed at most once per interval
        assert cycles > len(record.alarms()) * 2
        assert len(record.alarms()) <= 1 + elapsed / 1.0 + 1


@pytest.mark.asyncio
async def test_a_stack_of_ten_is_read_whole_and_the_sound_plays(tmp_path: Path) -> None:
    record = Recorder()
    rang = tmp_path / "rang"
    async with running(tmp_path, record, sound=f"cmd:touch {rang}") as gate:
        secured = [f"3100000{i}" for i in range(5)]
        lent = [f"3200000{i}" for i in range(5)]
        await walk(gate, *(book(i, SECURED) for i in secured), *(book(i, LENT) for i in lent))
        await until(lambda: len(record.alarmed_items()) >= 5, "every secured item named", 20)
        assert sorted(record.alarmed_items()) == secured  # each once, no lent one
        await until(rang.exists, "the sound hook run")


@pytest.mark.asyncio
async def test_bad_tags_cost_themselves_and_are_counted(tmp_path: Path) -> None:
    record = Recorder()
    async with running(tmp_path, record, max_new_tags=8) as gate:
        whole = book("30000009", SECURED).memory
        # overwritten after its fifth byte, and a tag whose record stops after eight bytes
        corrupt = SimTag("E004AAAAAAAAAAA1", bytearray(whole[:5] + b"\xff" * 107), SECURED)
        truncated = SimTag("E004AAAAAAAAAAA2", bytearray(whole[:8]), SECURED)
        odd = book("33000001", 0x42)  # an AFI no one here writes
        await walk(gate, corrupt, truncated, odd, dwell=1.0)
        await until(lambda: len(record.alarmed_items()) == 2, "the alarm for the bad tags")
        items = sorted(
            (i for a in record.alarms() for i in a["items"]), key=lambda i: str(i.get("uid"))
        )
        assert items == [
            {"item_id": None, "afi": SECURED, "uid": t.uid, "problem": "corrupt_tag"}
            for t in (corrupt, truncated)
        ]
        assert gate.bad["corrupt_tag"] == 2 and gate.bad["unknown_afi"] == 1
        # a flood: sixty tags at once, eight new ones looked at per inventory
        flood = [book(f"34{i:06d}", LENT) for i in range(59)] + [book("35000001", SECURED)]
        gate.simulator.place(*flood)
        await until(lambda: "35000001" in record.alarmed_items(), "the secured one in the flood")
        gate.simulator.clear()
        assert gate.bad["flood"] > 0
        assert set(record.alarmed_items()) == {None, "35000001"}


@pytest.mark.asyncio
async def test_the_reader_dies_and_comes_back_by_itself(tmp_path: Path) -> None:
    record = Recorder()
    async with running(tmp_path, record) as gate:
        gate.simulator.mute = True  # the reader's cable is pulled
        await until(lambda: gate.view.mode == "out_of_service", "out of service")
        assert gate.view.message == "exit_out_of_service"
        await until(lambda: bool(record.alarms("reader_out_of_service")), "the event")
        assert record.alarms("reader_out_of_service")[0]["state"] == "raised"
        gate.simulator.mute = False
        await until(lambda: gate.view.mode == "idle", "back in service")
        assert [a["state"] for a in record.alarms("reader_out_of_service")] == [
            "raised",
            "cleared",
        ]
        assert gate.bad["reader_failed"] >= 2
        await walk(gate, book("30000004", SECURED))  # and it guards again
        await until(lambda: "30000004" in record.alarmed_items(), "an alarm after recovery")


@pytest.mark.asyncio
async def test_passages_are_counted_through_noise_and_silence(tmp_path: Path) -> None:
    record = Recorder()
    async with running(tmp_path, record, counter_silence_s=1.0) as gate:
        counter = gate.counter_simulator
        counter.walk("in", 3)
        counter.garbage()
        counter.walk("out", 2)
        await until(lambda: (gate.view.passages_in, gate.view.passages_out) == (3, 2), "the counts")
        await until(lambda: gate.bad["counter_noise"] >= 2, "the noise counted")
        counter.mute = True  # the counter's cable is pulled: no heartbeat
        await until(lambda: not gate.counter_ok, "the counter reported silent")
        counter.mute = False
        await until(lambda: gate.counter_ok, "the counter heard again")
        states = [p["counter"] for t, p in record.events if t == "exit.passages"]
        assert states[-2:] == ["silent", "ok"]
    # the minute's counts are recorded when the gate stops (or the minute ends)
    counts = [(p["in"], p["out"]) for t, p in record.events if t == "exit.passages"]
    assert (sum(i for i, _ in counts), sum(o for _, o in counts)) == (3, 2)


def test_the_exitgate_section_is_checked_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exitgate.rfid"):
        config(tmp_path, rfid="none")
    with pytest.raises(ConfigError, match="smart"):
        config(tmp_path, mode="smart")
    with pytest.raises(ConfigError, match="exitgate.ils"):
        config(tmp_path, ils="http://nowhere")
    with pytest.raises(ConfigError, match="afi_loaned"):
        config(tmp_path, afi_secured=0xC2)
    with pytest.raises(ConfigError):
        config(tmp_path, counter="usb")
    with pytest.raises(ConfigError, match="exitgate.typo"):
        config(tmp_path, typo=1)
    assert config(tmp_path, mode="smart", ils="sip2://k@127.0.0.1:1").exitgate.mode == "smart"


@pytest.mark.asyncio
async def test_smart_mode_asks_the_library_system_and_the_afi_decides_offline(
    tmp_path: Path, ils: Dummy
) -> None:
    record = Recorder()
    desk = Sip2Library(Account.from_url(ils.url))
    try:
        assert desk.checkout("P000101", "30000005").ok  # lent at the library system
    finally:
        desk.close()
    async with running(tmp_path, record, mode="smart", ils=ils.url, realarm_s=1.0) as gate:
        # AFI says lent, and the library system agrees: no alarm
        await walk(gate, book("30000005", LENT))
        # AFI says lent (a tag switched by hand), the library system says on the shelf
        await walk(gate, book("30000006", LENT), dwell=1.5)
        await until(lambda: bool(record.alarms("not_on_loan")), "the smart alarm")
        smart = record.alarms("not_on_loan")  # again each second while it stays
        assert all(a["items"] == [{"item_id": "30000006", "afi": LENT}] for a in smart)
        assert gate.view.items[0].title == CATALOGUE["30000006"]  # from the library system
        await walk(gate, book("30000001", SECURED), dwell=1.0)  # titles come from it too
        await until(lambda: "30000001" in record.alarmed_items(), "the AFI alarm")
        await until(
            lambda: any(i.title == CATALOGUE["30000001"] for i in gate.view.items), "its title"
        )
        assert "30000005" not in record.alarmed_items()
        # the library system goes away: the AFI alone decides, and nothing else changes
        ils.stop()
        await walk(gate, book("30000007", LENT), dwell=1.0)  # would be "not on loan"
        await walk(gate, book("30000008", SECURED), dwell=1.0)
        await until(lambda: "30000008" in record.alarmed_items(), "the offline AFI alarm")
        assert not gate.online and gate.view.offline
        assert "30000007" not in record.alarmed_items()
        offline = [a for a in record.alarms() if "30000008" in str(a["items"])]
        assert offline[0]["offline"] is True
        assert gate.bad["ils_unreachable"] >= 1


def test_every_exit_message_is_translated_and_each_state_has_its_colour(tmp_path: Path) -> None:
    import re

    import cv2
    from test_kiosk import pixel, screenshots

    from biblioedge.agent.exitgate import flow as exitgate
    from biblioedge.kiosk.exitgate_screen import COLOURS
    from biblioedge.kiosk.i18n import keys, text

    shown = set(re.findall(r'"(exit_[a-z_]+)"', Path(exitgate.__file__).read_text()))
    assert {"exit_idle", "exit_alarm", "exit_out_of_service"} <= shown <= keys()
    assert text("exit_alarm", "vi") == "Xin dừng lại: tài liệu chưa được mượn"
    shots = screenshots("exitgate", tmp_path, "1024x600")
    for state, mode in (
        ("exit_idle", "idle"),
        ("exit_alarm", "alarm"),
        ("exit_alarm_english", "alarm"),
        ("exit_out_of_service", "out_of_service"),
    ):
        img = cv2.imread(str(shots / f"{state}.png"))
        assert img is not None and img.shape[:2] == (600, 1024)
        expected = tuple(round(c * 255) for c in COLOURS[mode])
        got = pixel(img, 1010, 300)
        assert all(abs(a - b) <= 3 for a, b in zip(got, expected, strict=True)), (state, got)


@pytest.mark.integration
def test_an_exit_gate_kiosk_sends_its_alarms_to_central_and_the_dashboard(
    make_agent: Any, central: Any
) -> None:
    """The real agent process, enrolled at a real central over mutual TLS: the reader is
    simulated here, in the test, on a pty the kiosk opens as it would /dev/ttyUSB0."""
    import ssl

    import httpx

    from biblioedge.demo.launch import wait_until
    from biblioedge.drivers.rfid.sim import M810Simulator

    field = M810Simulator(air_s=0.004).start()
    try:
        agent = make_agent(
            "exit-01",
            role="exitgate",
            exitgate={"enabled": True, "rfid": f"m810:{field.port}", "relay": "sim"},
        )
        agent.start()
        field.place(book("30000002", LENT), book("30000001", SECURED))

        def alarms() -> list[dict[str, Any]]:
            with central.client() as api:
                got = api.get("/events", params={"device_id": "exit-01", "type": "exit.alarm"})
                return [e["payload"] for e in got.json()["items"]]

        wait_until(lambda: bool(alarms()), 60, what="the alarm stored at central")
        field.clear()
        # once per interval while it stays: on a slow machine more than one may be stored
        assert all(a["items"] == [{"item_id": "30000001", "afi": SECURED}] for a in alarms())
        with httpx.Client(
            base_url=central.url, verify=ssl.create_default_context(cafile=central.ca_file)
        ) as web:
            web.post("/dashboard/login", data={"token": central.token})
            page = web.get("/dashboard").text
        assert "Cổng an ninh báo động" in page and "30000001" in page
        assert "30000002" not in page
    finally:
        field.stop()


@pytest.mark.asyncio
async def test_a_library_system_answering_garbage_costs_only_its_requests(
    tmp_path: Path,
) -> None:
    """A SIP2 server that answers item information with a status no standard has, and
    everything else with bytes that are no SIP2 at all: the AFI decides, the gate goes on."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while True:
                    try:
                        data = conn.recv(4096)
                    except OSError:
                        break
                    if not data:
                        break
                    buf += data
                    while b"\r" in buf:
                        frame, _, buf = buf.partition(b"\r")
                        if b"AB30000006" in frame:
                            conn.sendall(b"18ZZ020120261206    120000AB30000006|AJ?|\r")
                        else:
                            conn.sendall(b"\x00\xff\xfe garbage \x07\r")

    threading.Thread(target=serve, daemon=True).start()
    url = f"sip2://127.0.0.1:{srv.getsockname()[1]}?timeout=1"
    record = Recorder()
    try:
        async with running(tmp_path, record, mode="smart", ils=url) as gate:
            await walk(gate, book("30000006", LENT), dwell=1.0)  # a status no one defined
            await until(lambda: gate.bad["ils_undecided"] >= 1, "the nonsense status counted")
            await walk(gate, book("30000005", LENT), dwell=1.0)  # bytes that are no SIP2
            await until(lambda: gate.bad["ils_unreachable"] >= 1, "the garbage counted")
            await walk(gate, book("30000001", SECURED))
            await until(lambda: "30000001" in record.alarmed_items(), "the AFI alarm")
            assert record.alarmed_items() == ["30000001"]
    finally:
        srv.close()

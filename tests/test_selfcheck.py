"""The self-check flow, end to end on its real parts: the dummy library system as a process
speaking SIP2 over TCP, the 3M 810 driver on a pty with the simulated pad, the agent's store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from ils import Dummy

from biblioedge.agent.selfcheck.flow import Refused, SelfCheck, Session
from biblioedge.agent.selfcheck.offline import OfflineDesk, OfflineRules
from biblioedge.agent.store import Store
from biblioedge.drivers.rfid.m810 import M810Reader
from biblioedge.drivers.rfid.sim import M810Simulator, SimTag, catalogue_tags
from biblioedge.drivers.sip2.client import Account
from biblioedge.drivers.sip2.dummy import CATALOGUE, NOT_OFFLINE, SETS
from biblioedge.drivers.sip2.library import Sip2Library

TAGS = catalogue_tags(CATALOGUE, sets=SETS, not_offline=NOT_OFFLINE)
READER = "P000102"


def fresh(*items: str) -> list[SimTag]:
    """The tags of these items as on the shelf: secured, well-behaved, no history."""
    tags = [tag for item in items for tag in TAGS[item]]
    for tag in tags:
        tag.afi, tag.lift_on, tag.ignore_afi_writes = 0x07, None, False
        tag.commands.clear()
    return tags


class Kiosk:
    def __init__(self, tmp: Path, url: str) -> None:
        self.pad = M810Simulator(baud=None).start()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.store = Store(tmp / "agent.sqlite3")
        self.lib = Sip2Library(Account.from_url(url))
        self.reader = M810Reader(self.pad.port)
        self.blocked: set[str] = set()
        self.flow = SelfCheck(
            self.lib,
            self.reader,
            OfflineDesk(self.store, OfflineRules(max_items_per_reader=3)),
            lambda t, p: self.events.append((t, p)),
            blocked=lambda pid: pid in self.blocked,
        )

    def put(self, *items: str) -> list[SimTag]:
        tags = fresh(*items)
        self.pad.clear()
        self.pad.place(*tags)
        return tags

    def session(self, patron: str = READER, **kw: Any) -> Session:
        s = self.flow.identify(patron, kw.pop("via", "card_qr"), **kw)
        assert isinstance(s, Session), s
        return s

    def close(self) -> None:
        self.reader.close()
        self.lib.close()
        self.pad.stop()
        self.store.close()


@pytest.fixture
def kiosk(tmp_path: Path, ils: Dummy) -> Iterator[Kiosk]:
    k = Kiosk(tmp_path, ils.url)
    yield k
    k.close()


def test_a_reader_borrows_a_stack_and_returns_it(kiosk: Kiosk, ils: Dummy) -> None:
    session = kiosk.session()
    assert session.name == "Trần Thị Bình" and not session.offline
    tags = kiosk.put("30000001", "30000002", "30000003")
    results = kiosk.flow.borrow()
    assert sorted(r.item_id for r in results if r.ok) == ["30000001", "30000002", "30000003"]
    assert {r.title for r in results} >= {"Truyện Kiều — Nguyễn Du"}
    assert all(r.due and r.due[:2] == "20" for r in results)
    assert {t.afi for t in tags} == {0xC2}  # security off, each read back
    assert all(t.commands[-2:] == ["write_afi", "read_afi"] for t in tags)
    assert kiosk.lib.item("30000001").circulation_status == "charged"
    # the same stack again in the same session is not lent twice
    assert kiosk.flow.borrow() == []
    kiosk.flow.end()
    checkouts = [p for t, p in kiosk.events if t == "circ.checkout"]
    assert len(checkouts) == 3 and {p["result"] for p in checkouts} == {"ok"}
    assert all(p["patron_id"] == READER and p["security"] == "off" for p in checkouts)
    assert not any("Bình" in str(p) or "Truyện" in str(p) for _, p in kiosk.events)  # no names
    # return: checkin, security on, the sort bin
    kiosk.put("30000001", "30000002", "30000003")
    back = kiosk.flow.give_back()
    assert all(r.ok and r.problem is None and r.sort_bin == "A1" for r in back)
    assert {t.afi for t in tags} == {0x07}
    assert kiosk.lib.item("30000002").circulation_status == "available"
    assert [p["result"] for t, p in kiosk.events if t == "circ.checkin"] == ["ok"] * 3


def test_items_without_a_tag_by_barcode_one_by_one(kiosk: Kiosk) -> None:
    kiosk.session()
    kiosk.put()
    r = kiosk.flow.borrow_barcode("30000002")
    assert r.ok and not r.tagged and r.due and r.title.startswith("Dế Mèn")
    assert kiosk.flow.borrow_barcode("30000008").problem == "refused"  # on hold
    fee = kiosk.flow.borrow_barcode("30000007")
    assert fee.problem == "fee_required"
    assert kiosk.flow.borrow_barcode("30000007", fee_ack=True).ok
    assert kiosk.flow.session is not None
    assert [x.item_id for x in kiosk.flow.session.borrowed] == ["30000002", "30000007"]
    kiosk.flow.end()
    back = kiosk.flow.give_back_barcode("30000002")
    assert back.ok and back.sort_bin == "A1"
    events = [(t, p["security"]) for t, p in kiosk.events if p.get("item_id") == "30000002"]
    assert events == [("circ.checkout", "none"), ("circ.checkin", "none")]


def test_a_hold_goes_to_its_bin_and_cannot_be_borrowed(kiosk: Kiosk) -> None:
    kiosk.session()
    kiosk.put("30000008")
    (r,) = kiosk.flow.borrow()
    assert not r.ok and r.problem == "refused" and "giữ cho bạn đọc khác" in r.message
    assert kiosk.pad.tags[0].afi == 0x07
    (back,) = kiosk.flow.give_back()
    assert back.ok and back.sort_bin == "B2" and "khay giữ chỗ" in back.message


def test_a_tag_lifted_before_its_security_write_is_not_borrowed(kiosk: Kiosk) -> None:
    kiosk.session()
    tags = kiosk.put("30000004", "30000005")
    tags[0].lift_on = "write_afi"
    results = {r.item_id: r for r in kiosk.flow.borrow()}
    assert results["30000004"].problem == "tag_lifted" and not results["30000004"].ok
    assert results["30000005"].ok
    assert tags[0].afi == 0x07  # still secured
    assert kiosk.lib.item("30000004").circulation_status == "available"  # the loan undone
    (ev,) = [p for t, p in kiosk.events if t == "circ.checkout" and p["item_id"] == "30000004"]
    assert ev["result"] == "tag_lifted" and ev["ils_ok"] is False


def test_a_tag_that_will_not_switch_is_not_borrowed(kiosk: Kiosk) -> None:
    kiosk.session()
    (tag,) = kiosk.put("30000006")
    tag.ignore_afi_writes = True
    (r,) = kiosk.flow.borrow()
    assert r.problem == "security_failed" and not r.ok
    assert kiosk.lib.item("30000006").circulation_status == "available"


def test_a_set_is_lent_only_whole(kiosk: Kiosk) -> None:
    kiosk.session()
    first, second = TAGS["30000011"]
    kiosk.put()
    kiosk.pad.place(first)
    (r,) = kiosk.flow.borrow()
    assert r.problem == "incomplete_set" and r.message == "1/2"
    assert kiosk.lib.item("30000011").circulation_status == "available"  # never asked
    kiosk.pad.place(second)
    (r,) = kiosk.flow.borrow()
    assert r.ok and r.parts == 2
    assert first.afi == second.afi == 0xC2


def test_a_loan_with_a_charge_asks_first(kiosk: Kiosk) -> None:
    kiosk.session()
    kiosk.put("30000007")
    (r,) = kiosk.flow.borrow()
    assert r.problem == "fee_required" and r.fee == "5000" and "5.000" in r.message
    (r,) = kiosk.flow.borrow(fee_ack={"30000007"})  # the reader agreed: BO=Y
    assert r.ok


def test_who_may_not_borrow(kiosk: Kiosk) -> None:
    blocked = kiosk.flow.identify("P000900", "card_qr")
    assert isinstance(blocked, Refused) and blocked.reason == "reader_blocked"
    unknown = kiosk.flow.identify("P999999", "card_qr")
    assert isinstance(unknown, Refused) and unknown.reason == "unknown_reader"
    wrong = kiosk.flow.identify("P000101", "barcode_pin", pin="0000")
    assert isinstance(wrong, Refused) and wrong.reason == "wrong_pin"
    assert isinstance(kiosk.flow.identify("P000101", "barcode_pin", pin="1234"), Session)
    kiosk.flow.can_record = lambda: False
    full = kiosk.flow.identify("P000101", "card_qr")
    assert isinstance(full, Refused) and full.reason == "storage_full"


def test_unreadable_tags_are_named_not_guessed(kiosk: Kiosk) -> None:
    kiosk.session()
    (tag,) = kiosk.put("30000009")
    tag.memory[1] = 200
    (r,) = kiosk.flow.borrow()
    assert r.problem == "unreadable_tag" and "at byte 0" in r.message and r.item_id == tag.uid


def test_offline_lending_and_reconciliation(kiosk: Kiosk, ils: Dummy) -> None:
    kiosk.session("P000103")
    ils.stop()  # the library system goes away mid-session
    kiosk.put("30000001", "30000002", "30000010")
    results = {r.item_id: r for r in kiosk.flow.borrow()}
    assert results["30000001"].ok and results["30000001"].offline and results["30000001"].due
    assert results["30000002"].ok
    assert results["30000010"].problem == "not_while_offline"  # its tag says so
    assert kiosk.flow.session is not None and kiosk.flow.session.offline
    assert {t.afi for t in TAGS["30000001"] + TAGS["30000002"]} == {0xC2}
    kiosk.flow.end()
    # offline, a PIN cannot be checked, and the synced block list is
    assert isinstance(r := kiosk.flow.identify("P000101", "barcode_pin", pin="1234"), Refused)
    assert r.reason == "pin_offline"
    kiosk.blocked.add("P000104")
    assert isinstance(r := kiosk.flow.identify("P000104", "face"), Refused)
    assert r.reason == "reader_blocked"
    assert not kiosk.flow.probe()
    ils.start()
    assert kiosk.flow.probe()
    out = kiosk.flow.offline.forward(kiosk.lib)
    assert out.done == 2 and out.pending == 0 and not out.refused
    assert kiosk.lib.item("30000001").circulation_status == "charged"


# -- the station: what the screen drives ---------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, etype: str, payload: dict[str, Any]) -> None:
        self.events.append((etype, payload))


def station_config(tmp: Path, url: str) -> Any:
    from biblioedge.agent.config import validate_config

    return validate_config(
        {
            "role": "selfcheck",
            "site": "tv-tinh",
            "device_id": "sc-01",
            "data_dir": str(tmp),
            "selfcheck": {
                "enabled": True,
                "ils": url,
                "rfid": "sim",
                "probe_s": 0.3,
                "session_timeout_s": 30,
                "receipt": f"dir:{tmp / 'receipts'}",
            },
        }
    )


async def until(station: Any, *steps: str, within: float = 15) -> None:
    import asyncio

    for _ in range(int(within / 0.05)):
        if station.view.step in steps:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"stuck at {station.view}")


@contextlib.asynccontextmanager
async def running(tmp: Path, url: str, record: Recorder | None = None) -> AsyncIterator[Any]:
    """The station as the agent builds it (simulated pad), its loop running."""
    from biblioedge.agent.selfcheck.build import build_selfcheck
    from biblioedge.agent.supervisor import Context

    cfg = station_config(tmp, url)
    station, closables = await build_selfcheck(
        lambda: cfg, record or Recorder(), None, lambda: True
    )
    task = asyncio.create_task(station.run(Context("selfcheck", 30)))
    try:
        await until(station, "idle")
        yield station
        assert not task.done(), task
    finally:
        task.cancel()
        for c in closables:
            c.close()


@pytest.mark.asyncio
async def test_the_station_from_barcode_and_pin_to_receipt_and_back(
    tmp_path: Path, ils: Dummy
) -> None:
    record = Recorder()
    async with running(tmp_path, ils.url, record) as station:
        station.scanned("P000101")
        await until(station, "pin")
        station.pin("1234")
        await until(station, "ready")
        assert station.view.name == "Nguyễn Văn An"
        books = [t for item in ("30000001", "30000003") for t in TAGS[item]]
        for tag in books:
            tag.afi = 0x07
        station.simulator.place(*books)
        await until(station, "results")
        assert [r.ok for r in station.view.items] == [True, True]
        station.tap("finish")
        await until(station, "receipt")
        (slip,) = (tmp_path / "receipts").glob("*.png")  # printed, and shown
        assert station.view.message == "selfcheck_receipt_printed"
        assert "Truyện Kiều" in station.view.receipt and "P000101" not in station.view.receipt
        station.tap("new_session")
        await until(station, "idle")
        station.tap("return")
        await until(station, "ready")
        station.simulator.clear()
        station.simulator.place(*books)
        await until(station, "returned")
        assert {r.sort_bin for r in station.view.items} == {"A1"}
        assert {t.afi for t in books} == {0x07}
        # an item without a tag, by its barcode, in return mode
        station.scanned("30000002")
        for _ in range(100):
            if len(station.view.items) == 3:
                break
            await asyncio.sleep(0.05)
        assert (
            station.view.items[-1].item_id == "30000002" and station.view.items[-1].sort_bin == "A1"
        )
        kinds = [t for t, _ in record.events]
        assert kinds.count("circ.checkout") == 2 and kinds.count("circ.checkin") == 3
        # the same reader now borrows: the pad is for lending again, not for returning
        station.scanned("P000101")
        await until(station, "pin")
        station.pin("1234")
        await until(station, "ready")
        station.simulator.clear()
        station.simulator.place(*fresh("30000004"))
        await until(station, "results")
        assert [r.item_id for r in station.view.items if r.ok] == ["30000004"]
        assert station.stories[0].startswith("P000101 mượn 2 tài liệu")


@pytest.mark.asyncio
async def test_the_station_lends_offline_and_reconciles_when_the_system_returns(
    tmp_path: Path, ils: Dummy
) -> None:
    record = Recorder()
    async with running(tmp_path, ils.url, record) as station:
        ils.stop()
        for _ in range(100):  # the probe notices, and the screen shows it
            if not station.flow.online and station.view.offline:
                break
            await asyncio.sleep(0.05)
        assert not station.flow.online and station.view.offline
        station.scanned("P000104")
        await until(station, "pin")
        station.pin("1234")
        await until(station, "refused")
        assert station.view.message == "selfcheck_refused_pin_offline"
        station.tap("new_session")
        await until(station, "idle")
        station.face("P000104")  # recognised by the camera: allowed offline
        await until(station, "ready")
        books = [t for item in ("30000005", "30000008") for t in TAGS[item]]
        for tag in books:
            tag.afi = 0x07
        station.simulator.place(*books)
        await until(station, "results")
        assert all(r.ok and r.offline for r in station.view.items)
        station.tap("finish")
        await until(station, "receipt")
        station.tap("new_session")
        await until(station, "idle")
        assert station.offline.pending() == 2
        ils.start()
        for _ in range(200):
            if any(t == "circ.reconciled" for t, _ in record.events):
                break
            await asyncio.sleep(0.05)
        (rec,) = [p for t, p in record.events if t == "circ.reconciled"]
        assert rec == {"done": 1, "refused": 1, "pending": 0}  # 30000008 is on hold
        (att,) = [p for t, p in record.events if t == "circ.attention"]
        assert att["item_id"] == "30000008" and "Contact the reader" in att["action"]
        assert station.view.pending == 0


async def test_the_station_says_out_of_service_when_the_reader_dies_and_recovers(
    tmp_path: Path, ils: Dummy
) -> None:
    async with running(tmp_path, ils.url) as station:
        station.scanned("P000102")
        await until(station, "pin")
        station.pin("1234")
        await until(station, "ready")
        station.simulator.mute = True  # the pad's cable is pulled
        await until(station, "out_of_service")
        assert station.view.message == "selfcheck_reader_problem"
        station.simulator.mute = False
        await until(station, "idle")
        assert station.flow.session is None  # the reader starts over, nothing half done

""" "My account" at the self-check, through the station the screen drives: the dummy library
system as a real process (with and without the summary fields and 65), and invenio-sip2 as
an outside SIP2 server (tests/invenio_sip2_server.py, its own environment)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_selfcheck import Recorder, fresh, running, until
from test_sip2 import invenio_python  # noqa: F401 - the fixture

from biblioedge.demo.launch import free_port, wait_port
from biblioedge.drivers.sip2.client import Account
from biblioedge.drivers.sip2.library import Sip2Library

CLI = [sys.executable, "-m", "biblioedge"]


class Dummy(str):
    """The account URL of a dummy library system, with its process (to stop it mid-test)."""

    proc: subprocess.Popen[bytes]


@pytest.fixture
def dummy(request: pytest.FixtureRequest) -> Iterator[Dummy]:
    """The dummy library system with the options the test asks (``sip serve`` flags)."""
    port = free_port()
    flags = getattr(request, "param", [])
    proc = subprocess.Popen(
        [*CLI, "sip", "serve", "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port("127.0.0.1", port, 30)
        url = Dummy(
            f"sip2://kiosk:kiosk@127.0.0.1:{port}?institution=TVTN&location=sc-01&timeout=5"
        )
        url.proc = proc
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


async def signed_in(station: object, patron: str = "P000102") -> None:
    station.scanned(patron)  # type: ignore[attr-defined]
    await until(station, "pin")
    station.pin("1234")  # type: ignore[attr-defined]
    await until(station, "ready")


async def wait_for(station: object, check: object, within: float = 30) -> None:
    import asyncio

    for _ in range(int(within / 0.05)):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"stuck at {station.view}")  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_loans_with_due_dates_holds_renew_one_and_all(tmp_path: Path, dummy: str) -> None:
    record = Recorder()
    async with running(tmp_path, dummy, record) as station:
        await signed_in(station)
        assert "account" in station.view.actions
        station.simulator.place(*fresh("30000001", "30000002"))
        await until(station, "results")
        await wait_for(station, lambda: len(station.view.items) == 2)
        shown = station.view.items
        station.tap("account")
        await until(station, "account")
        acc = station.view.account
        assert acc is not None and not acc.offline and acc.listed
        assert {x.item_id for x in acc.loans} == {"30000001", "30000002"}
        assert all(x.due and x.title for x in acc.loans)
        assert [h.title for h in acc.holds] == ["Từ điển Tiếng Việt"]  # waiting for her
        assert station.view.actions == ("renew_all", "back", "finish")
        station.tap("renew:30000001")
        await wait_for(
            station,
            lambda: (
                station.view.step == "account"
                and any(x.outcome == "renewed" for x in station.view.account.loans)
            ),
        )
        station.tap("renew_all")
        await wait_for(
            station,
            lambda: (
                station.view.step == "account"
                and all(x.outcome == "renewed" for x in station.view.account.loans)
            ),
        )
        renewals = [p for t, p in record.events if t == "circ.renew"]
        assert len(renewals) == 3 and all(p["result"] == "ok" for p in renewals)
        assert {p["renewal"] for p in renewals} == {"one", "all"}
        assert all(p["patron_id"] == "P000102" for p in renewals)
        station.tap("back")  # back to what she borrowed
        await until(station, "results")
        assert station.view.items == shown


@pytest.mark.asyncio
async def test_fees_are_shown(tmp_path: Path, dummy: str) -> None:
    async with running(tmp_path, dummy) as station:
        station.scanned("P000901")  # owes fees: may not borrow, may see why
        await until(station, "pin")
        station.pin("1234")
        await until(station, "refused")
        assert station.view.actions == ("account", "new_session")
        station.tap("account")
        await until(station, "account")
        acc = station.view.account
        assert acc.fees == "25000" and acc.listed and acc.loans == ()
        assert acc.fine_lines and "25.000" in acc.fine_lines[0]
        assert station.view.actions == ("finish",)  # nothing to renew, nothing to borrow
        station.tap("finish")
        await until(station, "idle")


@pytest.mark.parametrize("dummy", [["--without-summary", "--without-renew-all"]], indirect=True)
@pytest.mark.asyncio
async def test_a_library_system_that_does_not_list_is_said_so(tmp_path: Path, dummy: str) -> None:
    record = Recorder()
    async with running(tmp_path, dummy, record) as station:
        await signed_in(station)
        station.simulator.place(*fresh("30000003"))
        await until(station, "results")
        station.tap("account")
        await until(station, "account")
        acc = station.view.account
        assert not acc.offline and not acc.listed and acc.loans == () and acc.charged == 1
        assert not acc.holds_listed  # counts say one is waiting, but no list
        station.tap("renew_all")  # no 65 there, and no list to renew one by one with 29
        await wait_for(
            station,
            lambda: (
                station.view.step == "account"
                and station.view.account.note == "renew_all_unavailable"
            ),
        )
        assert station.view.actions == ("back", "finish")  # not offered again
        assert not [t for t, _ in record.events if t == "circ.renew"]


@pytest.mark.asyncio
async def test_offline_it_says_what_it_cannot_know(tmp_path: Path, dummy: Dummy) -> None:
    async with running(tmp_path, dummy) as station:
        await signed_in(station)
        # the library system goes away: the account step cannot read it
        dummy.proc.terminate()
        dummy.proc.wait(10)
        station.tap("account")
        await until(station, "account", within=60)
        acc = station.view.account
        assert acc.offline and not acc.listed and acc.loans == ()
        assert station.view.message == "selfcheck_account_offline"
        assert station.view.actions == ("back", "finish")
        station.tap("back")
        await until(station, "ready")
        station.simulator.place(*fresh("30000004"))  # lent offline, within the limits
        await until(station, "results", within=30)
        station.tap("account")
        await until(station, "account", within=30)
        acc = station.view.account
        assert acc.offline and [x.item_id for x in acc.loans] == ["30000004"]


def test_invenio_sip2_lists_loans_and_without_63_says_it_cannot(
    invenio_python: str,  # noqa: F811
) -> None:
    server = Path(__file__).with_name("invenio_sip2_server.py")
    for flags in ([], ["--without-63"]):
        port = free_port()
        proc = subprocess.Popen(
            [invenio_python, str(server), str(port), *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port("127.0.0.1", port, 120)
            url = f"sip2://kiosk:kiosk@127.0.0.1:{port}?institution=TVTN&timeout=3"
            lib = Sip2Library(Account.from_url(url))
            acc = lib.patron_account("P000102")
            lib.close()
        finally:
            proc.terminate()
            proc.wait(10)
        if flags:  # 23 only: fees where given, nothing listed, no counts
            assert not acc.loans_listed and acc.charged is None and acc.loans == []
        else:  # its 63 honours the summary; no 17 here: the ids alone
            assert acc.loans_listed and [x.item for x in acc.loans] == ["30000001", "30000003"]
            assert acc.charged == 2


def test_the_account_screen_lists_renews_and_says_what_it_cannot_know(tmp_path: Path) -> None:
    """The screen's own screenshots, read through the texts they name."""
    import json

    from test_kiosk import screenshots

    out = screenshots("selfcheck", tmp_path, "1280x800")

    def shown(state: str) -> list[str]:
        doc = json.loads((out / f"{state}.texts.json").read_text(encoding="utf-8"))
        return [t["text"] for t in doc]

    account = shown("sc_account")
    assert account.count("Gia hạn") == 2  # one per loan not yet renewed
    assert "Gia hạn tất cả" in account and "Mượn tiếp" in account
    assert any("Quá hạn 28/11/2026" in t for t in account)
    assert any("Đã gia hạn" in t and "30/12/2026" in t for t in account)
    assert any("25.000 đ" in t and "Từ điển Tiếng Việt" in t for t in account)
    offline = shown("sc_account_offline")
    assert "Gia hạn" not in offline and "Ngoại tuyến" in offline
    assert any("chưa xem được sách đang mượn" in t for t in offline)
    assert any("Tắt đèn" in t for t in offline)
    assert any("bạn đang mượn 2 tài liệu" in t for t in shown("sc_account_not_listed"))
    assert "My account" in shown("sc_account_english")
    assert "• • • –" in shown("sc_pin_typed") and "– – – –" in shown("sc_pin")
    boxes = {
        t["text"]: t["box"]
        for t in json.loads((out / "sc_pin.texts.json").read_text(encoding="utf-8"))
    }
    key_bottom = boxes["Xóa"][1] + boxes["Xóa"][3]  # the pad's last row
    assert boxes["Hủy"][1] - key_bottom >= 16  # stands clear of the cancel bar

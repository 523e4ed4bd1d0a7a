"""One card number everywhere (issue 22's open gap): the number the library system holds is
the one printed on the card and the one the self-check names over SIP2, whichever side issues
it (``[ils] card_numbers``).

The library system is the dummy (its Koha-shaped patron API and its SIP2 side, on loopback
TCP) started with no invented patrons: it knows only whom central pushed, like a real Koha.
The self-check is the real flow on the simulated RFID pad, with the gallery a kiosk syncs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ils import SITE, Central, Ils

from biblioedge.agent.gallery_store import GalleryStore
from biblioedge.agent.gallery_sync import GallerySync
from biblioedge.agent.selfcheck.card_numbers import speak_card_numbers
from biblioedge.agent.selfcheck.flow import Refused, SelfCheck, Session
from biblioedge.agent.selfcheck.offline import OfflineDesk, OfflineRules
from biblioedge.agent.store import Store
from biblioedge.drivers.rfid.m810 import M810Reader
from biblioedge.drivers.rfid.sim import M810Simulator
from biblioedge.drivers.sip2.client import Account
from biblioedge.drivers.sip2.library import Sip2Library
from biblioedge.fleet.librarian import LibrarianDesk
from biblioedge.fleet.lifecycle import Lifecycle


@pytest.fixture
def ils() -> Iterator[Ils]:
    d = Ils()
    d.start()
    yield d
    d.stop()


class SelfCheckKiosk:
    """A self-check with its own store, holding the gallery central sends its site."""

    def __init__(self, tmp: Path, ils: Ils, *, mapped: bool = True) -> None:
        self.store = Store(tmp / "selfcheck.sqlite3")
        self.synced = GallerySync(
            self.store, GalleryStore(self.store, b"k" * 32), keep_citizen_ref=True
        )
        self.pad = M810Simulator(baud=None).start()
        self.reader = M810Reader(self.pad.port)
        url = f"sip2://kiosk:kiosk@127.0.0.1:{ils.sip_port}?institution=TVTN&timeout=2"
        self.sip = Sip2Library(Account.from_url(url))
        if mapped:
            speak_card_numbers(self.sip, self.synced.card_number, self.synced.patron_of)
        self.events: list[tuple[str, dict[str, object]]] = []
        self.flow = SelfCheck(
            self.sip,
            self.reader,
            OfflineDesk(self.store, OfflineRules(max_items_per_reader=3)),
            lambda t, p: self.events.append((t, p)),
        )

    def sync(self, central: Central) -> None:
        delta = central.readers.delta(SITE, self.synced.version())
        assert delta is not None and self.synced.apply(delta)

    def close(self) -> None:
        self.reader.close()
        self.sip.close()
        self.pad.stop()
        self.store.close()


@pytest.fixture
def kiosk(tmp_path: Path, ils: Ils) -> Iterator[SelfCheckKiosk]:
    k = SelfCheckKiosk(tmp_path, ils)
    yield k
    k.close()


def test_the_library_systems_number_is_on_the_card_and_in_sip2(
    tmp_path: Path, ils: Ils, kiosk: SelfCheckKiosk
) -> None:
    c = Central(tmp_path, ils.url(), card_numbers="ils")
    try:
        pid, answer = c.register_answer("Nguyễn Thị Hoa")
        # the desk is answered before the library system knows her: no number yet, and the
        # card says so (never central's number, which the library system will not know)
        assert answer["card_number"] == ""
        c.drain()
        (patron,) = ils.patrons()
        koha_number = patron["cardnumber"]
        assert koha_number and koha_number != pid
        assert c.readers.get(pid)["barcode"] == koha_number
        # a card made again (a returning reader) carries the library system's number
        again, answer = c.register_answer("Nguyễn Thị Hoa")
        assert again == pid and answer["card_number"] == koha_number
        c.drain()
        assert [p["cardnumber"] for p in ils.patrons()] == [koha_number]
        # the self-check: her card QR gives central's number, SIP2 is asked with Koha's
        kiosk.sync(c)
        session = kiosk.flow.identify(pid, "card_qr")
        assert isinstance(session, Session) and session.name == "Nguyễn Thị Hoa"
        assert session.patron_id == pid  # the kiosk's events keep central's number
        loan = kiosk.flow.borrow_barcode("30000002")
        assert loan.ok, loan
        # the library system lent it to her card number; renewing names her by it too, and
        # answers that name her come back with central's number
        assert ils.lib.loans["30000002"][0] == koha_number
        renewed = kiosk.sip.renew(pid, "30000002")
        assert renewed.patron_id in ("", pid) and ils.lib.loans["30000002"][0] == koha_number
        assert kiosk.sip.patron(pid).patron_id == pid
        kiosk.flow.end()
        (checkout,) = [p for t, p in kiosk.events if t == "circ.checkout"]
        assert checkout["patron_id"] == pid
    finally:
        c.close()


def test_without_the_mapping_the_library_system_does_not_know_the_patron_number(
    tmp_path: Path, ils: Ils
) -> None:
    """What the mapping fixes: a library system that assigns numbers knows no BE number."""
    c = Central(tmp_path, ils.url(), card_numbers="ils")
    bare = SelfCheckKiosk(tmp_path / "bare", ils, mapped=False)
    try:
        pid = c.register("Lê Văn Tám")
        c.drain()
        bare.sync(c)
        refused = bare.flow.identify(pid, "card_qr")
        assert isinstance(refused, Refused) and refused.reason == "unknown_reader"
    finally:
        bare.close()
        c.close()


def test_desk_numbers_a_replacement_barcode_becomes_the_library_systems_number(
    tmp_path: Path, ils: Ils, kiosk: SelfCheckKiosk
) -> None:
    """With central issuing numbers the card number is the patron number, or the barcode of
    a replacement card: the library system is moved to it, and SIP2 follows."""
    c = Central(tmp_path, ils.url())
    try:
        pid, answer = c.register_answer("Phạm Minh Châu")
        assert answer["card_number"] == pid
        c.drain()
        assert [p["cardnumber"] for p in ils.patrons()] == [pid]
        Lifecycle(c.readers, c.cards).replace(pid, barcode="TV9000001")
        c.drain()
        assert [p["cardnumber"] for p in ils.patrons()] == ["TV9000001"]
        kiosk.sync(c)
        session = kiosk.flow.identify(pid, "card_qr")
        assert isinstance(session, Session) and session.name == "Phạm Minh Châu"
        # the replacement's barcode typed at the PIN pad finds her too
        assert ils.sip_patron("TV9000001").valid and not ils.sip_patron(pid).valid
    finally:
        c.close()


def test_a_card_printed_before_the_number_is_listed_and_printed_again_with_it(
    tmp_path: Path, ils: Ils
) -> None:
    """The clear path while the library system is away: the desk prints the card without a
    number (its QR works at once), central lists it once the number arrives, the librarian
    prints it again with the library system's number."""
    c = Central(tmp_path, ils.url(), card_numbers="ils")
    desk = LibrarianDesk(c.readers, c.cards, "ils")
    try:
        ils.stop()  # the library system is down at registration time
        pid, answer = c.register_answer("Đỗ Thị Mai")
        assert answer["card_number"] == ""
        assert desk.reader(pid).card_number == "" and desk.to_reprint() == []
        c.drain(rounds=2)  # nothing reaches it: the number stays pending
        assert desk.reader(pid).card_number == ""
    finally:
        c.close()
    ils2 = Ils()
    ils2.start()
    try:
        c = Central(tmp_path, ils2.url(), card_numbers="ils")
        desk = LibrarianDesk(c.readers, c.cards, "ils")
        c.drain()
        (patron,) = ils2.patrons()
        number = patron["cardnumber"]
        assert desk.to_reprint() == [(pid, "", number)]
        reader = desk.reader(pid)
        assert reader.card_number == number and reader.needs_reprint
        card = desk.reprint(pid, "thu-thu-lan")
        assert card.card_number == number and "<svg" in card.qr_svg
        assert desk.to_reprint() == [] and not desk.reader(pid).needs_reprint
        c.close()
    finally:
        ils2.stop()

"""Offline lending and forwarding, against the dummy library system as a real process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ils import Dummy

from biblioedge.agent.selfcheck.offline import OfflineDesk, OfflineRules, Refusal
from biblioedge.agent.store import Store
from biblioedge.drivers.sip2.client import Account
from biblioedge.drivers.sip2.library import Circulation, Sip2Library


class Counting(Sip2Library):
    """The real client, counting the checkouts it sends."""

    def __init__(self, account: Account) -> None:
        super().__init__(account)
        self.checkouts = 0

    def checkout(self, patron_id: str, item: str, *, fee_ack: bool = False) -> Circulation:
        self.checkouts += 1
        return super().checkout(patron_id, item, fee_ack=fee_ack)


def never(_: str) -> bool:
    return False


def test_offline_loans_within_limits(tmp_path: Path) -> None:
    desk = OfflineDesk(Store(tmp_path / "a.sqlite3"), OfflineRules(max_items_per_reader=2))
    assert isinstance(desk.lend("P000101", "30000001", blocked=never), tuple)
    assert isinstance(desk.lend("P000101", "30000002", blocked=never), tuple)
    assert desk.lend("P000101", "30000003", blocked=never) == Refusal("offline_limit")
    desk.take_back("30000001")  # a return made offline frees a place
    assert isinstance(desk.lend("P000101", "30000003", blocked=never), tuple)
    assert desk.lend("P000900", "30000004", blocked=lambda p: True) == Refusal("reader_blocked")
    forbidden = desk.lend("P000102", "30000005", blocked=never, offline_forbidden=True)
    assert forbidden == Refusal("not_while_offline")
    desk.store.close()
    again = OfflineDesk(Store(tmp_path / "a.sqlite3"))  # committed: a restart keeps them all
    assert again.pending() == 4


def test_forwarding_checks_each_answer_and_never_lends_twice(tmp_path: Path, ils: Dummy) -> None:
    store = Store(tmp_path / "a.sqlite3")
    desk = OfflineDesk(store)
    for item in ("30000001", "30000002", "30000008", "30000003"):  # 30000008 is on hold
        assert isinstance(desk.lend("P000102", item, blocked=never), tuple)
    desk.take_back("30000002")
    lib = Counting(Account.from_url(ils.url))
    # the agent died after sending the first checkout, before recording its answer
    assert lib.checkout("P000102", "30000001").ok
    store.conn.execute("UPDATE offline_tx SET state = 'sending' WHERE seq = 1")
    seen: list[tuple[int, int]] = []
    out = desk.forward(lib, progress=lambda n, total: seen.append((n, total)))
    assert out.pending == 0 and out.done == 4 and seen[-1] == (5, 5)
    (refused,) = out.refused
    assert refused["item_id"] == "30000008" and "Contact the reader" in refused["action"]
    assert lib.checkouts == 1 + 3  # the one sent before the "crash" was not sent again
    assert lib.item("30000001").circulation_status == "charged"
    assert lib.item("30000002").circulation_status == "available"  # lent, then returned
    lib.close()


def test_a_library_system_that_goes_away_mid_forward_loses_nothing(
    tmp_path: Path, ils: Dummy
) -> None:
    desk = OfflineDesk(Store(tmp_path / "a.sqlite3"), OfflineRules(max_items_per_reader=10))
    items = [f"3000000{i}" for i in range(1, 8)]
    for item in items:
        desk.lend("P000103", item, blocked=never)
    lib = Sip2Library(Account.from_url(ils.url))
    calls = {"n": 0}
    original = lib.checkout

    def flaky(patron: str, item: str, *, fee_ack: bool = False) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            ils.stop()  # the library system dies while the kiosk forwards
        return original(patron, item, fee_ack=fee_ack)

    lib.checkout = flaky  # type: ignore[method-assign]
    first = desk.forward(lib)
    assert first.pending > 0 and first.done == 3
    ils.start()
    lib.checkout = original  # type: ignore[method-assign]
    rest = desk.forward(Sip2Library(Account.from_url(ils.url)))
    assert rest.pending == 0 and first.done + rest.done + len(rest.refused) == len(items)
    check = Sip2Library(Account.from_url(ils.url))
    charged = [check.item(i).circulation_status for i in items]
    # the fresh dummy forgot the first three; the next three are charged exactly once, and
    # 30000007 carries a charge the reader never agreed to: staff must settle it
    assert charged[3:] == ["charged"] * 3 + ["available"]
    assert [r["item_id"] for r in rest.refused] == ["30000007"]
    assert "phí" in rest.refused[0]["message"]

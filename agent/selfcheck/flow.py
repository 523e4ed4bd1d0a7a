"""The self-check: a reader borrows and returns books with no one at the desk.

One session per reader: identify (library-card QR, CCCD QR, face, or patron barcode and PIN)
→ the library system's patron status (blocks and fees shown) → the tags on the pad, all read
at once → a checkout per item, then its security written and read back → receipt. Returning
is the same without a reader: checkin, security on and read back, then the library system's
sort bin or hold message.

What the kiosk promises:

- an item is reported borrowed only when the library system lent it *and* every part's
  security was written and read back; if a tag leaves the pad first, the loan is undone
  (checked in again) and the reader is told to put the book back;
- a multi-part set (ISO 28560 set information) is lent only with every part on the pad;
- when the library system is away, loans go on within the offline rules and are recorded
  before the reader is told (:mod:`biblioedge.agent.selfcheck.offline`); a barcode-and-PIN login is
  refused then, as no one can check the PIN;
- every transaction is an event with patron id, item id, result and timings, never a name or
  a title; anything staff must act on is a ``circ.attention`` event saying what to do.

The flow is synchronous: SIP2 and the RFID reader are blocking serial conversations, so the
agent runs it in a worker thread, one session at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from biblioedge.agent.selfcheck.offline import OfflineDesk, Refusal
from biblioedge.agent.store import NotRecorded
from biblioedge.drivers.errors import DriverError
from biblioedge.drivers.rfid.iso28560 import TagData
from biblioedge.drivers.rfid.reader import (
    AfiScheme,
    PadItem,
    SecurityNotVerified,
    TagGone,
    TagReader,
    read_item,
    set_security,
)
from biblioedge.drivers.sip2.client import ReplyLost
from biblioedge.drivers.sip2.codec import Sip2Error
from biblioedge.drivers.sip2.library import Circulation, LibrarySystem

log = logging.getLogger("biblioedge.agent.selfcheck")

Via = Literal["card_qr", "cccd_qr", "face", "barcode_pin"]
Emit = Callable[[str, dict[str, Any]], None]

#: Patron blocks that stop borrowing (the others, such as renewals denied, do not).
BORROW_BLOCKS = frozenset(
    {
        "charge_privileges_denied",
        "card_reported_lost",
        "too_many_items_charged",
        "too_many_items_overdue",
        "excessive_outstanding_fines",
        "excessive_outstanding_fees",
    }
)
ATTENTION = "circ.attention"


@dataclass(frozen=True)
class ItemResult:
    """One item's outcome. ``problem`` is an i18n key (``selfcheck.problem.*``);
    ``message`` is the library system's own words, shown as they are."""

    item_id: str
    ok: bool
    title: str = ""
    due: str | None = None
    problem: str | None = None
    message: str = ""
    fee: str = ""
    sort_bin: str = ""
    offline: bool = False
    parts: int = 1
    #: False for a barcode item: it has no tag, so the kiosk switched no security
    tagged: bool = True


@dataclass
class Session:
    patron_id: str
    via: Via
    name: str = ""
    blocks: list[str] = field(default_factory=list)
    fees: str = ""
    offline: bool = False
    results: list[ItemResult] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def borrowed(self) -> list[ItemResult]:
        return [r for r in self.results if r.ok]


@dataclass(frozen=True)
class Refused:
    """Why this reader cannot borrow now (an i18n key) and the library system's words."""

    reason: str
    message: str = ""


@dataclass
class Group:
    """The tags of one item on the pad (several for a multi-part set); none for an item
    whose barcode was scanned (it has no tag, so no security to switch)."""

    item_id: str
    tags: list[PadItem]

    @property
    def parts(self) -> int:
        return max((t.data.parts for t in self.tags if t.data), default=1)

    @property
    def complete(self) -> bool:
        if not self.tags:
            return True
        have = {t.data.part for t in self.tags if t.data}
        return have == set(range(1, self.parts + 1))

    @property
    def data(self) -> TagData | None:
        return next((t.data for t in self.tags if t.data), None)


def group(pad: Iterable[PadItem]) -> tuple[list[Group], list[PadItem]]:
    """Items on the pad by primary id, and the tags that could not be read."""
    groups: dict[str, Group] = {}
    unreadable = []
    for tag in pad:
        if tag.data is None:
            unreadable.append(tag)
            continue
        groups.setdefault(
            tag.data.primary_item_id, Group(tag.data.primary_item_id, [])
        ).tags.append(tag)
    return list(groups.values()), unreadable


def _security_word(etype: str, r: ItemResult) -> str:
    if not r.tagged:
        return "none"
    if not r.ok or r.problem is not None:
        return "unchanged"
    return "off" if etype == "circ.checkout" else "on"


class SelfCheck:
    def __init__(
        self,
        library: LibrarySystem,
        reader: TagReader,
        offline: OfflineDesk,
        emit: Emit,
        *,
        afi: AfiScheme | None = None,
        blocked: Callable[[str], bool] = lambda _: False,
        can_record: Callable[[], bool] = lambda: True,
    ) -> None:
        self.library = library
        self.reader = reader
        self.offline = offline
        self.emit = emit
        self.afi = afi or AfiScheme()
        self.blocked = blocked
        self.can_record = can_record
        self.online = True
        self.session: Session | None = None
        #: time spent per kind of work in the last borrow/return (bench, events)
        self.timings: dict[str, float] = {}

    # -- the library system's reachability ------------------------------------------

    def probe(self) -> bool:
        """Ask the library system whether it is there (99); returns and remembers it."""
        try:
            online = self.library.status().online
            if online and not self.online:
                log.warning("library system reachable again")
            self.online = online
        except Sip2Error as exc:
            if self.online:
                log.warning("library system unreachable, lending offline: %s", exc)
            self.online = False
        return self.online

    def went_offline(self, exc: Exception) -> None:
        """The library system stopped answering mid-session (the station's account step)."""
        self._went_offline(exc)

    def _went_offline(self, exc: Exception) -> None:
        log.warning("library system lost mid-session, lending offline: %s", exc)
        self.online = False
        if self.session is not None:
            self.session.offline = True

    # -- identify ----------------------------------------------------------------------

    def identify(self, patron_id: str, via: Via, pin: str | None = None) -> Session | Refused:
        """Start a session for a reader the kiosk recognized (card QR, CCCD QR, face) or who
        typed a barcode and PIN."""
        self.session = None
        if not self.can_record():
            return Refused("storage_full")
        if self.online:
            try:
                patron = self.library.patron(patron_id, pin)
            except Sip2Error as exc:
                self._went_offline(exc)
            else:
                if not patron.valid:
                    return Refused("unknown_reader", patron.screen_message)
                if pin is not None and patron.password_ok is False:
                    return Refused("wrong_pin")
                stops = [b for b in patron.blocks if b in BORROW_BLOCKS]
                self.session = Session(
                    patron_id, via, patron.name, patron.blocks, patron.fees, offline=False
                )
                if stops:
                    self.session = None
                    return Refused("reader_blocked", patron.screen_message or ", ".join(stops))
                return self.session
        if via == "barcode_pin":
            return Refused("pin_offline")  # nobody can check the PIN while the system is away
        if self.blocked(patron_id):
            return Refused("reader_blocked")
        self.session = Session(patron_id, via, offline=True)
        return self.session

    # -- the pad -----------------------------------------------------------------------

    def scan(self) -> list[PadItem]:
        t0 = time.perf_counter()
        found = []
        for uid in self.reader.inventory():
            try:
                found.append(read_item(self.reader, uid, self.afi))
            except TagGone:
                continue  # lifted between inventory and read: it is simply not on the pad
        self.timings["rfid_read_s"] = time.perf_counter() - t0
        return found

    def _security(self, tags: list[PadItem], *, secured: bool) -> str | None:
        """Write and verify every part; the problem key if any part failed."""
        t0 = time.perf_counter()
        try:
            for tag in tags:
                set_security(self.reader, tag.uid, self.afi, secured=secured)
        except TagGone:
            return "tag_lifted"
        except SecurityNotVerified:
            return "security_failed"
        except DriverError as exc:
            log.error("security write failed: %s", exc)
            return "security_failed"
        finally:
            self.timings["rfid_write_s"] = (
                self.timings.get("rfid_write_s", 0.0) + time.perf_counter() - t0
            )
        return None

    def _precheck(self, g: Group, *, offline: bool, kind: str) -> ItemResult | None:
        data = g.data
        if not g.complete:
            have = len({t.data.part for t in g.tags if t.data})
            return ItemResult(
                g.item_id,
                False,
                problem="incomplete_set",
                message=f"{have}/{g.parts}",
                parts=g.parts,
            )
        if data is not None and kind == "checkout" and not data.loanable:
            return ItemResult(g.item_id, False, problem="not_for_loan", parts=g.parts)
        if data is not None and offline and data.offline_forbidden:
            return ItemResult(g.item_id, False, problem="not_while_offline", parts=g.parts)
        return None

    # -- borrow ------------------------------------------------------------------------

    def borrow(self, fee_ack: Iterable[str] = ()) -> list[ItemResult]:
        """Lend what is on the pad to the session's reader. Items already lent in this
        session and still on the pad are not lent again."""
        session = self.session
        if session is None:
            raise RuntimeError("no reader identified")
        self.timings = {"ils_s": 0.0, "rfid_write_s": 0.0}
        acked = set(fee_ack)
        done = {r.item_id for r in session.results if r.ok}
        groups, unreadable = group(self.scan())
        results = [
            ItemResult(tag.uid, False, problem="unreadable_tag", message=tag.error or "")
            for tag in unreadable
        ]
        for g in groups:
            if g.item_id in done:
                continue
            result = self._borrow_one(session, g, g.item_id in acked)
            results.append(result)
        session.results = [r for r in session.results if r.ok] + results
        return results

    def borrow_barcode(self, item_id: str, fee_ack: bool = False) -> ItemResult:
        """Lend an item whose barcode was scanned (no tag on it: nothing to switch)."""
        session = self.session
        if session is None:
            raise RuntimeError("no reader identified")
        self.timings = {"ils_s": 0.0, "rfid_write_s": 0.0}
        result = self._borrow_one(session, Group(item_id, []), fee_ack)
        session.results = [r for r in session.results if r.item_id != item_id] + [result]
        return result

    def give_back_barcode(self, item_id: str) -> ItemResult:
        """Take back an item whose barcode was scanned."""
        self.timings = {"ils_s": 0.0, "rfid_write_s": 0.0}
        t0 = time.perf_counter()
        result = replace(self._return_one(Group(item_id, [])), tagged=False)
        self._event("circ.checkin", self.session, result, t0)
        return result

    def _borrow_one(self, session: Session, g: Group, fee_ack: bool) -> ItemResult:
        t0 = time.perf_counter()
        if not self.can_record():
            return ItemResult(g.item_id, False, problem="storage_full")
        result = self._lend(session, g, fee_ack)
        if not g.tags:
            result = replace(result, tagged=False)
        self._event("circ.checkout", session, result, t0)
        return result

    def _lend(self, session: Session, g: Group, fee_ack: bool) -> ItemResult:
        early = self._precheck(g, offline=session.offline or not self.online, kind="checkout")
        if early is not None:
            return early
        if self.online and not session.offline:
            try:
                loan = self._checkout(session.patron_id, g.item_id, fee_ack)
            except Sip2Error as exc:
                self._went_offline(exc)
            else:
                return self._after_checkout(session, g, loan)
        return self._lend_offline(session, g)

    def _checkout(self, patron_id: str, item: str, fee_ack: bool) -> Circulation:
        t0 = time.perf_counter()
        try:
            return self.library.checkout(patron_id, item, fee_ack=fee_ack)
        except ReplyLost:
            status = self.library.item(item)  # did it happen? the item says
            charged = status.circulation_status == "charged" and status.patron_id in (
                "",
                patron_id,
            )
            return Circulation(
                ok=charged, item=item, title=status.title, patron_id=patron_id, due=status.due
            )
        finally:
            self.timings["ils_s"] = self.timings.get("ils_s", 0.0) + time.perf_counter() - t0

    def _after_checkout(self, session: Session, g: Group, loan: Circulation) -> ItemResult:
        title = loan.title or (g.data.elements.get("title", "") if g.data else "")
        if not loan.ok:
            problem = "fee_required" if loan.fee else "refused"
            return ItemResult(
                g.item_id,
                False,
                title,
                problem=problem,
                message=loan.screen_message,
                fee=loan.fee,
                parts=g.parts,
            )
        failed = self._security(g.tags, secured=False)
        if failed is not None:
            self._undo_checkout(session, g, failed)
            return ItemResult(g.item_id, False, title, problem=failed, parts=g.parts)
        return ItemResult(
            g.item_id,
            True,
            title,
            due=loan.due,
            message=loan.screen_message,
            fee=loan.fee,
            parts=g.parts,
        )

    def _undo_checkout(self, session: Session, g: Group, failed: str) -> None:
        """The loan went through but the item is still secured (or half): take it back, and
        re-secure any part that was already switched."""
        try:
            self.library.checkin(g.item_id)
        except Sip2Error as exc:
            self._attention(
                "loan_not_undone",
                g.item_id,
                session.patron_id,
                "Kiểm tra tài liệu: kiosk đã ghi mượn nhưng không tắt được an ninh, và không"
                " hủy được lượt mượn; trả tài liệu tại quầy / Check the item: the kiosk lent it"
                " but could not switch its security off, nor undo the loan; check it in at the"
                " desk",
            )
            log.error("could not undo the loan of %s: %s", g.item_id, exc)
        for tag in g.tags:
            try:
                set_security(self.reader, tag.uid, self.afi, secured=True)
            except DriverError:
                pass  # a lifted tag keeps the value it had: secured
        log.warning("loan of %s undone: %s", g.item_id, failed)

    def _lend_offline(self, session: Session, g: Group) -> ItemResult:
        data = g.data
        try:
            outcome = self.offline.lend(
                session.patron_id,
                g.item_id,
                blocked=self.blocked,
                offline_forbidden=data is not None and data.offline_forbidden,
            )
        except NotRecorded:
            return ItemResult(g.item_id, False, problem="storage_full", offline=True)
        title = data.elements.get("title", "") if data else ""
        if isinstance(outcome, Refusal):
            return ItemResult(g.item_id, False, title, problem=outcome.reason, offline=True)
        tx, due = outcome
        failed = self._security(g.tags, secured=False)
        if failed is not None:
            self.offline.cancel(tx)
            for tag in g.tags:
                try:
                    set_security(self.reader, tag.uid, self.afi, secured=True)
                except DriverError:
                    pass
            return ItemResult(g.item_id, False, title, problem=failed, offline=True)
        return ItemResult(g.item_id, True, title, due=due, offline=True, parts=g.parts)

    # -- return ------------------------------------------------------------------------

    def give_back(self) -> list[ItemResult]:
        """Return what is on the pad (no reader needed)."""
        self.timings = {"ils_s": 0.0, "rfid_write_s": 0.0}
        groups, unreadable = group(self.scan())
        results = [
            ItemResult(tag.uid, False, problem="unreadable_tag", message=tag.error or "")
            for tag in unreadable
        ]
        for g in groups:
            t0 = time.perf_counter()
            result = self._return_one(g)
            self._event("circ.checkin", self.session, result, t0)
            results.append(result)
        return results

    def _return_one(self, g: Group) -> ItemResult:
        if not self.can_record():
            return ItemResult(g.item_id, False, problem="storage_full")
        early = self._precheck(g, offline=not self.online, kind="checkin")
        if early is not None:
            return early
        title = g.data.elements.get("title", "") if g.data else ""
        offline = False
        if self.online:
            t0 = time.perf_counter()
            try:
                back = self.library.checkin(g.item_id)
            except Sip2Error as exc:
                self._went_offline(exc)
            else:
                if not back.ok:
                    return ItemResult(
                        g.item_id,
                        False,
                        back.title or title,
                        problem="refused",
                        message=back.screen_message,
                    )
                title = back.title or title
                sort_bin, message = back.sort_bin, back.screen_message
                if back.alert and not message:
                    message = "hold"
            finally:
                self.timings["ils_s"] += time.perf_counter() - t0
        if not self.online:
            try:
                self.offline.take_back(g.item_id)
            except NotRecorded:
                return ItemResult(g.item_id, False, title, problem="storage_full")
            offline, sort_bin, message = True, "", ""
        failed = self._security(g.tags, secured=True)
        if failed is not None:
            # returned, but not secured: staff must secure it before it goes back on the shelf
            self._attention(
                "return_not_secured",
                g.item_id,
                None,
                "Bật lại an ninh cho tài liệu đã trả (thẻ RFID không ghi được) / Secure the "
                "returned item again: its RFID tag could not be written",
            )
            return ItemResult(
                g.item_id,
                True,
                title,
                problem=failed,
                sort_bin=sort_bin,
                message=message,
                offline=offline,
                parts=g.parts,
            )
        return ItemResult(
            g.item_id,
            True,
            title,
            sort_bin=sort_bin,
            message=message,
            offline=offline,
            parts=g.parts,
        )

    # -- end ---------------------------------------------------------------------------

    def end(self) -> Session | None:
        """Close the session (35 when online); the session, for the receipt."""
        session, self.session = self.session, None
        if session is not None and self.online and not session.offline:
            end_session = getattr(self.library, "end_session", None)
            if end_session is not None:
                try:
                    end_session(session.patron_id)
                except Sip2Error as exc:
                    log.info("end of session not acknowledged: %s", exc)
        return session

    # -- events ------------------------------------------------------------------------

    def _event(self, etype: str, session: Session | None, r: ItemResult, t0: float) -> None:
        payload: dict[str, Any] = {
            "item_id": r.item_id,
            "result": "ok" if r.ok and r.problem is None else (r.problem or "ok"),
            "ils_ok": r.ok,
            "offline": r.offline,
            "security": _security_word(etype, r),
            "parts": r.parts,
            "ms": round((time.perf_counter() - t0) * 1000, 1),
        }
        if session is not None and etype == "circ.checkout":
            payload["patron_id"] = session.patron_id
            payload["identified_by"] = session.via
        if r.due:
            payload["due_date"] = r.due
        if r.sort_bin:
            payload["sort_bin"] = r.sort_bin
        try:
            self.emit(etype, payload)
        except NotRecorded as exc:
            log.error("%s of %s not recorded: %s", etype, r.item_id, exc)

    def _attention(self, reason: str, item: str, patron: str | None, action: str) -> None:
        payload: dict[str, Any] = {"reason": reason, "item_id": item, "action": action}
        if patron:
            payload["patron_id"] = patron
        try:
            self.emit(ATTENTION, payload)
        except NotRecorded as exc:
            log.error("attention case %s for %s not recorded: %s", reason, item, exc)

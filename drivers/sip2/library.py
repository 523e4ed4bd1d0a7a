"""The library system as the self-check sees it, over SIP2. ``LibrarySystem`` is the
interface a REST connector (Koha's API) can implement as well.

Readers are identified with 63 (patron information). Some servers and ILS drivers do not
implement it: they drop the connection, answer 96 for ever, answer with another message, or
answer a 64 with no counts and no reader (pysip2's default). Then 23 (patron status: name,
valid, blocks, fees where given; no counts) identifies the reader instead, and the library
remembers that for the account (63 is tried again after an hour, in case the first failure
was a passing one). An ACS status whose BX says 63 is not supported settles it at once.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import Any, Protocol

from biblioedge.drivers.sip2.client import Account, ReplyLost, Sip2Client
from biblioedge.drivers.sip2.codec import PATRON_BLOCKS, Reply, Sip2Error, sip_date

log = logging.getLogger("biblioedge.drivers.sip2")

#: After this long on 23, the next identification tries 63 again.
PATRON_INFO_RETRY_S = 3600.0

#: BX flags of the ACS status reply, in the order SIP2 2.00 lists them.
MESSAGES = (
    "patron_status",
    "checkout",
    "checkin",
    "block_patron",
    "sc_acs_status",
    "request_resend",
    "login",
    "patron_information",
    "end_patron_session",
    "fee_paid",
    "item_information",
    "item_status_update",
    "patron_enable",
    "hold",
    "renew",
    "renew_all",
)


@dataclass(frozen=True)
class Status:
    online: bool
    checkout_ok: bool
    checkin_ok: bool
    renewal_ok: bool
    offline_ok: bool
    supported: list[str]
    institution: str
    screen_message: str = ""


@dataclass(frozen=True)
class Patron:
    patron_id: str
    valid: bool
    name: str
    blocks: list[str]
    fees: str
    currency: str
    password_ok: bool | None
    charged: int = 0
    overdue: int = 0
    screen_message: str = ""
    #: the message that identified the reader: "63" (with counts) or "23" (without)
    via: str = "63"


@dataclass(frozen=True)
class Circulation:
    """A checkout, checkin or renewal as the library system answered it."""

    ok: bool
    item: str
    title: str
    patron_id: str = ""
    due: str | None = None  # ISO date when the server's format gives one
    due_raw: str = ""
    desensitize: bool | None = None
    resensitize: bool | None = None
    alert: bool = False
    sort_bin: str = ""
    fee: str = ""
    transaction_id: str = ""
    screen_message: str = ""


@dataclass(frozen=True)
class Item:
    item: str
    title: str
    circulation_status: str
    due: str | None
    patron_id: str
    screen_message: str = ""


@dataclass(frozen=True)
class Loan:
    """An item on the reader's account (a loan, or a hold waiting on the shelf)."""

    item: str
    title: str = ""
    due: str | None = None  # ISO date when the library system gave one
    overdue: bool = False


@dataclass(frozen=True)
class PatronAccount:
    """What the reader has at the library system: "my account" at the self-check.

    ``loans_listed`` / ``holds_listed`` say whether the library system answered the summary
    fields (63 with a summary: AU charged, AT overdue, AS hold items): a server that does not
    (it answers counts only, or identifies readers with 23 and has no counts) leaves the list
    empty and the flag False, so the screen says "the library system did not list them"
    rather than "you have no loans". ``charged`` / ``holds_ready`` are its counts, None when
    it gave none."""

    patron_id: str
    loans: list[Loan]
    holds: list[Loan]
    fees: str
    currency: str
    loans_listed: bool
    holds_listed: bool
    charged: int | None = None
    holds_ready: int | None = None
    fine_items: list[str] = field(default_factory=list)
    screen_message: str = ""


@dataclass(frozen=True)
class RenewAll:
    """A renew-all (65/66) as the library system answered it."""

    ok: bool
    renewed: list[str]
    unrenewed: list[str]
    screen_message: str = ""


#: summary positions of 63 (SIP2 2.00): hold items, overdue, charged, fine, recall, unavail.
SUMMARY_HOLDS, SUMMARY_CHARGED, SUMMARY_FINES = 0, 2, 3
#: at most this many loans are looked up one by one (17) for their titles and due dates
MAX_LISTED = 30


CIRCULATION_STATUS = {
    "01": "other",
    "02": "on_order",
    "03": "available",
    "04": "charged",
    "05": "charged_not_to_be_recalled",
    "06": "in_process",
    "07": "recalled",
    "08": "waiting_on_hold_shelf",
    "09": "waiting_to_be_reshelved",
    "10": "in_transit",
    "11": "claimed_returned",
    "12": "lost",
    "13": "missing",
}


class LibrarySystem(Protocol):
    def status(self) -> Status: ...

    def patron(self, patron_id: str, password: str | None = None) -> Patron: ...

    def checkout(self, patron_id: str, item: str, *, fee_ack: bool = False) -> Circulation: ...

    def checkin(self, item: str) -> Circulation: ...

    def renew(self, patron_id: str, item: str) -> Circulation: ...

    def item(self, item: str) -> Item: ...

    def patron_account(self, patron_id: str, password: str | None = None) -> PatronAccount: ...

    def renew_all(self, patron_id: str, password: str | None = None) -> RenewAll: ...


def due_date(raw: str) -> str | None:
    """ISO date from the forms servers use (YYYYMMDD[ZZZZHHMMSS], YYYY-MM-DD, DD/MM/YYYY)."""
    text = raw.strip()
    for pattern, order in (
        (r"^(\d{4})(\d{2})(\d{2})", "ymd"),
        (r"^(\d{4})-(\d{2})-(\d{2})", "ymd"),
        (r"^(\d{2})/(\d{2})/(\d{4})", "dmy"),
    ):
        m = re.match(pattern, text)
        if m:
            a, b, c = (int(g) for g in m.groups())
            y, mo, d = (a, b, c) if order == "ymd" else (c, b, a)
            try:
                return date(y, mo, d).isoformat()
            except ValueError:
                return None
    return None


def _screen(reply: Reply) -> str:
    return " ".join(reply.all("AF")).strip()


def _blocks(reply: Reply) -> list[str]:
    """The patron status flags of a 24 or 64 (the first 14 characters of either)."""
    return [name for name, f in zip(PATRON_BLOCKS, reply.fixed[:14], strict=False) if f == "Y"]


class Sip2Library:
    """LibrarySystem over one SIP2 connection (kept open, reopened when it drops)."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.client = Sip2Client(account)
        #: since when (monotonic) readers of this account are identified with 23, and why
        self._on_23: tuple[float, str] | None = None

    @property
    def patron_message(self) -> str:
        """The message the next identification uses: "63" or "23"."""
        if self.account.patron != "auto":
            return self.account.patron
        if self._on_23 is None:
            return "63"
        return "23" if time.monotonic() - self._on_23[0] < PATRON_INFO_RETRY_S else "63"

    def _remember_23(self, why: str) -> None:
        if self._on_23 is None:
            log.warning("identifying readers with 23 (patron status) from now on: %s", why)
        self._on_23 = (time.monotonic(), why)

    def close(self) -> None:
        self.client.close()

    def _common(self) -> list[tuple[str, str | None]]:
        return [("AO", self.account.institution)]

    def status(self) -> Status:
        r = self.client.request("99", "0" + "080" + "2.00", [], "98")
        bx = r.get("BX")
        if len(bx) > 7 and bx[0] == "Y" and bx[7] == "N" and self.account.patron == "auto":
            self._remember_23("its ACS status says it does not support 63")
        return Status(
            online=r.flag(0),
            checkin_ok=r.flag(1),
            checkout_ok=r.flag(2),
            renewal_ok=r.flag(3),
            offline_ok=r.flag(5),
            supported=[m for m, f in zip(MESSAGES, bx, strict=False) if f == "Y"],
            institution=r.get("AO"),
            screen_message=_screen(r),
        )

    def patron(self, patron_id: str, password: str | None = None) -> Patron:
        """The reader's status, by 63 or, where the server cannot answer 63, by 23."""
        if self.patron_message == "23":
            return self._patron_status(patron_id, password)
        fields = [*self._common(), ("AA", patron_id), ("AC", ""), ("AD", password)]
        try:
            r = self.client.request("63", "000" + sip_date() + " " * 10, fields, "64")
        except ReplyLost as exc:  # it went out, no usable answer (not: unreachable, login)
            if self.account.patron == "63":
                raise
            log.warning("no usable answer to 63 (%s): asking 23", exc)
            found = self._patron_status(patron_id, password)  # a Sip2Error if 23 fails too
            self._remember_23(f"63 went unanswered ({exc})")
            return found
        found = self._patron_information(r, patron_id)
        counts = r.fixed[35:59]
        if self.account.patron == "auto" and not found.valid and not counts.strip():
            # no counts and no reader: how servers without a 63 handler answer it. A 23 that
            # knows the reader proves it; one that does not leaves the 64's answer standing.
            try:
                by_status = self._patron_status(patron_id, password)
            except Sip2Error:
                return found
            if by_status.valid:
                self._remember_23("its 63 answers with neither counts nor reader")
                return by_status
            return found
        if self._on_23 is not None:
            log.info("63 answers again: identifying readers with it")
            self._on_23 = None
        return found

    def _patron_information(self, r: Reply, patron_id: str) -> Patron:
        counts = r.fixed[35:59]

        def count(i: int) -> int:
            piece = counts[i * 4 : i * 4 + 4].strip()
            return int(piece) if piece.isdigit() else 0

        return Patron(
            patron_id=r.get("AA", patron_id),
            valid=r.get("BL", "N") == "Y",
            name=r.get("AE"),
            blocks=_blocks(r),
            fees=r.get("BV"),
            currency=r.get("BH"),
            password_ok=None if "CQ" not in r.fields else r.get("CQ") == "Y",
            charged=count(2),
            overdue=count(1),
            screen_message=_screen(r),
        )

    def _patron_status(self, patron_id: str, password: str | None) -> Patron:
        """23 patron status: name, valid, blocks and fees where the server gives them. AD is
        required in 23 (empty when the reader gave no PIN), unlike in 63."""
        fields = [*self._common(), ("AA", patron_id), ("AC", ""), ("AD", password or "")]
        r = self.client.request("23", "000" + sip_date(), fields, "24")
        return Patron(
            patron_id=r.get("AA", patron_id),
            valid=r.get("BL", "N") == "Y",
            name=r.get("AE"),
            blocks=_blocks(r),
            fees=r.get("BV"),
            currency=r.get("BH"),
            password_ok=None if "CQ" not in r.fields else r.get("CQ") == "Y",
            screen_message=_screen(r),
            via="23",
        )

    def checkout(self, patron_id: str, item: str, *, fee_ack: bool = False) -> Circulation:
        fields = [*self._common(), ("AA", patron_id), ("AB", item), ("AC", "")]
        fields.append(("BO", "Y" if fee_ack else "N"))
        r = self.client.request("11", "NN" + sip_date() + sip_date(), fields, "12")
        return self._circulation(r, item, desensitize=r.fixed[3:4] == "Y")

    def checkin(self, item: str) -> Circulation:
        fields = [("AP", self.account.location), *self._common(), ("AB", item), ("AC", "")]
        r = self.client.request("09", "N" + sip_date() + sip_date(), fields, "10")
        return self._circulation(r, item, resensitize=r.fixed[1:2] == "Y", alert=r.flag(3))

    def renew(self, patron_id: str, item: str) -> Circulation:
        fields = [*self._common(), ("AA", patron_id), ("AB", item), ("AC", "")]
        r = self.client.request("29", "NN" + sip_date() + sip_date(), fields, "30")
        return self._circulation(r, item, desensitize=r.fixed[3:4] == "Y")

    def item(self, item: str) -> Item:
        r = self.client.request("17", sip_date(), [*self._common(), ("AB", item), ("AC", "")], "18")
        due_raw = r.get("AH")
        return Item(
            item=r.get("AB", item),
            title=r.get("AJ"),
            circulation_status=CIRCULATION_STATUS.get(r.fixed[:2], "unknown"),
            due=due_date(due_raw) if due_raw else None,
            patron_id=r.get("AA"),
            screen_message=_screen(r),
        )

    def _summary(self, patron_id: str, password: str | None, position: int) -> Reply:
        summary = "".join("Y" if i == position else " " for i in range(10))
        fields = [*self._common(), ("AA", patron_id), ("AC", ""), ("AD", password)]
        return self.client.request("63", "000" + sip_date() + summary, fields, "64")

    def patron_account(self, patron_id: str, password: str | None = None) -> PatronAccount:
        """The reader's loans with due dates, holds waiting and fees: 63 with one summary
        position at a time (charged, hold items, fine items, as servers answer one list per
        request), then 17 per loan for its title and due date (AU carries item ids only on
        most servers). A server on 23 (no 63) gives fees and nothing listed."""
        charged: Reply | None = None
        if self.patron_message != "23":
            try:
                charged = self._summary(patron_id, password, SUMMARY_CHARGED)
            except ReplyLost as exc:  # as in patron(): a server without 63
                if self.account.patron == "63":
                    raise
                self._remember_23(f"63 went unanswered ({exc})")
        if charged is None:
            found = self._patron_status(patron_id, password)
            return PatronAccount(
                patron_id,
                [],
                [],
                found.fees,
                found.currency,
                False,
                False,
                screen_message=found.screen_message,
            )
        counts = charged.fixed[35:59]

        def count(i: int) -> int | None:
            piece = counts[i * 4 : i * 4 + 4].strip()
            return int(piece) if piece.isdigit() else None

        n_charged, n_holds = count(2), count(0)
        overdue = {v.strip() for v in charged.all("AT")}
        ids = [v.strip() for v in charged.all("AU") if v.strip()]
        loans = self._loans(ids, overdue)
        holds: list[Loan] = []
        holds_listed = n_holds == 0
        if n_holds is None or n_holds > 0:
            try:
                names = [
                    v.strip()
                    for v in self._summary(patron_id, password, SUMMARY_HOLDS).all("AS")
                    if v.strip()
                ]
            except Sip2Error as exc:  # the loans stand without the holds
                log.info("no hold items for %s: %s", patron_id, exc)
                names = []
            holds = [replace(x, due=None) for x in self._loans(names, set())]
            holds_listed = bool(names)
        fines: list[str] = []
        if charged.get("BV").strip() not in ("", "0", "0.00"):
            with contextlib.suppress(Sip2Error):  # the amount stands without the lines
                fines = [v for v in self._summary(patron_id, password, SUMMARY_FINES).all("AV")]
        return PatronAccount(
            patron_id=charged.get("AA", patron_id),
            loans=loans,
            holds=holds,
            fees=charged.get("BV"),
            currency=charged.get("BH"),
            loans_listed=bool(ids) or n_charged == 0,
            holds_listed=holds_listed,
            charged=n_charged,
            holds_ready=n_holds,
            fine_items=fines,
            screen_message=_screen(charged),
        )

    def _loans(self, ids: list[str], overdue: set[str]) -> list[Loan]:
        """Each item's title and due date from 17; ids alone past ``MAX_LISTED`` or once 17
        went unanswered (a server without it would make the reader wait once per loan)."""
        out: list[Loan] = []
        asking = True
        for n, item in enumerate(ids):
            if asking and n < MAX_LISTED:
                try:
                    info = self.item(item)
                except ReplyLost as exc:
                    log.info("no item information (%s): listing item ids only", exc)
                    asking = False
                else:
                    out.append(Loan(item, info.title, info.due, item in overdue))
                    continue
            out.append(Loan(item, overdue=item in overdue))
        return out

    def renew_all(self, patron_id: str, password: str | None = None) -> RenewAll:
        """65 renew all; servers that do not implement it raise UnexpectedReply or ReplyLost
        (the caller renews one by one with 29 then)."""
        fields = [*self._common(), ("AA", patron_id), ("AD", password), ("AC", "")]
        fields.append(("BO", "N"))
        r = self.client.request("65", sip_date(), fields, "66")
        return RenewAll(
            ok=r.fixed[:1] == "1",
            renewed=r.all("BM"),
            unrenewed=r.all("BN"),
            screen_message=_screen(r),
        )

    def end_session(self, patron_id: str) -> bool:
        r = self.client.request("35", sip_date(), [*self._common(), ("AA", patron_id)], "36")
        return r.flag(0)

    @staticmethod
    def _circulation(r: Reply, item: str, **flags: Any) -> Circulation:
        due_raw = r.get("AH")
        return Circulation(
            ok=r.fixed[:1] == "1",
            item=r.get("AB", item),
            title=r.get("AJ"),
            patron_id=r.get("AA"),
            due=due_date(due_raw) if due_raw else None,
            due_raw=due_raw,
            sort_bin=r.get("CL"),
            fee=r.get("BV"),
            transaction_id=r.get("BK"),
            screen_message=_screen(r),
            **flags,
        )


def as_json(result: Any) -> dict[str, Any]:
    return asdict(result)


__all__ = [
    "Account",
    "Circulation",
    "Item",
    "LibrarySystem",
    "Loan",
    "Patron",
    "PatronAccount",
    "RenewAll",
    "Sip2Library",
    "Status",
]

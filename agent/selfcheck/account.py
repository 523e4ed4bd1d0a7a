""" "My account" at the self-check: the reader's loans with due dates, holds waiting on the
shelf and fees, renewing one loan (SIP2 29) or all of them (65), as readers ask self-checks.

Everything here runs on the station's worker thread, like the rest of the flow. What the
screen must never do is say "you have no loans" when it does not know: offline, it shows what
this kiosk lent in the session and says it cannot see the rest; a library system that does
not answer the summary fields (counts only, or a 23-only server) is said to have not listed
them, with the count where it gave one. Every renewal is a ``circ.renew`` event (the reports
count renewals from them). A server without 65 is renewed one loan at a time with 29.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from biblioedge.agent.selfcheck.flow import Emit, Session
from biblioedge.agent.store import NotRecorded
from biblioedge.drivers.sip2.client import ReplyLost
from biblioedge.drivers.sip2.codec import Sip2Error
from biblioedge.drivers.sip2.library import Loan, PatronAccount

log = logging.getLogger("biblioedge.agent.selfcheck")

#: renewal outcomes shown beside a loan (i18n keys ``account_<outcome>``)
RENEWED, NOT_RENEWED = "renewed", "not_renewed"


@dataclass(frozen=True)
class AccountLine:
    """One loan or hold as the screen lists it; ``outcome``: the last renewal's, if any."""

    item_id: str
    title: str = ""
    due: str | None = None
    overdue: bool = False
    outcome: str = ""
    message: str = ""


@dataclass(frozen=True)
class AccountInfo:
    """What "my account" shows. ``offline``: the library system is away (``loans`` are then
    what this kiosk lent in the session); ``listed``: it listed the loans (else ``charged`` is
    its count, when it gave one)."""

    loans: tuple[AccountLine, ...] = ()
    holds: tuple[AccountLine, ...] = ()
    fees: str = ""
    offline: bool = False
    listed: bool = True
    holds_listed: bool = True
    charged: int | None = None
    fine_lines: tuple[str, ...] = ()
    #: an i18n key (``account_<note>``) for what the last action could not do
    note: str = ""

    @property
    def can_renew(self) -> bool:
        return not self.offline


def _line(loan: Loan, outcomes: dict[str, tuple[str, str]]) -> AccountLine:
    outcome, message = outcomes.get(loan.item, ("", ""))
    return AccountLine(loan.item, loan.title, loan.due, loan.overdue, outcome, message)


class MyAccount:
    """Reads and renews a reader's account for the station (one session at a time)."""

    def __init__(self, library: Any, emit: Emit) -> None:
        self.library = library
        self.emit = emit
        self.outcomes: dict[str, tuple[str, str]] = {}
        #: the library system did not answer 65 once: renew one by one from then on
        self.no_renew_all = False
        self.note = ""

    def read(self, session: Session, online: bool) -> AccountInfo:
        """The account as the library system has it, or what the kiosk knows offline."""
        if online and not session.offline:
            try:
                found: PatronAccount = self.library.patron_account(session.patron_id)
            except Sip2Error as exc:
                log.warning("the reader's account could not be read: %s", exc)
            else:
                return self._shown(found)
        lent = tuple(
            AccountLine(r.item_id, r.title, r.due) for r in session.results if r.ok and r.offline
        )
        return AccountInfo(loans=lent, offline=True, listed=False, holds_listed=False)

    def _shown(self, found: PatronAccount) -> AccountInfo:
        return AccountInfo(
            loans=tuple(_line(x, self.outcomes) for x in found.loans),
            holds=tuple(_line(x, {}) for x in found.holds),
            fees=found.fees,
            listed=found.loans_listed,
            holds_listed=found.holds_listed,
            charged=found.charged,
            fine_lines=tuple(found.fine_items[:5]),
            note=self.note,
        )

    def renew(self, session: Session, item: str) -> None:
        """Renew one loan (29); its outcome is shown beside it on the next read."""
        t0 = time.perf_counter()
        r = self.library.renew(session.patron_id, item)  # Sip2Error: the caller goes offline
        self._record(session, item, r.ok, r.screen_message, r.due, "one", t0)

    def renew_all(self, session: Session, loans: tuple[AccountLine, ...]) -> None:
        """Renew every loan (65); a server without 65 renews them one by one (29)."""
        t0 = time.perf_counter()
        why = "65 was not answered before"
        if not self.no_renew_all:
            try:
                done = self.library.renew_all(session.patron_id)
            except ReplyLost as exc:  # another reply, or none: no 65 here
                why = str(exc)
            else:
                if done.ok or done.renewed or done.unrenewed:
                    for item in done.renewed:
                        self._record(session, item, True, "", None, "all", t0)
                    for item in done.unrenewed:
                        self._record(session, item, False, done.screen_message, None, "all", t0)
                    return
                # a 66 that renewed nothing and names nothing: pysip2's "COMMAND NOT
                # SUPPORTED", or a server that refuses 65 as such
                why = done.screen_message or "66 renewed nothing and named nothing"
            log.warning("renew all not usable (%s): renewing one loan at a time", why)
            self.no_renew_all = True
        if not loans:  # neither 65 nor a list of what to renew with 29
            self.note = "renew_all_unavailable"
        for line in loans:
            self.renew(session, line.item_id)

    def _record(
        self,
        session: Session,
        item: str,
        ok: bool,
        message: str,
        due: str | None,
        how: str,
        t0: float,
    ) -> None:
        self.outcomes[item] = (RENEWED if ok else NOT_RENEWED, "" if ok else message[:120])
        payload: dict[str, Any] = {
            "item_id": item,
            "result": "ok" if ok else NOT_RENEWED,
            "ils_ok": ok,
            "offline": False,
            "security": "none",
            "patron_id": session.patron_id,
            "identified_by": session.via,
            "renewal": how,
            "ms": round((time.perf_counter() - t0) * 1000, 1),
        }
        if due:
            payload["due_date"] = due
        try:
            self.emit("circ.renew", payload)
        except NotRecorded as exc:
            log.error("circ.renew of %s not recorded: %s", item, exc)

    def forget(self) -> None:
        self.outcomes.clear()
        self.note = ""

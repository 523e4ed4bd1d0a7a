"""Offline lending: a self-check keeps lending while the library system is away, within
limits, and forwards what it did, in order, when the library system is back.

Each offline transaction is committed to the kiosk's store before the reader is told "done",
so it survives kill -9 and power loss. Forwarding checks every answer: a checkout the library
system refuses (the item was on hold, the reader was blocked meanwhile) becomes an attention
case for the staff, saying what to do. Nothing is checked out twice, even when the agent dies
between sending a checkout and recording its answer: a transaction is marked ``sending``
(committed) before it goes out, and one found ``sending`` after a restart, or whose reply was
lost, is settled by the item's status (charged: it happened) rather than sent again. The SIP2
no-block flag is not relied on: common servers (Koha, Evergreen) never read it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from biblioedge.agent.store import Store
from biblioedge.drivers.sip2.client import ReplyLost
from biblioedge.drivers.sip2.codec import Sip2Error
from biblioedge.drivers.sip2.library import LibrarySystem

log = logging.getLogger("biblioedge.agent.offline")

Kind = Literal["checkout", "checkin"]


@dataclass(frozen=True)
class OfflineRules:
    max_items_per_reader: int = 5
    loan_days: int = 14


@dataclass(frozen=True)
class Refusal:
    """Why the kiosk will not lend this offline (shown to the reader, in plain words)."""

    reason: str


@dataclass(frozen=True)
class Forwarded:
    done: int
    refused: list[dict[str, str]]
    pending: int


class OfflineDesk:
    def __init__(self, store: Store, rules: OfflineRules | None = None) -> None:
        self.store = store
        self.rules = rules or OfflineRules()

    # -- while the library system is away ----------------------------------------------

    def lend(
        self,
        patron_id: str,
        item_id: str,
        *,
        blocked: Callable[[str], bool],
        offline_forbidden: bool = False,
        today: date | None = None,
    ) -> tuple[str, str] | Refusal:
        """Record an offline checkout: (tx id, due date) or why not."""
        if offline_forbidden:
            return Refusal("not_while_offline")
        if blocked(patron_id):
            return Refusal("reader_blocked")
        with self.store.transaction() as conn:
            held = conn.execute(
                "SELECT count(*) FROM offline_tx WHERE kind = 'checkout' AND patron_id = ?"
                " AND state IN ('pending', 'sending') AND item_id NOT IN (SELECT item_id"
                " FROM offline_tx WHERE kind = 'checkin' AND state IN ('pending', 'sending'))",
                (patron_id,),
            ).fetchone()[0]
            if held >= self.rules.max_items_per_reader:
                return Refusal("offline_limit")
            due = ((today or date.today()) + timedelta(days=self.rules.loan_days)).isoformat()
            tx = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO offline_tx (tx_id, kind, patron_id, item_id, at, due)"
                " VALUES (?, 'checkout', ?, ?, ?, ?)",
                (tx, patron_id, item_id, time.time(), due),
            )
        return tx, due

    def cancel(self, tx_id: str) -> bool:
        """Forget an offline transaction not yet forwarded (its security write failed, so the
        reader kept nothing). False if it is already on its way."""
        with self.store.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM offline_tx WHERE tx_id = ? AND state = 'pending'", (tx_id,)
            )
        return cur.rowcount == 1

    def take_back(self, item_id: str) -> str:
        """Record an offline return; the tx id."""
        tx = str(uuid.uuid4())
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO offline_tx (tx_id, kind, patron_id, item_id, at, due)"
                " VALUES (?, 'checkin', '', ?, ?, '')",
                (tx, item_id, time.time()),
            )
        return tx

    def pending(self) -> int:
        row = self.store.conn.execute(
            "SELECT count(*) FROM offline_tx WHERE state IN ('pending', 'sending')"
        ).fetchone()
        return int(row[0])

    # -- when it is back ---------------------------------------------------------------

    def forward(
        self, lib: LibrarySystem, progress: Callable[[int, int], None] | None = None
    ) -> Forwarded:
        """Send every pending transaction in order; stop at the first the library system
        cannot answer (it is away again) and leave the rest for the next attempt."""
        total = self.pending()
        done, refused = 0, []
        while True:
            row = self.store.conn.execute(
                "SELECT seq, tx_id, kind, patron_id, item_id, state FROM offline_tx"
                " WHERE state IN ('pending', 'sending') ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                break
            seq, tx, kind, patron_id, item_id, state = row
            if state == "pending":
                with self.store.transaction() as conn:
                    conn.execute("UPDATE offline_tx SET state = 'sending' WHERE seq = ?", (seq,))
            try:
                outcome, detail = self._send(lib, kind, patron_id, item_id, state == "sending")
            except (Sip2Error, OSError) as exc:
                log.warning("forwarding stopped at %s %s: %s", kind, item_id, exc)
                break
            with self.store.transaction() as conn:
                conn.execute(
                    "UPDATE offline_tx SET state = ?, result = ? WHERE seq = ?",
                    (outcome, json.dumps(detail, ensure_ascii=False), seq),
                )
            if outcome == "refused":
                refused.append(
                    {"tx_id": tx, "kind": kind, "patron_id": patron_id, "item_id": item_id} | detail
                )
            else:
                done += 1
            if progress is not None:
                progress(done + len(refused), total)
        return Forwarded(done=done, refused=refused, pending=self.pending())

    @staticmethod
    def _send(
        lib: LibrarySystem, kind: str, patron_id: str, item_id: str, resumed: bool
    ) -> tuple[str, dict[str, str]]:
        if kind == "checkin":
            back = lib.checkin(item_id)
            return "done", {"sort_bin": back.sort_bin, "message": back.screen_message}
        if resumed:  # sent before a crash: did it happen? the item's status says
            item = lib.item(item_id)
            if item.circulation_status == "charged":
                return "done", {"due": item.due or "", "message": "charged before a restart"}
        try:
            loan = lib.checkout(patron_id, item_id)
        except ReplyLost:
            again = lib.item(item_id)
            if again.circulation_status == "charged":
                return "done", {"due": again.due or "", "message": "charged (reply lost)"}
            raise
        if loan.ok:
            return "done", {"due": loan.due or "", "message": loan.screen_message}
        return "refused", {
            "message": loan.screen_message,
            "action": "Liên hệ bạn đọc: hệ thống thư viện từ chối một lượt mượn lúc mất kết "
            "nối; thu hồi tài liệu hoặc ghi mượn thủ công / Contact the reader: the library "
            "system refused a loan made offline; recall the item or record the loan by hand",
        }

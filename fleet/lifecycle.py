"""The card's life after the desk: renew, lost card and replacement, leaving. One place.

Each operation is one transaction at central: the reader's rows change, the gallery log gets
one library-wide row (so every branch's gates and self-checks follow at their next sync), an
event records what happened for reports and audit (``reader.renewed``,
``reader.card_replaced``, ``reader.erased``: central's own, device ``central``, patron number
only), and the push to the library system is queued in the same transaction, so a change is
never made here and forgotten there, nor pushed for a change that rolled back.

- **renew**: a new expiry (an expired reader is active again; a block the library set stays)
  and a new card token valid to it. Older cards are not revoked: the reader still holds them,
  they open until their own expiry.
- **replace** (lost or stolen): every live card is revoked (its QR refused at every kiosk from
  the next sync), the barcode printed on the lost card goes (a new one if given), a new card
  is issued.
- **leave**: erasure everywhere: cards revoked, templates, the sealed name and profile and the
  registration records deleted here, every kiosk drops her at its next sync, the library
  system is told to erase or anonymise (its connector's setting). Consent records stay: they
  name only the patron number and prove what was agreed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from biblioedge.fleet.cards import CardError, Cards
from biblioedge.fleet.ils import enqueue
from biblioedge.fleet.ils.connector import IlsOp
from biblioedge.fleet.readers import ReaderError, Readers

#: the event types central records for the card's life (reports count them)
RENEWED, REPLACED, ERASED = "reader.renewed", "reader.card_replaced", "reader.erased"
#: the card a renewal issues: 1 day to 10 years, as the card API
MAX_DAYS = 3650
#: queues a push to the library system in the caller's transaction (fleet/ils/queue.py)
Enqueue = Callable[[Connection, str, IlsOp, Mapping[str, str] | None], int]


@dataclass
class Outcome:
    """What an operation did: shown to the librarian, and what reports and tests check."""

    patron_id: str
    site: str
    expires_at: str = ""
    card: dict[str, Any] | None = None
    revoked: list[str] = field(default_factory=list)


class Lifecycle:
    def __init__(self, readers: Readers, cards: Cards, ils: Enqueue = enqueue) -> None:
        self.readers = readers
        self.cards = cards
        #: the library-system queue (its worker runs where central has an ``[ils]``)
        self.ils = ils

    def _push(
        self, conn: Connection, patron_id: str, op: IlsOp, data: Mapping[str, str] | None = None
    ) -> None:
        """The single call site of the library-system queue: the worker reads the reader's
        state when it sends, so only an erasure carries data (what finds her there after she
        is gone here)."""
        self.ils(conn, patron_id, op, data)

    def renew(self, patron_id: str, *, until: date | None = None, days: int = 365 * 4) -> Outcome:
        """A new expiry (``until``, else ``days`` from today) and a card valid to it."""
        today = datetime.now(UTC).date()
        until = until or today + timedelta(days=days)
        valid = (until - today).days
        if not 1 <= valid <= MAX_DAYS:
            raise ReaderError(f"the new expiry is 1 to {MAX_DAYS} days from today")
        with self.readers.begin() as conn:
            site = Readers.site_of(conn, patron_id)
            expires = until.isoformat()
            self.readers.renew_in(conn, patron_id, expires)
            card = self.cards.issue_in(conn, patron_id, valid)
            self.readers.count_in(conn, site, "cards_renewed")
            self.readers.record_in(
                conn, RENEWED, site, {"patron_id": patron_id, "expires_at": expires}
            )
            self._push(conn, patron_id, "renew")
        return Outcome(patron_id, site, expires_at=expires, card=card)

    def replace(
        self, patron_id: str, *, barcode: str | None = None, days: int = 365 * 4
    ) -> Outcome:
        """Lost card: revoke every live card, drop its barcode (``barcode``: the new
        card's), issue a new card. The old one is refused everywhere from the next sync."""
        if not 1 <= days <= MAX_DAYS:
            raise CardError(f"valid_days is 1 to {MAX_DAYS}")
        with self.readers.begin() as conn:
            site = Readers.site_of(conn, patron_id)
            revoked = self.cards.live_cards_of(conn, patron_id)
            for jti in revoked:
                self.readers.revoke_in(conn, jti, patron_id)
            self.readers.set_barcode_in(conn, patron_id, barcode)
            card = self.cards.issue_in(conn, patron_id, days)
            self.readers.count_in(conn, site, "cards_replaced")
            self.readers.record_in(
                conn,
                REPLACED,
                site,
                {"patron_id": patron_id, "card_jti": card["jti"], "revoked": revoked},
            )
            self._push(conn, patron_id, "update")
        return Outcome(patron_id, site, card=card, revoked=revoked)

    def leave(self, patron_id: str) -> Outcome:
        """Erasure everywhere (UnknownReader if there is no such reader)."""
        with self.readers.begin() as conn:
            site = Readers.site_of(conn, patron_id)
            revoked = self.cards.live_cards_of(conn, patron_id)
            for jti in revoked:
                self.readers.revoke_in(conn, jti, patron_id)
            found_by = self.readers.ils_keys_in(conn, patron_id)  # before they are erased
            self.readers.erase_in(conn, patron_id)
            self.readers.record_in(conn, ERASED, site, {"patron_id": patron_id})
            self._push(conn, patron_id, "erase", found_by)
        return Outcome(patron_id, site, revoked=revoked)

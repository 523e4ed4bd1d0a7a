"""The librarian's view at central (issue 26): find one reader, withdraw her consent, print her
card again or replace a lost one, and handle what kiosks send to staff.

Finding a reader takes one exact key: her card number (patron number or barcode) or a scanned
CCCD, whose ID number central turns into the keyed hash at once (with the desks' pepper, where
central is given it) and forgets. There is no search by name and no list of readers: the
names are sealed, and a page that lists them would open them all to whoever holds a
librarian's session.

A card printed at the desk before the library system assigned the reader's number (``[ils]
card_numbers = "ils"``) carries no number; ``card_prints`` remembers what each reader's last
card carries, so the page lists those whose number came later, for a reprint.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import segno

from biblioedge.citizen import citizen_ref
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.ils.queue import Queue
from biblioedge.fleet.lifecycle import Lifecycle
from biblioedge.fleet.readers import Readers, UnknownReader
from biblioedge.fleet.store import cards as card_rows
from biblioedge.fleet.store import librarian as rows
from biblioedge.protocol import PATRON_PATTERN, utc_now

#: the event a reprint records (reports and the audit trail read central's events)
REPRINTED = "reader.card_reprinted"
#: staff cases shown: those of the last 30 days
CASES_WINDOW = timedelta(days=30)
_ID_NUMBER = re.compile(r"[0-9]{12}")
_NUMBER = re.compile(PATRON_PATTERN)


class NotFound(LookupError):
    """No reader for that key (the page says so; it never says whose key it might be)."""


@dataclass
class ReaderCard:
    """One reader as the librarian's page shows her."""

    patron_id: str
    name: str
    site: str
    status: str
    expires_at: str
    card_number: str  # "" : the library system has not assigned it yet
    printed_number: str | None
    ils_status: str | None
    consents: list[dict[str, Any]] = field(default_factory=list)
    live_cards: int = 0

    @property
    def needs_reprint(self) -> bool:
        return self.printed_number is not None and self.printed_number != self.card_number


@dataclass(frozen=True)
class PrintedCard:
    """What the printable card page shows: the QR is an SVG drawn here (no script, no CDN)."""

    patron_id: str
    name: str
    card_number: str
    expires_at: str
    qr_svg: str
    revoked: int = 0


def id_number_of(scanned: str) -> str | None:
    """The 12-digit ID number from a scanned CCCD QR (``id|old id|name|...``) or typed alone;
    None when it is neither. Only the number is read; nothing else of the QR is kept."""
    text = unicodedata.normalize("NFC", scanned).strip().lstrip("\ufeff")
    first = text.split("|", 1)[0].strip()
    return first if _ID_NUMBER.fullmatch(first) else None


class LibrarianDesk:
    def __init__(
        self,
        registry: Readers,
        cards: Cards,
        card_numbers: str = "desk",
        pepper: bytes | None = None,
    ) -> None:
        self.readers = registry
        self.cards = cards
        self.life = Lifecycle(registry, cards)
        self.queue = Queue(registry.repo)
        self.card_numbers = card_numbers
        #: the desks' pepper: without it a scanned CCCD finds no one (said on the page)
        self.pepper = pepper

    # -- finding one reader ---------------------------------------------------------------

    def find(self, key: str) -> str:
        """The patron number for a card number or a scanned CCCD; NotFound otherwise."""
        key = key.strip()[:400]
        number = id_number_of(key)
        with self.readers.tx.connect() as conn:
            if number is not None:
                if self.pepper is None:
                    raise NotFound("no_pepper")
                found = rows.by_citizen_ref(conn, citizen_ref(self.pepper, number))
            elif _NUMBER.fullmatch(key):
                found = rows.by_number(conn, key)
            else:
                raise NotFound("bad_key")
        if found is None:
            raise NotFound("no_reader")
        return found

    def card_number(self, patron_id: str, barcode: str | None) -> str:
        if barcode:
            return barcode
        return patron_id if self.card_numbers == "desk" else ""

    def reader(self, patron_id: str) -> ReaderCard:
        doc = self.readers.get(patron_id)  # UnknownReader
        link = self.queue.link(patron_id)
        with self.readers.tx.connect() as conn:
            printed = rows.printed(conn, patron_id)
            live = len(card_rows.live_cards_of(conn, patron_id))
            consents = card_rows.consents_of(conn, patron_id)
        barcode = doc.get("barcode")
        return ReaderCard(
            patron_id=patron_id,
            name=str(doc["display_name"]),
            site=str(doc["site"]),
            status=str(doc["status"]),
            expires_at=str(doc["expires_at"] or ""),
            card_number=self.card_number(patron_id, str(barcode) if barcode else None),
            printed_number=printed,
            ils_status=link.status if link is not None else None,
            consents=consents,
            live_cards=live,
        )

    # -- acting on her ----------------------------------------------------------------------

    def withdraw(self, patron_id: str, purpose: str) -> int:
        """Her consent to ``purpose`` withdrawn: templates go here, kiosks drop them."""
        return self.cards.withdraw(patron_id, purpose)

    def reprint(self, patron_id: str, by: str, days: int = 365 * 4) -> PrintedCard:
        """A new card token for a card printed again (damaged, or printed before her number
        was assigned); earlier cards stay valid (a lost one is a replacement)."""
        with self.readers.begin() as conn:
            site = Readers.site_of(conn, patron_id)
            card = self.cards.issue_in(conn, patron_id, days)
            self.readers.record_in(
                conn, REPRINTED, site, {"patron_id": patron_id, "card_jti": card["jti"]}
            )
        return self._printed(patron_id, card, by, 0)

    def replace(self, patron_id: str, by: str) -> PrintedCard:
        """Lost card: every live card revoked (refused at every kiosk from the next sync), a
        new one issued (fleet/lifecycle.py)."""
        out = self.life.replace(patron_id)
        assert out.card is not None
        return self._printed(patron_id, out.card, by, len(out.revoked))

    def _printed(self, patron_id: str, card: dict[str, Any], by: str, revoked: int) -> PrintedCard:
        doc = self.readers.get(patron_id)
        barcode = doc.get("barcode")
        number = self.card_number(patron_id, str(barcode) if barcode else None)
        with self.readers.begin() as conn:
            rows.put_print(conn, patron_id, number, by, utc_now())
        qr = segno.make(str(card["token"]), error="m", micro=False)
        return PrintedCard(
            patron_id=patron_id,
            name=str(doc["display_name"]),
            card_number=number,
            expires_at=str(card["expires_at"])[:10],
            qr_svg=qr.svg_inline(scale=4, border=4, dark="#000", light="#fff"),
            revoked=revoked,
        )

    def to_reprint(self) -> list[tuple[str, str, str]]:
        with self.readers.tx.connect() as conn:
            return rows.to_reprint(conn)

    # -- staff cases ------------------------------------------------------------------------

    def cases(self) -> list[dict[str, Any]]:
        with self.readers.tx.connect() as conn:
            return rows.staff_cases(conn, utc_now() - CASES_WINDOW)

    def handle(self, event_id: str, by: str) -> bool:
        """Mark a staff case handled by ``by``; UnknownReader-like LookupError when the event
        is no staff case."""
        with self.readers.begin() as conn:
            if not rows.is_staff_case(conn, event_id):
                raise NotFound("no_case")
            return rows.handle(conn, event_id, by, utc_now())


__all__ = ["LibrarianDesk", "NotFound", "PrintedCard", "ReaderCard", "UnknownReader"]

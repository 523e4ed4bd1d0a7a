"""The self-check speaks to the library system with the number the library system holds.

A reader has one card number everywhere: her barcode when she has one, else her patron
number (docs/ils.md, "One card number"). Central keeps the library system holding exactly that
number: with ``[ils] card_numbers = "desk"`` it pushes it; with ``"ils"`` the library system
assigns it and central keeps it as her barcode. Kiosks already hold it: the gallery's
``patron_cache.barcode`` is the reader's barcode, or her patron number when she has none.

So the self-check identifies a reader as before (card QR, CCCD QR and face give central's
patron number) and this wrapper turns that number into the library system's in every SIP2
call that names a reader (patron status, checkout, renewal, end of session, and the offline
loans it forwards later), and back in the answers that name one (an item's borrower, a
loan's patron), so the flow and its events keep speaking central's number. A number the
kiosk does not know (a barcode typed at the PIN pad, a reader not synced yet) goes as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from biblioedge.drivers.sip2.library import Circulation, Item, LibrarySystem, Patron, Status

#: patron number -> the library system's card number (the number itself when unknown)
NumberOf = Callable[[str], str]
#: the library system's card number -> patron number (the number itself when unknown)
PatronOf = Callable[[str], str]


class IlsNumbers:
    """A ``LibrarySystem`` that names readers by the library system's card numbers."""

    def __init__(self, inner: LibrarySystem, number_of: NumberOf, patron_of: PatronOf) -> None:
        self.inner = inner
        self.number_of = number_of
        self.patron_of = patron_of

    def __getattr__(self, name: str) -> Any:
        """What the wrapper does not change (``close``, ``account``...) is the inner one's."""
        return getattr(self.inner, name)

    def _back(self, loan: Circulation) -> Circulation:
        if not loan.patron_id:
            return loan
        return replace(loan, patron_id=self.patron_of(loan.patron_id))

    def status(self) -> Status:
        return self.inner.status()

    def patron(self, patron_id: str, password: str | None = None) -> Patron:
        found = self.inner.patron(self.number_of(patron_id), password)
        return replace(found, patron_id=patron_id)

    def checkout(self, patron_id: str, item: str, *, fee_ack: bool = False) -> Circulation:
        return self._back(self.inner.checkout(self.number_of(patron_id), item, fee_ack=fee_ack))

    def checkin(self, item: str) -> Circulation:
        return self._back(self.inner.checkin(item))

    def renew(self, patron_id: str, item: str) -> Circulation:
        return self._back(self.inner.renew(self.number_of(patron_id), item))

    def item(self, item: str) -> Item:
        found = self.inner.item(item)
        if not found.patron_id:
            return found
        return replace(found, patron_id=self.patron_of(found.patron_id))

    def end_session(self, patron_id: str) -> bool:
        end = getattr(self.inner, "end_session", None)
        return bool(end(self.number_of(patron_id))) if end is not None else True

"""The self-check speaks to the library system with the number the library system holds.

A reader has one card number everywhere: her barcode when she has one, else her patron
number (docs/ils.md, "One card number"). Central keeps the library system holding exactly that
number: with ``[ils] card_numbers = "desk"`` it pushes it; with ``"ils"`` the library system
assigns it and central keeps it as her barcode. Kiosks already hold it: the gallery's
``patron_cache.barcode`` is the reader's barcode, or her patron number when she has none.

So the self-check identifies a reader as before (card QR, CCCD QR and face give central's
patron number), and the SIP2 connection translates the patron identifier (field AA) of every
message: out to the library system's number, and back to central's in the answers. Doing it
at the wire rather than per method means every message that names a reader is covered, the
ones that exist (63/23 patron, 11 checkout, 29 renew, 35 end session, the offline loans
forwarded later) and the ones added later ("my account": 63 with summary, 65 renew all),
and the flow and its events keep speaking central's number. A number the kiosk does not know
(a barcode typed at the PIN pad, a reader not synced yet) goes as it is.
"""

from __future__ import annotations

from collections.abc import Callable

from biblioedge.drivers.sip2.library import Sip2Library

#: patron number -> the library system's card number (the number itself when unknown)
NumberOf = Callable[[str], str]
#: the library system's card number -> patron number (the number itself when unknown)
PatronOf = Callable[[str], str]


def speak_card_numbers(library: Sip2Library, number_of: NumberOf, patron_of: PatronOf) -> None:
    """From now on ``library`` names readers to the library system by its card numbers."""
    library.client.numbers = (number_of, patron_of)

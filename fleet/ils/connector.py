"""The connector interface between central and the library system (ILS).

Central pushes readers into the library system; desks never hold its credentials. One
interface, two implementations in this package: Koha's REST API (``koha.py``), which the
dummy library system (``biblioedge sip serve``) serves as well, so the demo and the tests
exercise the same code a library's Koha sees.

The calls are small and idempotent where the library system allows it; exactly-once over
retries (a lost reply, a 5xx after the patron was stored, a 409 on the card number) is the
push's job (``push.py``): it looks the patron up by card number and by the keyed hash of the
ID number before creating one, and updates what it finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

#: What central asks of the library system, one queue item each (``queue.enqueue``).
IlsOp = Literal["create", "update", "block", "unblock", "renew", "expire", "erase"]
ILS_OPS: tuple[IlsOp, ...] = ("create", "update", "block", "unblock", "renew", "expire", "erase")

#: A patron's state as the library system reports it (status back).
IlsStatus = Literal["active", "blocked", "expired", "deleted"]


@dataclass(frozen=True)
class PatronData:
    """A reader as central sends it, mapped for the library system (``mapping.py``): never
    the ID number, only its keyed hash (``citizen_ref``)."""

    surname: str
    firstname: str
    library_id: str
    category_id: str
    citizen_ref: str
    #: None: the library system issues the card number (``[ils] card_numbers = "ils"``)
    cardnumber: str | None = None
    date_of_birth: str | None = None  # YYYY-MM-DD
    gender: str | None = None  # Koha's codes: M, F
    expiry_date: str | None = None  # YYYY-MM-DD
    address: str | None = None  # only where the library turned it on


@dataclass(frozen=True)
class IlsPatron:
    """A patron as the library system holds it."""

    ils_id: str
    cardnumber: str
    citizen_ref: str | None
    status: IlsStatus
    expiry_date: str | None = None


class IlsError(Exception):
    """The library system did not do what was asked. ``reason`` is a short code shown on the
    dashboard; ``retry``: the same request may succeed later (down, 5xx, timeout); ``person``:
    someone must act (credentials, data the library system refuses, a card number taken)."""

    def __init__(self, reason: str, detail: str, *, retry: bool, person: bool) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:300]
        self.retry = retry
        self.person = person


class CardTaken(IlsError):
    """409: the card number is already a patron's (the push decides whose)."""

    def __init__(self, cardnumber: str) -> None:
        super().__init__(
            "card_taken", f"card number {cardnumber} exists already", retry=False, person=True
        )
        self.cardnumber = cardnumber


class Connector(Protocol):
    """The library system's patron API as central uses it."""

    def check(self) -> dict[str, str]:
        """Reachable, and the account may read patrons: a few facts to show; IlsError if not."""
        ...

    def find_by_card(self, cardnumber: str) -> IlsPatron | None: ...

    def find_by_ref(self, citizen_ref: str) -> IlsPatron | None:
        """The patron whose extended attribute holds this keyed hash of the ID number."""
        ...

    def get(self, ils_id: str) -> IlsPatron | None:
        """None: the library system has no such patron (deleted there)."""
        ...

    def changed_since(self, since: str) -> list[IlsPatron]:
        """Patrons the library system changed at or after ``since`` (ISO date-time): status
        back without asking about every reader."""
        ...

    def create(self, data: PatronData) -> IlsPatron:
        """A new patron; CardTaken when the card number is already one's."""
        ...

    def update(self, ils_id: str, data: PatronData) -> IlsPatron: ...

    def set_blocked(self, ils_id: str, blocked: bool) -> None: ...

    def set_expiry(self, ils_id: str, expiry_date: str) -> None:
        """Renew (a later date) or expire (today) the patron's card."""
        ...

    def erase(self, ils_id: str, anonymise: bool) -> None:
        """Delete the patron, or anonymise it where the library keeps circulation history."""
        ...

    def close(self) -> None: ...

"""Children at the card desk: the age from the chip, and whether a guardian's card will do.

Why (docs/children.md): Decree 13/2023/NĐ-CP art. 20(2) requires, for a child's personal data,
the consent of the parent or guardian and, from age 7, the child's own, and requires the age
to be verified before processing; a child is a person under 16 (Law on Children 2016, art. 1).
The 2025 personal data law (91/2025/QH15, art. 24) keeps the legal representative acting for
the child. So the desk takes the age from the chip (the QR only when there is no chip), on the
day at the desk, and for a minor reads the guardian's own CCCD (chip, passive authentication).

Pure functions: no screen, no I/O; :mod:`biblioedge.agent.desk.guardian_flow` asks the
librarian and calls these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from biblioedge.drivers.cccd.card import CardData
from biblioedge.drivers.cccd.qr import CccdQr

Relationship = Literal["parent", "guardian"]
#: Why a guardian's card is not accepted; each is an i18n key the desk shows.
GuardianReason = Literal[
    "guardian_is_child", "guardian_expired", "guardian_minor", "guardian_unreadable",
    "guardian_forgery", "guardian_mismatch",
]  # fmt: skip


@dataclass(frozen=True)
class MinorPolicy:
    """``[desk]`` majority_age / own_consent_from / face_for_minors."""

    #: a reader younger than this needs a guardian (VN: under 16 is a child)
    majority_age: int = 16
    #: from this age the child's own consent is asked too (Decree 13/2023 art. 20(2))
    own_consent_from: int = 7
    #: offer face enrollment to minors (both consents needed); off by default
    face_for_minors: bool = False
    #: the library's time zone: the day at the desk is its day, as central counts it
    #: (``[reports] timezone``), whatever the kiosk's clock is set to
    timezone: str = "Asia/Ho_Chi_Minh"

    def today(self) -> date:
        return datetime.now(ZoneInfo(self.timezone)).date()


class GuardianRefused(Exception):
    """The guardian's card cannot stand for this child; ``reason`` is shown to the librarian."""

    def __init__(self, reason: GuardianReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: GuardianReason = reason
        self.detail = detail


def age_on(born: date, day: date) -> int:
    """Whole years on ``day``: a birthday counts from its morning (29 Feb: from 1 March)."""
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def _date(text: str | None) -> date | None:
    for fmt in ("%d/%m/%Y", "%Y-%m-%d", "%d%m%Y"):
        try:
            return datetime.strptime(str(text or "").strip(), fmt).date()
        except ValueError:
            continue
    return None


def birth_of(qr: CccdQr, card: CardData | None) -> date:
    """The chip's date of birth (signed, checked by passive authentication) wins over the
    QR's and over anything a form said; the QR's only when there is no chip read."""
    if card is not None:
        born = _date(card.personal.get("date_of_birth"))
        if born is not None:
            return born
    return qr.date_of_birth


def expiry_of(card: CardData) -> date | None:
    """The card's expiry: DG13's, else the MRZ's (YYMMDD; a CCCD's is always 20YY)."""
    found = _date(card.personal.get("expiry_date"))
    if found is not None:
        return found
    doe = card.mrz.date_of_expiry
    if len(doe) == 6 and doe.isdigit():
        try:
            return date(2000 + int(doe[:2]), int(doe[2:4]), int(doe[4:]))
        except ValueError:
            return None
    return None


def is_minor(born: date, day: date, policy: MinorPolicy) -> bool:
    return age_on(born, day) < policy.majority_age


def _fold(name: str) -> str:
    return " ".join(name.casefold().split())


def named_parent(child: CardData | None, guardian_name: str) -> bool:
    """True when the child's own chip (DG13, signed) names the guardian as father or mother:
    the relationship is then checked, not only declared."""
    if child is None or not guardian_name.strip():
        return False
    parents = (child.personal.get("father_name", ""), child.personal.get("mother_name", ""))
    return _fold(guardian_name) in {_fold(p) for p in parents if p.strip()}


def check_guardian(
    *,
    child_id: str,
    guardian_qr: CccdQr,
    guardian_card: CardData | None,
    day: date,
    policy: MinorPolicy,
) -> str:
    """The guardian's passive-authentication status when her card may stand for the child;
    GuardianRefused otherwise. The chip is required: a guardian consents for someone else,
    so the desk needs her signed identity, not a QR anyone can print."""
    if guardian_qr.id_number == child_id:
        raise GuardianRefused("guardian_is_child", "the same ID number as the child's")
    if guardian_card is None:
        raise GuardianRefused("guardian_unreadable", "the guardian's chip was not read")
    chip_id = guardian_card.personal.get("id_number") or guardian_card.mrz.id_number
    if chip_id == child_id:
        raise GuardianRefused("guardian_is_child", "the chip holds the child's ID number")
    if chip_id and chip_id != guardian_qr.id_number:
        raise GuardianRefused("guardian_mismatch", "the chip and the QR name other people")
    pa = guardian_card.passive_auth
    if pa.forgery_suspected:
        raise GuardianRefused("guardian_forgery", pa.detail or "passive authentication failed")
    if not pa.verified and pa.signature != "ok":
        raise GuardianRefused("guardian_unreadable", "no passive authentication on the chip")
    expires = expiry_of(guardian_card)
    if expires is not None and expires < day:
        raise GuardianRefused("guardian_expired", f"expired on {expires:%d/%m/%Y}")
    if is_minor(birth_of(guardian_qr, guardian_card), day, policy):
        raise GuardianRefused("guardian_minor", f"under {policy.majority_age}")
    return "ok" if pa.verified else "unknown_csca"

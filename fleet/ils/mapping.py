"""A reader as central holds it → a patron as the library system wants it, with Vietnamese
defaults: the full name is family name first ("Nguyễn Văn An" → surname "Nguyễn", firstname
"Văn An"), the category by age (child or adult), the library by branch, the address only
where the library turned it on, and the keyed hash of the ID number, never the number."""

from __future__ import annotations

import unicodedata
from datetime import date, datetime

from biblioedge.fleet.ils.connector import PatronData
from biblioedge.fleet.ils.settings import IlsConfig

#: Koha's surname and firstname columns are TEXT/MEDIUMTEXT, but a name this long is a
#: mistake or an attack: cut, never refused (the reader exists; a librarian can fix it there).
MAX_NAME = 100
GENDERS = {"nam": "M", "nữ": "F", "nu": "F", "m": "M", "f": "F", "male": "M", "female": "F"}


def clean_name(text: str) -> str:
    """NFC, one space between words, no control or format characters (emoji stay: they are
    letters to Koha's utf8mb4)."""
    text = unicodedata.normalize("NFC", text)
    kept = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    return " ".join(kept.split())


def split_name(full: str) -> tuple[str, str]:
    """(surname, firstname), family name first; a one-word name is all surname (Koha
    requires a surname, not a firstname)."""
    words = clean_name(full).split(" ")
    surname = words[0][:MAX_NAME] if words and words[0] else "?"
    firstname = " ".join(words[1:])[:MAX_NAME].rstrip()
    return surname, firstname


def parse_birth(text: str | None) -> date | None:
    """The desk keeps YYYY-MM-DD (QR) or DD/MM/YYYY (chip DG13)."""
    if not text:
        return None
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%d%m%Y"):
        try:
            return datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            continue
    return None


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def map_reader(
    cfg: IlsConfig,
    *,
    cardnumber: str | None,
    site: str,
    full_name: str,
    citizen_ref: str,
    expires_at: str,
    profile: dict[str, str],
    today: date | None = None,
    minor_until: date | None = None,
) -> PatronData:
    """``minor_until``: the day a reader registered with a guardian reaches majority; she is
    a child until then even where no date of birth is kept (fleet/guardians.py)."""
    today = today or date.today()
    surname, firstname = split_name(full_name)
    birth = parse_birth(profile.get("date_of_birth"))
    child = birth is not None and age_on(birth, today) < cfg.child_under
    child = child or (minor_until is not None and today < minor_until)
    gender = GENDERS.get(unicodedata.normalize("NFC", profile.get("gender", "")).strip().lower())
    address = clean_name(profile.get("address", ""))[:200] if cfg.address else ""
    return PatronData(
        surname=surname,
        firstname=firstname,
        library_id=cfg.library_of(site),
        category_id=cfg.category_child if child else cfg.category_adult,
        citizen_ref=citizen_ref,
        cardnumber=cardnumber,
        date_of_birth=birth.isoformat() if birth else None,
        gender=gender,
        expiry_date=expires_at or None,
        address=address or None,
    )

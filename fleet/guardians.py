"""Central's side of children's registrations (issue 25 deliver 2; docs/children.md).

A desk decides with its own settings and the chip; central checks again what it can from the
registration alone, before the first write, so a desk with an old release or a forged event
cannot register a child without a guardian:

- a reader whose kept date of birth makes her younger than central's age of majority
  (``[reports] child_under``, 16 by default) on **the day at the desk** (the event's time in the
  library's time zone: a registration queued offline the day before her 16th birthday is still
  a child's) needs a ``guardian`` block;
- the guardian is not the child (their keyed ID hashes differ), consented, and from age 7 the
  child consented too (Decree 13/2023/NĐ-CP art. 20(2)).

What is kept (``guardian_consents``): the guardian's keyed hash, relationship and how it was
checked, the child's age that day, her own consent, and the day she reaches majority. The
library system's category follows that day where no date of birth is kept
(fleet/ils/mapping.py).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from biblioedge.fleet.ils.mapping import age_on, parse_birth
from biblioedge.fleet.store import guardians as rows
from biblioedge.protocol import DeskRegistration, ProtocolError, utc_now

#: From this age the child's own consent is needed too (Decree 13/2023 art. 20(2)).
OWN_CONSENT_FROM = 7


def desk_day(occurred_at: datetime, timezone: str) -> date:
    """The day at the desk when the registration was made, in the library's time zone."""
    return occurred_at.astimezone(ZoneInfo(timezone)).date()


def _birthday(born: date, years: int) -> date:
    try:
        return born.replace(year=born.year + years)
    except ValueError:  # 29 February: the birthday counts from 1 March
        return date(born.year + years, 3, 1)


def check(reg: DeskRegistration, day: date, majority: int) -> date | None:
    """The day a minor reaches majority (None for an adult without a guardian block);
    ProtocolError when the registration cannot stand."""
    born = parse_birth(reg.profile.get("date_of_birth"))
    if born is not None and not (day.year - 130 <= born.year and born <= day):
        raise ProtocolError("invalid_registration", "the date of birth is not a living reader's")
    g = reg.guardian
    if g is None:
        if born is not None and age_on(born, day) < majority:
            raise ProtocolError(
                "guardian_required",
                f"the reader is {age_on(born, day)} on {day.isoformat()}, under {majority}: "
                "a guardian's consent is required",
            )
        return None
    if g.citizen_ref == reg.citizen_ref:
        raise ProtocolError("guardian_is_child", "the guardian's card is the child's own")
    if not g.consent:
        raise ProtocolError("no_guardian_consent", "the guardian did not consent")
    age = age_on(born, day) if born is not None else g.child_age
    if age >= OWN_CONSENT_FROM and g.child_consent is not True:
        raise ProtocolError("no_child_consent", f"the child is {age}: her own consent is needed")
    limit = max(majority, g.majority_age)
    if born is not None:
        return _birthday(born, limit)
    # no date of birth kept: no earlier than the day she can have reached it
    return day + timedelta(days=round(365.25 * max(limit - g.child_age, 0)))


def record_in(
    conn: Connection, patron_id: str, reg: DeskRegistration, adult_on: date | None
) -> None:
    """Her guardian record (or, for a returning reader registering as an adult, none:
    she consents herself now)."""
    g = reg.guardian
    if g is None or adult_on is None:
        rows.drop(conn, patron_id)
        return
    rows.put(
        conn,
        patron_id,
        {
            "registration_id": reg.registration_id,
            "guardian_ref": g.citizen_ref,
            "relationship": g.relationship,
            "named_on_child_card": g.named_on_child_card,
            "passive_auth": g.passive_auth,
            "child_age": g.child_age,
            "child_consent": g.child_consent,
            "adult_on": adult_on.isoformat(),
            "librarian": reg.consent.librarian,
            "recorded_at": utc_now(),
        },
    )


def audit(reg: DeskRegistration) -> dict[str, object]:
    """What the event log keeps of it: how it was checked, no reference to the guardian."""
    g = reg.guardian
    if g is None:
        return {"minor": False}
    return {
        "minor": True,
        "guardian": {
            "relationship": g.relationship,
            "named_on_child_card": g.named_on_child_card,
            "passive_auth": g.passive_auth,
            "child_consent": g.child_consent,
        },
    }

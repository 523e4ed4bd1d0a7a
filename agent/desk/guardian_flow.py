"""The desk's screens for a minor: the guardian's CCCD, the relationship, the consents.

Runs inside a desk session (:class:`biblioedge.agent.desk.flow.DeskFlow`) once the child's own
card is read and her face matched, when she is under ``majority_age`` on the day at the desk:

1. "a parent or guardian's CCCD": its QR from the hand scanner (or held up to the camera; the
   child's own QR is ignored there), then its chip on the reader once the child's card is off;
2. the checks of :func:`~biblioedge.agent.desk.guardian.check_guardian`; a refusal says why
   (the child's own card, expired, unreadable, forged, another minor) and offers retry or cancel;
3. the relationship (parent or guardian), one tap; the child's chip naming her as father or
   mother is recorded beside the librarian's answer;
4. from age 7 the child's own consent, then the guardian's: either "no" ends the session with
   nothing sent.

The guardian's ID number leaves this module only as a keyed hash (same pepper as readers'),
her name never: central learns that someone with this card consented, and how it was checked.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date
from typing import TYPE_CHECKING, Any

from biblioedge.agent.citizen import citizen_ref
from biblioedge.agent.desk.guardian import (
    GuardianRefused,
    age_on,
    check_guardian,
    named_parent,
)
from biblioedge.drivers.cccd.card import CardData
from biblioedge.drivers.cccd.errors import CccdError
from biblioedge.drivers.cccd.qr import CccdQr, parse_qr
from biblioedge.drivers.errors import DriverError

if TYPE_CHECKING:
    from biblioedge.agent.desk.flow import DeskFlow, DeskView


def _view(step: str, message: str, **kw: Any) -> DeskView:
    from biblioedge.agent.desk.flow import DeskView

    return DeskView(step, message, **kw)  # type: ignore[arg-type]


def _cancel() -> Exception:
    from biblioedge.agent.desk.flow import _Cancelled

    return _Cancelled()


async def _guardian_qr(flow: DeskFlow, child_id: str) -> CccdQr | None:
    """The next CCCD QR that is not the child's (camera) or any (scanner); None for a code
    that is not a CCCD's (the screen says so and waits again)."""
    deadline = time.monotonic() + flow.settings.idle_reset_s
    while True:
        if time.monotonic() > deadline:  # a child's data never waits on an unattended desk
            raise _cancel()
        text = flow._scans.get_nowait() if not flow._scans.empty() else None
        if text is None and flow.decoder is not None:
            frame = await asyncio.to_thread(flow.camera.latest, flow._last_frame, 0.3)
            if frame is not None:
                flow._last_frame = frame.seq
                flow.current = frame
                codes = await asyncio.to_thread(flow.decoder.decode, frame.image)
                for code in codes:
                    if "|" in code.text and not code.text.startswith(child_id + "|"):
                        text = code.text
                        break
        if text is not None:
            try:
                return parse_qr(text)
            except CccdError:
                return None
        await flow._poll_cancel(0.3 if flow.decoder is None else 0.0)


async def _card_off(flow: DeskFlow, person: dict[str, str]) -> None:
    """Wait for the child's card to leave the reader, so the guardian's is the one read."""
    chip = flow.chip
    if chip is None:
        return
    flow._show(_view("guardian_card", "guardian_swap_card", person=person, actions=("cancel",)))
    deadline = time.monotonic() + flow.settings.idle_reset_s
    while True:
        try:
            if not await asyncio.to_thread(chip.present):
                return
        except DriverError:  # no reader or pcscd: the read that follows says so, with retry
            return
        if time.monotonic() > deadline:
            raise _cancel()
        await flow._poll_cancel(0.3)


async def ask_guardian(
    flow: DeskFlow, qr: CccdQr, card: CardData | None, person: dict[str, str], born: date, day: date
) -> dict[str, Any] | None:
    """The ``guardian`` block of the registration, or None when a consent was refused (the
    screen said so and the librarian moved on). Cancel ends the session as anywhere else."""
    policy = flow.settings.minors
    age = age_on(born, day)
    child = {**person, "age": str(age)}
    message = "guardian_needed"
    while True:
        flow._show(_view("guardian_card", message, person=child, actions=("cancel",)))
        g_qr = await _guardian_qr(flow, qr.id_number)
        if g_qr is None:
            message = "guardian_not_cccd"
            continue
        message = "guardian_needed"
        g_card: CardData | None = None
        try:
            if g_qr.id_number != qr.id_number and flow.chip is not None:
                await _card_off(flow, child)
                g_card = await flow._read(g_qr, {"guardian": g_qr.full_name})
            status = check_guardian(
                child_id=qr.id_number, guardian_qr=g_qr, guardian_card=g_card, day=day,
                policy=policy,
            )  # fmt: skip
        except GuardianRefused as exc:
            flow._show(
                _view(
                    "guardian_refused",
                    exc.reason,
                    detail=exc.detail,
                    person=child,
                    actions=("retry", "cancel"),
                )
            )
            await flow._choose()
            continue
        break
    assert g_card is not None
    g_name = g_card.personal.get("full_name") or g_qr.full_name
    named = named_parent(card, g_name)
    both = {**child, "guardian": g_name}
    flow._show(
        _view(
            "relationship",
            "guardian_relationship_named" if named else "guardian_relationship",
            person=both,
            actions=("rel_parent", "rel_guardian", "cancel"),
        )
    )
    relationship = "parent" if await flow._choose() == "rel_parent" else "guardian"
    child_consent: bool | None = None
    if age >= policy.own_consent_from:
        flow._show(
            _view(
                "child_consent",
                "child_consent_text",
                person=both,
                actions=("child_yes", "child_no", "cancel"),
            )
        )
        child_consent = await flow._choose() == "child_yes"
        if not child_consent:
            await _declined(flow, "child_declined", both)
            return None
    flow._show(
        _view(
            "guardian_consent",
            "guardian_consent_text",
            person=both,
            actions=("guardian_yes", "guardian_no", "cancel"),
        )
    )
    if await flow._choose() != "guardian_yes":
        await _declined(flow, "guardian_declined", both)
        return None
    return {
        "citizen_ref": citizen_ref(flow.pepper, g_qr.id_number),
        "relationship": relationship,
        "named_on_child_card": named,
        "passive_auth": status,
        "consent": True,
        "child_consent": child_consent,
        "child_age": age,
        "majority_age": policy.majority_age,
    }


async def _declined(flow: DeskFlow, message: str, person: dict[str, str]) -> None:
    flow._show(_view("refused", message, person=person, actions=("next",)))
    await flow._choose(flow.settings.idle_reset_s)

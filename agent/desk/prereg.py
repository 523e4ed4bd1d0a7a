"""The desk's side of register-from-home (issue 25): the reader's pre-registration code first.

The librarian scans the code on the reader's phone (or the camera sees it); the desk parses it
(``biblioedge.prereg_code``: never personal, the reader's two choices and the expiry), refuses
a malformed or expired one at once with the reason, and asks for the CCCD. From there it is a
walk-in's session (chip, passive authentication, face 1:1 against the chip photo), except that
the consent screen is the reader's own choices from home, confirmed in one tap. The chip's
data wins: the registration carries the chip's name and fields, and the code; central adds the
phone or e-mail from the form, and refuses a forged or already used code with the reason
(``fleet/prereg.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from biblioedge.prereg_code import PreregCode, PreregCodeError, is_prereg, parse_code

if TYPE_CHECKING:
    from biblioedge.agent.desk.flow import DeskFlow

#: what the desk shows for a code refused by the desk or by central (kiosk/i18n.py keys)
REFUSALS = ("prereg_malformed", "prereg_expired", "prereg_forged", "prereg_used")


def check_code(payload: str, now: datetime | None = None) -> PreregCode:
    """The parsed code, or PreregCodeError (malformed, expired) for the desk to show."""
    code = parse_code(payload)
    if code.expires_at <= (now or datetime.now(UTC)):
        raise PreregCodeError("prereg_expired", f"expired on {code.expires_at:%d/%m/%Y}")
    return code


def confirm_message(code: PreregCode) -> str:
    """The confirm screen's message: her face choice in plain words (kiosk/i18n.py)."""
    return "prereg_confirm_face" if code.face else "prereg_confirm_noface"


async def wait_cccd(flow: DeskFlow, code: PreregCode) -> str | None:
    """After a code: the CCCD's QR (scanner or camera), or None when the librarian cancels
    or nobody comes within ``idle_reset_s``."""
    from biblioedge.agent.desk.flow import DeskView

    detail = "notices_yes" if code.notices else "notices_no"
    flow._show(DeskView("prereg", "prereg_scan_cccd", detail=detail, actions=("cancel",)))
    scanned = asyncio.create_task(_cccd_only(flow), name="desk:prereg-cccd")
    tapped = asyncio.create_task(flow._taps.get(), name="desk:prereg-tap")
    try:
        done, _ = await asyncio.wait(
            {scanned, tapped},
            timeout=flow.settings.idle_reset_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for task in (scanned, tapped):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if scanned in done:
        return scanned.result()
    return None  # cancel (the only action offered) or nobody came


async def _cccd_only(flow: DeskFlow) -> str:
    while True:
        payload = await flow._wait_qr()
        if not is_prereg(payload):
            return payload

"""The pre-registration code a reader brings to the desk (``BP1.…``), as both sides read it.

Central makes and checks it (``fleet/prereg.py``: the MAC is central's alone); the desk only
parses it to tell it from a CCCD or a library card, show the reader's choices and refuse an
expired one before it reads the chip. Nothing in it is personal::

    BP1.<id>.<expiry, Unix seconds>.<choices: face, notices as y/n>.<MAC>
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

PREFIX = "BP1."
_CODE = re.compile(r"^BP1\.([A-Za-z0-9_-]{16})\.(\d{9,11})\.([yn]{2})\.([A-Za-z0-9_-]{22})$")


class PreregCodeError(ValueError):
    """A code that cannot be used; ``reason`` is the slug the desk and central show."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PreregCode:
    token: str
    prereg_id: str
    expires_at: datetime
    face: bool
    notices: bool
    mac: str

    @property
    def signed_part(self) -> str:
        """What the MAC covers: everything before its last dot."""
        return self.token.rpartition(".")[0]


def is_prereg(text: str) -> bool:
    return text.strip().startswith(PREFIX)


def parse_code(token: str) -> PreregCode:
    """PreregCodeError("prereg_malformed") for anything that is not a well-formed code."""
    m = _CODE.fullmatch(token.strip())
    if m is None:
        raise PreregCodeError("prereg_malformed", "not a pre-registration code")
    pid, exp, choices, mac = m.groups()
    expires = datetime.fromtimestamp(int(exp), UTC)
    return PreregCode(token.strip(), pid, expires, choices[0] == "y", choices[1] == "y", mac)

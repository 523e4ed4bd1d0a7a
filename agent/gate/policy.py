"""Who may pass, once the gate knows who is in front of it. Pure logic, no I/O.

- **blocked / expired** readers are refused whatever the method (face or card).
- **anti-passback**: a reader who entered cannot enter again within ``passback_s`` (a card
  handed back over the turnstile to a friend is the classic trick).
- **cooldown**: the same reader still standing in front of the camera after a grant or a
  refusal is not decided again for ``cooldown_s``: one event per approach, not one per frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Method = Literal["face", "card_qr", "barcode"]


@dataclass(frozen=True)
class PatronInfo:
    patron_id: str
    display_name: str
    status: str  # "active" | "blocked" | "expired"
    expires_at: str  # ISO date, "" when unknown


@dataclass(frozen=True)
class Verdict:
    grant: bool
    reason: str  # "ok" | "blocked" | "expired" | "passback" | "unknown_patron"
    patron: PatronInfo | None
    repeat: bool = False  # within cooldown: the decision of a moment ago, not a new one


Lookup = Callable[[str], PatronInfo | None]


class GatePolicy:
    def __init__(
        self,
        lookup: Lookup,
        *,
        passback_s: float = 300.0,
        cooldown_s: float = 4.0,
        allow_unknown_patrons: bool = False,
    ) -> None:
        self.lookup = lookup
        self.passback_s = passback_s
        self.cooldown_s = cooldown_s
        self.allow_unknown = allow_unknown_patrons
        self._entered: dict[str, float] = {}
        self._last_seen: dict[str, tuple[float, Verdict]] = {}

    def decide(self, patron_id: str, method: Method, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        seen = self._last_seen.get(patron_id)
        if seen is not None and now - seen[0] < self.cooldown_s:
            self._last_seen[patron_id] = (now, seen[1])
            return Verdict(seen[1].grant, seen[1].reason, seen[1].patron, repeat=True)
        verdict = self._judge(patron_id, now)
        self._last_seen[patron_id] = (now, verdict)
        if verdict.grant:
            self._entered[patron_id] = now
        self._prune(now)
        return verdict

    def _judge(self, patron_id: str, now: float) -> Verdict:
        info = self.lookup(patron_id)
        if info is None:
            if not self.allow_unknown:
                return Verdict(False, "unknown_patron", None)
            info = PatronInfo(patron_id, "", "active", "")
        if info.status == "blocked":
            return Verdict(False, "blocked", info)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        if info.status == "expired" or (info.expires_at and info.expires_at < today):
            return Verdict(False, "expired", info)
        entered = self._entered.get(patron_id)
        if entered is not None and now - entered < self.passback_s:
            return Verdict(False, "passback", info)
        return Verdict(True, "ok", info)

    def _prune(self, now: float) -> None:
        if len(self._last_seen) > 10_000:
            self._last_seen = {
                k: v for k, v in self._last_seen.items() if now - v[0] < self.cooldown_s
            }
        if len(self._entered) > 100_000:
            self._entered = {k: v for k, v in self._entered.items() if now - v < self.passback_s}

"""The rules, pure: what is wrong now, and what changed since the last look.

A condition must hold for its kind's ``hold`` before it fires (a health flap or a kiosk that
was enrolled a minute ago and is still booting alert nobody); it fires once, and a condition
that can end says so once when it ends. A security case is an event, not a state: it fires
and never "ends".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from biblioedge.fleet.alerts.settings import AlertsConfig, Kind

#: the dashboard's attention kinds each alert kind follows
FROM_ATTENTION: dict[str, Kind] = {
    "att_degraded": "degraded",
    "att_update": "update_failed",
    "att_rollout": "rollout_halted",
    "att_security": "security",
    "att_exit_down": "exit_reader_down",
    "att_ils_held": "ils_held",
}
#: kinds that are events: they fire, and nothing says they are over
ONE_SHOT: frozenset[str] = frozenset({"security"})
#: health flaps for a minute when a camera reconnects: only a lasting one is news
HOLD: dict[str, timedelta] = {
    "degraded": timedelta(minutes=5),
    "exit_reader_down": timedelta(minutes=2),
}


@dataclass(frozen=True, slots=True)
class Condition:
    kind: Kind
    subject: str
    detail: str

    @property
    def key(self) -> str:
        # a security case is one per device and reason; a state is one per subject
        tail = f":{self.detail}" if self.kind in ONE_SHOT else ""
        return f"{self.kind}:{self.subject}{tail}"[:255]


@dataclass(frozen=True, slots=True)
class KioskSeen:
    device_id: str
    online: bool
    revoked: bool
    last_seen: datetime | None


@dataclass(frozen=True, slots=True)
class Tracked:
    """A condition as the store remembers it: since when, and whether it was sent."""

    key: str
    kind: str
    subject: str
    detail: str
    since: datetime
    fired: bool


@dataclass(frozen=True, slots=True)
class Change:
    """``fire`` (tell), ``resolve`` (tell it ended), ``track`` (remember, not yet due) or
    ``forget`` (ended before anyone was told)."""

    action: str
    key: str
    kind: str
    subject: str
    detail: str
    since: datetime


def conditions(
    cfg: AlertsConfig,
    attention: Iterable[tuple[str, str, str]],
    kiosks: Iterable[KioskSeen],
    backup_stale: str | None,
    now: datetime,
) -> dict[str, Condition]:
    """What is wrong now, by key, limited to the kinds IT chose."""
    found: list[Condition] = []
    for att, subject, detail in attention:
        kind = FROM_ATTENTION.get(att)
        if kind is not None:
            found.append(Condition(kind, subject, detail))
    limit = timedelta(minutes=cfg.offline_after_min)
    for k in kiosks:
        if k.revoked or k.online:
            continue
        if k.last_seen is None:
            found.append(Condition("never_seen", k.device_id, ""))
        elif now - k.last_seen >= limit:
            found.append(
                Condition("offline", k.device_id, k.last_seen.isoformat(timespec="minutes"))
            )
    if backup_stale is not None:
        found.append(Condition("backup_stale", "central", backup_stale))
    chosen = set(cfg.kinds)
    return {c.key: c for c in found if c.kind in chosen}


def changes(
    cfg: AlertsConfig, tracked: dict[str, Tracked], now_wrong: dict[str, Condition], now: datetime
) -> list[Change]:
    """From what the store remembers to what is wrong now."""
    out: list[Change] = []
    for key, c in now_wrong.items():
        known = tracked.get(key)
        since = known.since if known is not None else now
        if known is not None and known.fired:
            continue
        hold = HOLD.get(c.kind, timedelta(0))
        if c.kind == "never_seen":
            hold = timedelta(minutes=cfg.offline_after_min)
        action = "fire" if now - since >= hold else "track"
        if action == "track" and known is not None:
            continue  # still waiting: nothing to write
        out.append(Change(action, key, c.kind, c.subject, c.detail, since))
    for key, t in tracked.items():
        if key in now_wrong:
            continue
        # a security case leaves the list after its window: nothing to tell, only to forget
        action = "resolve" if t.fired and t.kind not in ONE_SHOT else "forget"
        out.append(Change(action, key, t.kind, t.subject, t.detail, t.since))
    return out

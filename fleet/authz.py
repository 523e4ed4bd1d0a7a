"""What each kiosk role may say to central, and what central does when one says more.

Mutual TLS proves which device sent a message, and the broker's ACL confines it to its own
topics. Neither says that a gate may not register readers. This module is the one table of
what each role may send (event types) and report (state fields), applied at ingest before any
effect: a refused event is not stored as data, is acknowledged as rejected, is counted, and
raises a security attention case naming the device. The role is the registry's (set at
enrollment from the certificate), never the message's.

Derived from what the agents send today (agent/gate/, agent/selfcheck/, agent/desk/,
agent/exitgate/, agent/events.py and the updaters; the simulated kiosks of sim/roles.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from biblioedge.fleet.store.cases import add_central_event
from biblioedge.protocol import (
    DEVICE_EVENT_TYPES,
    GALLERY_ROLES,
    ProtocolError,
    ReportedState,
)

#: What every role sends about itself: start, health, configuration and updates.
DEVICE_EVENTS: frozenset[str] = DEVICE_EVENT_TYPES

#: The table: event types each role may send. Anything else from that role is refused.
EVENTS_BY_ROLE: dict[str, frozenset[str]] = {
    "gate": frozenset({"gate.decision", "gate.alarm"}) | DEVICE_EVENTS,
    "selfcheck": frozenset(
        {
            "circ.checkout",
            "circ.checkin",
            "circ.renew",
            "circ.offline_queued",
            "circ.attention",
            "circ.reconciled",
        }
    )
    | DEVICE_EVENTS,
    # desk.registration is the only one with an effect (a reader, a card); the other three
    # are the desk simulator's audit events, stored as data
    "desk": frozenset({"desk.registration", "reader.registered", "consent.recorded", "card.issued"})
    | DEVICE_EVENTS,
    "exitgate": frozenset({"exit.alarm", "exit.passages"}) | DEVICE_EVENTS,
}

#: State fields every role reports.
COMMON_STATE_FIELDS: frozenset[str] = frozenset(
    {
        "device_id",
        "site",
        "role",
        "online",
        "software",
        "started_at",
        "desired_version",
        "desired_error",
        "outbox_depth",
        "components",
        "degraded",
        "update",
        "models",
        "model_update",
        "config_release",
        "config_update",
        "reported_at",
        "replayed",  # the restore's replay it carried out: every role keeps events
    }
)

#: The table: state fields each role may report with a value other than the default. The
#: gallery version makes central send gallery deltas, so only the roles that hold the
#: gallery (protocol.GALLERY_ROLES) may report one.
STATE_FIELDS_BY_ROLE: dict[str, frozenset[str]] = {
    "gate": COMMON_STATE_FIELDS | {"gallery_version"},
    "selfcheck": COMMON_STATE_FIELDS | {"gallery_version"},
    "desk": COMMON_STATE_FIELDS,
    "exitgate": COMMON_STATE_FIELDS,
}

#: A state report is a few hundred bytes; anything near this is not one.
MAX_STATE_BYTES = 16 * 1024
#: ReportedState nests three levels at most (update -> last -> fields).
MAX_STATE_DEPTH = 6
#: Components a kiosk reports the health of (it runs about ten).
MAX_STATE_COMPONENTS = 64

#: The attention cases central raises. Devices cannot send this type (it is in no role's
#: table and not in protocol.EVENT_TYPES), so a case on the dashboard is central's own.
SECURITY_ATTENTION = "security.attention"


class Refused(ProtocolError):
    """A message the device may not send: refused like any bad message, and also raised as
    a security attention case naming the device (an honest kiosk never sends one)."""


def may_send(role: str, event_type: str) -> bool:
    return event_type in EVENTS_BY_ROLE.get(role, frozenset())


def check_event(role: str | None, event_type: str) -> None:
    """Refused unless ``role`` (the registry's) may send ``event_type``. ``None``: a device
    admitted without a certificate (central with security.require off) whose role is not
    known yet; it has no identity to authorize, so nothing is checked."""
    if role is not None and not may_send(role, event_type):
        raise Refused("role_forbidden", f"a {role} may not send {event_type}")


def check_state(role: str | None, site: str, state: ReportedState) -> None:
    """Refused when the report claims another role or site than the registry's, or reports a
    field its role has no business with."""
    if state.site != site:
        raise Refused("site_mismatch", f"reports site {state.site}, registered at {site}")
    if role is None:
        return
    if state.role != role:
        raise Refused("role_mismatch", f"reports role {state.role}, registered as {role}")
    allowed = STATE_FIELDS_BY_ROLE.get(role, COMMON_STATE_FIELDS)
    if role in GALLERY_ROLES:  # a role that comes to hold the gallery reports its version
        allowed = allowed | {"gallery_version"}
    for name, info in ReportedState.model_fields.items():
        if name not in allowed and getattr(state, name) != info.get_default(
            call_default_factory=True
        ):
            raise Refused("state_field_forbidden", f"a {role} may not report {name}")
    if len(state.components) > MAX_STATE_COMPONENTS:
        raise ProtocolError("state_oversized", f"{len(state.components)} components")


def check_state_size(payload: bytes) -> None:
    if len(payload) > MAX_STATE_BYTES:
        raise ProtocolError("state_oversized", f"{len(payload)} bytes > {MAX_STATE_BYTES}")


@dataclass(frozen=True)
class SecurityCase:
    device_id: str
    site: str
    reason: str
    detail: str


class SecurityCases:
    """Raises at most one attention case per device and reason per ``window_s``: a flood of
    forbidden events is one case for IT (the metrics count every refusal), not thousands."""

    def __init__(self, window_s: float = 600.0, max_tracked: int = 10_000) -> None:
        self.window_s = window_s
        self.max_tracked = max_tracked
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def due(self, device_id: str, reason: str) -> bool:
        now = time.monotonic()
        key = (device_id, reason)
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.window_s:
                return False
            if len(self._last) >= self.max_tracked:  # bounded, whatever ids arrive
                cutoff = now - self.window_s
                self._last = {k: t for k, t in self._last.items() if t > cutoff}
                if len(self._last) >= self.max_tracked:
                    self._last.clear()
            self._last[key] = now
            return True

    def raise_in(
        self, conn: Connection, case: SecurityCase, role: str | None, now: datetime
    ) -> bool:
        """Store the case (in the transaction of the refusal) if one is due; True if so."""
        if not self.due(case.device_id, case.reason):
            return False
        payload: dict[str, Any] = {
            "reason": case.reason,
            "detail": case.detail[:300],
            "role": role or "",
            "window_s": self.window_s,
        }
        add_central_event(conn, case.device_id, case.site, SECURITY_ATTENTION, payload, now)
        return True


class GalleryResends:
    """Per-device token bucket for gallery resends asked for by state reports: a kiosk
    reporting ``gallery_version: 0`` over and over gets a few full deltas, not one per report.
    Changes made at central (a registration, an erasure) are not limited by this."""

    def __init__(self, burst: int = 3, every_s: float = 30.0, max_tracked: int = 10_000) -> None:
        self.burst = burst
        self.every_s = every_s
        self.max_tracked = max_tracked
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, device_id: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(device_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) / self.every_s)
        if len(self._buckets) >= self.max_tracked and device_id not in self._buckets:
            self._buckets.clear()
        if tokens < 1.0:
            self._buckets[device_id] = (tokens, now)
            return False
        self._buckets[device_id] = (tokens - 1.0, now)
        return True

"""Per-device quotas and fair scheduling of what devices send to central.

Why this shape: a stolen kiosk holds a valid certificate, so the broker lets it publish as
fast as its link allows. Central must neither store all of it (disk) nor let it delay the
honest kiosks' acks (one shared queue, first come first served). So:

- every device has its own small queue; the ingest worker takes one message per device in
  turn (round robin), so a flooder gets its turn like everyone else, no more; and a device
  that overflowed its queue in the last ``DEMOTED_S`` seconds is served last, one message per
  transaction: its quota is what it may get, never a transaction that the honest kiosks'
  acks wait for. No honest kiosk overflows: it has at most ``sync.max_inflight_batches`` (8)
  messages unacknowledged, and the queue holds four times that (room for resends);
- a message leaves its device's queue only when the device's token buckets (events, messages,
  stored bytes, per role, with bursts) cover it: beyond its quota a device is *paced*, and
  what does not fit in its queue is refused before it is stored and *not acknowledged*. A
  kiosk keeps unacknowledged events and sends them again, so an honest kiosk draining days of
  backlog loses nothing, it only waits; a flooder's surplus is dropped, counted per device and
  reason, and a device that stays over quota is reported once (log and ``on_over_quota``).

The buckets live in memory: a restart of central refills them (one more burst at most).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson

from biblioedge.fleet.config import QuotaConfig, RoleQuota
from biblioedge.fleet.repo import Incoming

log = logging.getLogger("biblioedge.fleet.quotas")

MB = 1024 * 1024

#: how long a device that overflowed its queue is served after the others
DEMOTED_S = 10.0

#: refusal reasons that are the device's doing (``central_busy`` is central's): a device
#: refused for these without a pause is reported as staying over its quota
QUOTA_REASONS = frozenset(
    {"batch_size", "events_rate", "messages_rate", "stored_volume", "device_queue_full"}
)


class TokenBucket:
    """``capacity`` tokens at most, refilled at ``rate`` per second; all or nothing."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def level(self, now: float) -> float:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def wait(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` is covered (0: now). A cost above the capacity is clipped
        to it, so nothing waits forever after a quota was lowered."""
        missing = min(cost, self.capacity) - self.level(now)
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, cost: float, now: float) -> bool:
        cost = min(cost, self.capacity)
        if self.level(now) < cost:
            return False
        self.tokens -= cost
        return True

    def reshape(self, rate: float, capacity: float, now: float) -> None:
        self.level(now)
        self.rate = rate
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity)


@dataclass(frozen=True)
class OverQuota:
    """A device refused over its quota for ``alert_after_s`` without a pause."""

    site: str
    device_id: str
    role: str | None
    since: float
    refused: dict[str, int]


@dataclass
class _Device:
    site: str
    role: str | None
    quota: RoleQuota
    events: TokenBucket
    messages: TokenBucket
    volume: TokenBucket
    #: (message, its event count) waiting for their turn
    queue: deque[tuple[Incoming, int]] = field(default_factory=deque)
    refused: dict[str, int] = field(default_factory=dict)
    role_checked: float = -math.inf
    over_since: float | None = None
    last_refused: float = -math.inf
    last_overflow: float = -math.inf
    reported: bool = False


def count_events(payload: bytes) -> int:
    """Events a message claims to carry (what its quota is charged); a message that does not
    parse costs one (the repository refuses it with its own reason)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return 1
    events = doc.get("events") if isinstance(doc, dict) else None
    return len(events) if isinstance(events, list) else 1


class Scheduler:
    """The fair, quota-aware queue between the bridge's receive loop and its ingest worker.
    Single-threaded (the bridge's event loop); ``clock`` is injectable for tests."""

    def __init__(
        self,
        cfg: QuotaConfig,
        clock: Callable[[], float] = time.monotonic,
        on_over_quota: Callable[[OverQuota], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.on_over_quota = on_over_quota
        self._devices: dict[str, _Device] = {}
        #: devices with waiting messages, in turn order
        self._ring: deque[str] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def full(self) -> bool:
        return self._size >= self.cfg.max_queued

    def _device(self, msg: Incoming, now: float) -> _Device:
        dev = self._devices.get(msg.device_id)
        if dev is None:
            q = self.cfg.for_role(None)
            dev = _Device(
                site=msg.site,
                role=None,
                quota=q,
                events=TokenBucket(q.events_per_s, q.burst_events, now),
                messages=TokenBucket(q.messages_per_s, q.burst_messages, now),
                volume=TokenBucket(q.stored_mb_per_day * MB / 86400, q.burst_stored_mb * MB, now),
            )
            self._devices[msg.device_id] = dev
        return dev

    # -- roles (from central's registry) -------------------------------------------------

    def unchecked_roles(self, every_s: float = 30.0) -> list[str]:
        """Devices whose role was not looked up in the last ``every_s`` seconds."""
        now = self.clock()
        return [d for d, dev in self._devices.items() if now - dev.role_checked >= every_s]

    def set_roles(self, roles: dict[str, str | None], checked: Iterable[str] = ()) -> None:
        """Apply the registry's roles; ``checked`` devices are not asked about again for a
        while even if the answer had nothing on them (a failed look-up)."""
        now = self.clock()
        for device_id in checked:
            if device_id in self._devices:
                self._devices[device_id].role_checked = now
        for device_id, dev in self._devices.items():
            if device_id not in roles:
                continue
            dev.role_checked = now
            role = roles[device_id]
            if role == dev.role:
                continue
            q = self.cfg.for_role(role)
            dev.role, dev.quota = role, q
            dev.events.reshape(q.events_per_s, q.burst_events, now)
            dev.messages.reshape(q.messages_per_s, q.burst_messages, now)
            dev.volume.reshape(q.stored_mb_per_day * MB / 86400, q.burst_stored_mb * MB, now)

    # -- in and out ----------------------------------------------------------------------

    def offer(self, msg: Incoming) -> str | None:
        """Queue ``msg`` for storing, or say why it is refused (not stored, not acked). A
        full queue is judged before the message is parsed: refusing a flood costs little."""
        now = self.clock()
        dev = self._device(msg, now)
        reason: str | None = None
        events = 0
        if len(dev.queue) >= self.cfg.max_queued_per_device:
            reason = self._blocked(dev, *dev.queue[0], now) or "device_queue_full"
            dev.last_overflow = now
        elif self._size >= self.cfg.max_queued:
            reason = "central_busy"
        elif msg.channel == "events":
            events = count_events(msg.payload)
            if self.cfg.enabled and events > dev.quota.batch_events:
                reason = "batch_size"
        if reason is not None:
            self._refused(msg.device_id, dev, reason, now)
            return reason
        if not dev.queue:
            self._ring.append(msg.device_id)
        dev.queue.append((msg, events))
        self._size += 1
        return None

    def take(self, limit: int) -> list[Incoming]:
        """Up to ``limit`` messages, one per device in turn, each within its device's quota;
        then one message of the demoted devices (recent overflow), so that a flood never makes
        a transaction, and the acks waiting on it, longer than one message."""
        now = self.clock()
        out = self._take(limit, now, demoted=False)
        return out + self._take(1, now, demoted=True)

    def _take(self, limit: int, now: float, demoted: bool) -> list[Incoming]:
        out: list[Incoming] = []
        while len(out) < limit and self._ring:
            progressed = False
            for _ in range(len(self._ring)):
                device_id = self._ring.popleft()
                dev = self._devices[device_id]
                msg, events = dev.queue[0]
                if (now - dev.last_overflow < DEMOTED_S) != demoted:
                    self._ring.append(device_id)
                    continue
                if self._blocked(dev, msg, events, now) is None:
                    self._charge(dev, msg, events, now)
                    dev.queue.popleft()
                    self._size -= 1
                    out.append(msg)
                    progressed = True
                if dev.queue:
                    self._ring.append(device_id)
                if len(out) >= limit:
                    break
            if not progressed:
                break
        return out

    def ready_in(self) -> float | None:
        """Seconds until some waiting message is within its quota; None: nothing waits."""
        if not self._ring:
            return None
        now = self.clock()
        best = math.inf
        for device_id in self._ring:
            dev = self._devices[device_id]
            best = min(best, self._wait(dev, *dev.queue[0], now))
            if best <= 0:
                return 0.0
        return best

    def refused(self) -> dict[tuple[str, str], int]:
        """Messages refused so far, by (device, reason)."""
        return {(d, r): n for d, dev in self._devices.items() for r, n in dev.refused.items()}

    # -- the buckets -----------------------------------------------------------------------

    def _costs(
        self, dev: _Device, msg: Incoming, events: int
    ) -> Iterable[tuple[str, TokenBucket, float]]:
        yield "messages_rate", dev.messages, 1.0
        if msg.channel == "events":
            yield "events_rate", dev.events, float(events)
            yield "stored_volume", dev.volume, float(len(msg.payload))

    def _wait(self, dev: _Device, msg: Incoming, events: int, now: float) -> float:
        if not self.cfg.enabled:
            return 0.0
        return max(b.wait(cost, now) for _, b, cost in self._costs(dev, msg, events))

    def _blocked(self, dev: _Device, msg: Incoming, events: int, now: float) -> str | None:
        if not self.cfg.enabled:
            return None
        for reason, bucket, cost in self._costs(dev, msg, events):
            if bucket.wait(cost, now) > 0:
                return reason
        return None

    def _charge(self, dev: _Device, msg: Incoming, events: int, now: float) -> None:
        if self.cfg.enabled:
            for _, bucket, cost in self._costs(dev, msg, events):
                bucket.take(cost, now)

    def _refused(self, device_id: str, dev: _Device, reason: str, now: float) -> None:
        dev.refused[reason] = dev.refused.get(reason, 0) + 1
        if reason not in QUOTA_REASONS:
            return
        if now - dev.last_refused > min(10.0, self.cfg.alert_after_s):  # a pause: start over
            dev.over_since, dev.reported = now, False
        dev.last_refused = now
        since = dev.over_since if dev.over_since is not None else now
        if not dev.reported and now - since >= self.cfg.alert_after_s:
            dev.reported = True
            over = OverQuota(dev.site, device_id, dev.role, since, dict(dev.refused))
            log.warning(
                "device %s/%s (%s) stays over its quota: %s",
                dev.site,
                device_id,
                dev.role or "role unknown",
                ", ".join(f"{r} {n}" for r, n in sorted(dev.refused.items())),
            )
            if self.on_over_quota is not None:
                try:
                    self.on_over_quota(over)
                except Exception:  # a hook's bug must not stop the receive loop
                    log.exception("over-quota hook failed for %s", device_id)

"""Failed-authentication throttling per client address, in memory and bounded.

A wrong bearer token or dashboard sign-in costs central a database look-up and a thread; a
client that keeps failing would make central do that work thousands of times a second and
slow everyone else. So failures are counted per address (an IPv6 client per /64: one host
owns a whole /64), and an address with ``limit`` failures within ``window_s`` is locked
out: central answers 429 with ``Retry-After`` before any look-up. Each lockout of the same
address doubles the next one (back-off) up to ``max_lockout_s``; a success clears it.

Memory is bounded: at most ``max_entries`` addresses are tracked, the least recently seen
dropped first, so an attacker with many addresses costs a fixed amount of memory (and can
at worst make central forget some other address's failures, never lock out a new one).
Nothing is persisted: a restart forgets every count, which only ever favours the client.

A locked-out request is answered cheaply, but a client on a keep-alive connection could
still ask hundreds of times a second and keep central's one event loop busy. So its 429 is
held back ``hold_s`` (one second) first: each connection of a locked-out client then costs
one sleeping coroutine and gets one answer a second, and more connections cost the client a
TLS handshake each. At most ``max_held`` answers are held at once; beyond that they go out
at once (memory stays bounded, the refusal stays cheap).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Entry:
    failures: list[float] = field(default_factory=list)  # times within the window, oldest first
    locked_until: float = 0.0
    lockouts: int = 0  # consecutive lockouts: the back-off exponent
    last_lockout_end: float = 0.0


def client_key(host: str | None) -> str:
    """The address a client is counted under: IPv4 as is, IPv6 by its /64."""
    if not host:
        return "?"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{addr}/64", strict=False))
    return str(addr)


class FailureThrottle:
    def __init__(
        self,
        limit: int,
        window_s: float,
        lockout_s: float,
        max_lockout_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        hold_s: float = 1.0,
        max_held: int = 1000,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_lockout_s = max_lockout_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.hold_s = hold_s
        self.max_held = max_held
        self._held = 0

    def __len__(self) -> int:
        return len(self._entries)

    def retry_after(self, key: str) -> int | None:
        """Whole seconds until ``key`` may try again, or None when it may now."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        left = entry.locked_until - self.clock()
        return int(math.ceil(left)) if left > 0 else None

    def failed(self, key: str) -> int | None:
        """Count a failure; the lockout it starts, in seconds, or None."""
        now = self.clock()
        entry = self._entries.pop(key, None) or _Entry()
        self._entries[key] = entry  # most recently seen last
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        if entry.locked_until > now:
            return None  # already locked out (a request that was let through meanwhile)
        if entry.lockouts and now - entry.last_lockout_end > self.max_lockout_s:
            entry.lockouts = 0  # well behaved for a long while: back-off starts over
        cutoff = now - self.window_s
        entry.failures = [t for t in entry.failures if t > cutoff]
        entry.failures.append(now)
        if len(entry.failures) < self.limit:
            return None
        seconds = min(self.lockout_s * 2**entry.lockouts, self.max_lockout_s)
        entry.lockouts += 1
        entry.failures.clear()
        entry.locked_until = now + seconds
        entry.last_lockout_end = entry.locked_until
        return int(math.ceil(seconds))

    def succeeded(self, key: str) -> None:
        """A correct token from ``key``: its count and back-off start over."""
        self._entries.pop(key, None)

    async def hold(self) -> None:
        """Hold a locked-out client's answer back a moment (see the module's docstring)."""
        if self.hold_s <= 0 or self._held >= self.max_held:
            return
        self._held += 1
        try:
            await asyncio.sleep(self.hold_s)
        finally:
            self._held -= 1

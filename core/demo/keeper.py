"""Keeps the demo's fleet up: notices a child process that died, says why, starts it again.

The fleet in production runs under systemd, which does this for each unit; the demo has no
systemd, so this is its small stand-in. A child that keeps dying (more than ``budget`` times
in ``window_s``) is not restarted again: the demo stops and says which one.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("biblioedge.demo")


class Process(Protocol):
    name: str

    def start(self) -> None: ...

    def alive(self) -> bool: ...

    @property
    def returncode(self) -> int | None: ...

    def log_tail(self, lines: int = 30) -> str: ...


def cause_of(child: Process) -> str:
    """The exit status in words, and the last line its log says went wrong."""
    code = child.returncode
    if code is None:
        status = "gone"
    elif code < 0:
        try:
            status = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            status = f"killed by signal {-code}"
    else:
        status = f"exit code {code}"
    lines = [ln.strip() for ln in child.log_tail(40).splitlines() if ln.strip()]
    bad = [ln for ln in lines if any(w in ln for w in ("ERROR", "CRITICAL", "Error", "error"))]
    last = (bad or lines or [""])[-1][:200]
    return f"{status}; log: {last}" if last else status


class Keeper:
    def __init__(
        self,
        children: list[Process],
        say: Callable[[str], None],
        budget: int = 5,
        window_s: float = 300.0,
    ) -> None:
        self.children = children
        self.say = say
        self.budget = budget
        self.window_s = window_s
        self.restarts: dict[str, deque[float]] = {c.name: deque() for c in children}

    def check(self) -> str | None:
        """Restart whatever died; the reason to give up, or None."""
        for child in self.children:
            if child.alive():
                continue
            cause = cause_of(child)
            now = time.monotonic()
            recent = self.restarts[child.name]
            while recent and now - recent[0] > self.window_s:
                recent.popleft()
            if len(recent) >= self.budget:
                return (
                    f"{child.name} died {len(recent) + 1} times in {self.window_s:.0f} s ({cause})"
                )
            recent.append(now)
            self.say(f"{child.name} stopped ({cause}): restarting it")
            log.error("%s stopped (%s): restarting it", child.name, cause)
            try:
                child.start()
            except (OSError, TimeoutError) as exc:
                self.say(f"{child.name} did not start again: {exc}")
        return None

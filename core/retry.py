"""Capped, jittered exponential backoff and once-per-transition failure logging."""

from __future__ import annotations

import logging
import random


class Backoff:
    """Full-jitter backoff (AWS style): a fleet reconnecting after a broker restart spreads out."""

    def __init__(self, base: float = 0.2, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Transition:
    """Log a failure once when it starts and once when it ends, not once per retry."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.failing = False

    def failed(self, reason: object) -> None:
        if not self.failing:
            self.failing = True
            self.log.warning("%s failing: %s", self.what, reason)

    def ok(self) -> None:
        if self.failing:
            self.failing = False
            self.log.info("%s recovered", self.what)

"""One rewrite for a burst of changes, each caller still waiting for a rewrite that has it.

Why: every enrollment and revocation rewrites the broker's ACL (and CRL) from the whole
registry and asks mosquitto to reload. Enrolling a province's fleet (a thousand kiosks, a
few at a time) rewrote a file that grows with the fleet once per kiosk and reloaded the
broker as often: quadratic work, five minutes for a thousand kiosks. Here a burst shares
rewrites the way a database's group commit shares an fsync:

- a caller whose change is committed calls :meth:`Coalesced.request`;
- if no rewrite is running, it runs one itself; otherwise it waits for the running one to
  end and then, unless a rewrite that *started after its request* has already finished,
  runs the next one, which reads everything committed meanwhile;
- so :meth:`request` returns only after a rewrite that began after the caller's change
  has completed: a kiosk is in the ACL (and the broker asked to reload) before its
  enrollment call returns, exactly as when each call rewrote alone.

A rewrite that fails raises in the caller that ran it; the callers waiting on it are not
covered by it, so the next of them runs the rewrite again (a failure is retried, never
taken for success).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Coalesced:
    """Runs ``rewrite`` (thread-safe to call from any number of threads), at most one at
    a time, each run covering every request made before it started."""

    def __init__(self, rewrite: Callable[[], None]) -> None:
        self._rewrite = rewrite
        self._cond = threading.Condition()
        #: requests made so far (a request's number is its ticket)
        self._requested = 0
        #: every request up to this ticket is covered by a finished rewrite
        self._covered = 0
        self._running = False
        #: rewrites run (for tests and the log: how much a burst was coalesced)
        self.runs = 0

    @property
    def pending(self) -> int:
        """Requests not yet covered by a finished rewrite (waiting, or running one)."""
        with self._cond:
            return self._requested - self._covered

    def request(self) -> None:
        """Returns once a rewrite that started after this call has finished (raises what
        that rewrite raised, if this caller ran it)."""
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while True:
                if self._covered >= ticket:
                    return
                if not self._running:
                    break
                self._cond.wait()
            self._running = True
            upto = self._requested  # every request so far committed its change before it
        ok = False
        try:
            self._rewrite()
            ok = True
        finally:
            with self._cond:
                self._running = False
                self.runs += 1
                if ok:
                    self._covered = max(self._covered, upto)
                self._cond.notify_all()

"""Header and body deadlines for central's HTTP server (slow clients, "slowloris").

uvicorn (0.55, h11) bounds a request's header size (``h11_max_incomplete_event_size``) and
closes an idle keep-alive connection after ``timeout_keep_alive``, but that timer is
cancelled by the first byte of the next request and is not armed at all on a new
connection: a client that sends a header byte every few seconds holds a connection (and a
file descriptor) for ever, and a few thousand of them exhaust the server. uvicorn has no
option for it, so central runs its own subclass of uvicorn's h11 protocol:

- a *header deadline*: from connecting (after TLS) or from the previous response, the
  request line and headers must be complete within ``header_s``; the deadline is not moved
  by the bytes that trickle in;
- a *body pace*: while a body is being read, every ``body_s`` must bring at least
  ``MIN_BODY_BYTES`` (1 KiB), or the connection is closed: silence and a byte-at-a-time
  trickle alike. A window in which central itself stopped reading (flow control: the route
  has not consumed what it has) does not count, and a long upload that keeps sending, even
  over a poor link, is not cut.

Either closes the connection without a response: a client that slow cannot be expected to
read one, and the request it was making never reached the application.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: the least a request body must bring in each ``body_s`` window
MIN_BODY_BYTES = 1024


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines above; made by ``guarded_h11``."""

    header_s: float = 10.0
    body_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str = ""
        self._window_bytes = 0  # body bytes since the body window began

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._watch()

    def data_received(self, data: bytes) -> None:
        self._window_bytes += len(data)
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    # -- the deadlines -------------------------------------------------------------------

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _watch(self) -> None:
        """Arm, keep or drop the deadline for where the connection now is."""
        if self.transport is None or self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            phase, seconds = "headers", self.header_s
        elif state is h11.SEND_BODY:
            phase, seconds = "body", self.body_s
        else:
            phase, seconds = "", 0.0  # request complete: the application has it
        if phase and phase == self._phase and self._deadline is not None:
            return  # fixed deadlines: trickling bytes do not move them
        self._cancel()
        self._phase = phase
        self._window_bytes = 0
        if phase:
            self._deadline = self.loop.call_later(seconds, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._phase == "body" and (
            self.flow.read_paused or self._window_bytes >= MIN_BODY_BYTES
        ):
            # keeping pace, or central is not reading (the route is behind): next window
            self._window_bytes = 0
            self._deadline = self.loop.call_later(self.body_s, self._expired)
            return
        if self._phase == "headers" and self.conn.their_state is not h11.IDLE:
            return  # raced with a request that completed
        self.logger.info(
            "closing a connection from %s: %s too slow", self.client and self.client[0], self._phase
        )
        self.transport.close()


def guarded_h11(header_s: float, body_s: float) -> type[GuardedH11Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    return type(
        "GuardedH11Protocol", (GuardedH11Protocol,), {"header_s": header_s, "body_s": body_s}
    )

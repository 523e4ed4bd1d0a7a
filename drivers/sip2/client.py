"""A SIP2 client over TCP or TLS, for one self-check's account at the library system.

One request at a time, read to the terminator, each with a timeout. A reply with a bad
checksum or another sequence number is asked for again (97) a few times; a server's own
resend request (96) is answered with the last frame. A reply with our sequence number but
another command is the server's answer all the same (often: "not implemented"), so the wait
ends there. A dropped connection is reopened and logged in again once per request; what
still fails is a Sip2Error (ReplyLost when the request went out), never a socket error. A
checkout or renewal whose reply was lost is *not* simply sent again (the loan may have
happened): the caller asks the item's status first.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from biblioedge.drivers.sip2.codec import (
    Dialect,
    Reply,
    Sip2ChecksumError,
    Sip2Error,
    decode,
    encode,
)

log = logging.getLogger("biblioedge.drivers.sip2")

MAX_FRAME = 64 * 1024


class LoginRefused(Sip2Error):
    """The library system refused the account's login (93 answered with ok = 0)."""


class ReplyLost(Sip2Error):
    """The request went out but no usable reply came back: it may or may not have happened."""


class UnexpectedReply(ReplyLost):
    """The server answered the request (its sequence number) with another message, as some
    servers do for messages they do not implement: waiting longer would not help."""


@dataclass(frozen=True)
class Account:
    host: str
    port: int
    user: str = ""
    password: str = ""
    institution: str = ""
    location: str = ""
    tls: bool = False
    cafile: str | None = None
    dialect: Dialect = field(default_factory=Dialect)
    timeout_s: float = 10.0
    #: how readers are identified: 63 patron information, 23 patron status, or auto (63,
    #: and 23 from then on when the server cannot answer 63)
    patron: str = "auto"

    @classmethod
    def from_url(cls, url: str) -> Account:
        """``sip2://USER:PASSWORD@HOST:PORT?institution=I&location=L&encoding=E`` (sip2s: TLS;
        also ``error_detection=0|1``, ``terminator=cr|crlf``, ``timeout=S``, ``cafile=PATH``,
        ``patron=auto|63|23``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("sip2", "sip2s"):
            raise ValueError(
                f"the library system URL is sip2:// or sip2s://, not {parts.scheme}://"
            )
        if not parts.hostname:
            raise ValueError("the library system URL names no host")
        try:
            port = parts.port or 6001
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r}") from exc
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(q) - {"institution", "location", "encoding", "error_detection"}
        unknown -= {"terminator", "timeout", "cafile", "patron"}
        if unknown:
            raise ValueError(f"unknown library system URL options: {', '.join(sorted(unknown))}")
        try:
            dialect = Dialect(
                encoding=q.get("encoding", "utf-8"),
                error_detection=q.get("error_detection", "1") not in ("0", "false", "no"),
                terminator=b"\r\n" if q.get("terminator", "cr").lower() == "crlf" else b"\r",
            )
        except LookupError as exc:
            raise ValueError(f"unknown encoding {q.get('encoding')!r}") from exc
        try:
            timeout = float(q.get("timeout", "10"))
        except ValueError as exc:
            raise ValueError("timeout is a number of seconds") from exc
        if not 0 < timeout <= 300:
            raise ValueError("timeout is between 0 and 300 seconds")
        patron = q.get("patron", "auto")
        if patron not in ("auto", "63", "23"):
            raise ValueError("patron is auto, 63 (patron information) or 23 (patron status)")
        return cls(
            host=parts.hostname,
            port=port,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            institution=q.get("institution", ""),
            location=q.get("location", ""),
            tls=parts.scheme == "sip2s",
            cafile=q.get("cafile"),
            dialect=dialect,
            timeout_s=timeout,
            patron=patron,
        )


class Sip2Client:
    def __init__(self, account: Account, retries: int = 3) -> None:
        self.account = account
        self.retries = retries
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._seq = 0
        self.round_trips = 0
        #: (to the library system's number, back): a library system that knows readers by
        #: another number than the kiosk's (agent/selfcheck/card_numbers.py); every patron
        #: identifier (AA) going out and coming back is translated, in every message
        self.numbers: tuple[Callable[[str], str], Callable[[str], str]] | None = None

    # -- connection ---------------------------------------------------------------------

    def connect(self) -> None:
        a = self.account
        try:
            raw = socket.create_connection((a.host, a.port), timeout=a.timeout_s)
        except OSError as exc:
            raise Sip2Error(f"cannot reach the library system at {a.host}:{a.port}: {exc}") from exc
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: socket.socket = raw
        if a.tls:
            ctx = ssl.create_default_context(cafile=a.cafile)
            try:
                sock = ctx.wrap_socket(raw, server_hostname=a.host)
            except (OSError, ssl.SSLError) as exc:
                raw.close()
                raise Sip2Error(f"TLS to the library system failed: {exc}") from exc
        self._sock, self._buffer = sock, b""
        if a.user:
            try:
                self.login()
            except (OSError, ReplyLost) as exc:  # OSError: reset, closed, timed out
                self.close()
                raise Sip2Error(f"the library system did not answer the login: {exc}") from exc

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> Sip2Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def login(self) -> None:
        a = self.account
        reply = self._exchange(
            "93", "00", [("CN", a.user), ("CO", a.password), ("CP", a.location or None)], "94"
        )
        if not reply.flag(0):
            raise LoginRefused(f"the library system refused the login of {a.user!r}")

    # -- one exchange -------------------------------------------------------------------

    def request(
        self, command: str, fixed: str, fields: list[tuple[str, str | None]], expect: str
    ) -> Reply:
        """Send and read the reply, reconnecting once if the connection is gone. Whatever
        goes wrong is a Sip2Error: ReplyLost when the request went out and no usable reply
        came back (the connection is then closed, so that nothing of that exchange is read as
        the answer to the next request)."""
        if self.numbers is not None:
            return self._translated(command, fixed, fields, expect, *self.numbers)
        if self._sock is None:
            self.connect()
        try:
            return self._exchange_or_close(command, fixed, fields, expect)
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.warning("library system connection lost (%s): reconnecting", exc)
            self.close()
            if command in ("11", "29"):  # it may have happened: the caller checks the item
                raise ReplyLost(f"the reply to {command} was lost: {exc}") from exc
            self.connect()
            try:
                return self._exchange_or_close(command, fixed, fields, expect)
            except (ConnectionError, TimeoutError, OSError) as again:
                self.close()
                raise ReplyLost(f"no reply to {command}, twice: {again}") from again

    def _translated(
        self,
        command: str,
        fixed: str,
        fields: list[tuple[str, str | None]],
        expect: str,
        out: Callable[[str], str],
        back: Callable[[str], str],
    ) -> Reply:
        numbers, self.numbers = self.numbers, None
        try:
            sent = [(k, out(v) if k == "AA" and v else v) for k, v in fields]
            reply = self.request(command, fixed, sent, expect)
        finally:
            self.numbers = numbers
        if "AA" in reply.fields:
            reply.fields["AA"] = [back(v) if v else v for v in reply.fields["AA"]]
        return reply

    def _exchange_or_close(
        self, command: str, fixed: str, fields: list[tuple[str, str | None]], expect: str
    ) -> Reply:
        try:
            return self._exchange(command, fixed, fields, expect)
        except ReplyLost:
            self.close()
            raise

    def _exchange(
        self, command: str, fixed: str, fields: list[tuple[str, str | None]], expect: str
    ) -> Reply:
        d = self.account.dialect
        seq = self._seq
        self._seq = (self._seq + 1) % 10
        frame = encode(command, fixed, fields, d, seq)
        self._send(frame)
        for _ in range(self.retries + 1):
            try:
                reply = decode(self._read_frame(), d)
            except Sip2ChecksumError as exc:
                # 97, never our own frame again: a checkout the server did act on must not be
                # sent twice because its answer was garbled on the way back
                log.warning("library system reply failed its checksum (%s): asking again", exc)
                self._send(encode("97", "", [], d, None))
                continue
            except Sip2Error as exc:
                log.warning("unusable reply from the library system: %s", exc)
                continue
            if reply.command == "96":  # the server asks for our last frame again
                self._send(frame)
                continue
            ours = d.error_detection and reply.sequence == seq
            if reply.command != expect and ours:
                raise UnexpectedReply(
                    f"the library system answered {command} with {reply.command}: "
                    f"it does not seem to implement {command}"
                )
            if reply.command != expect or (
                d.error_detection and reply.sequence is not None and reply.sequence != seq
            ):
                log.warning(
                    "ignoring a %s reply (seq %s) while waiting for %s (seq %d)",
                    reply.command,
                    reply.sequence,
                    expect,
                    seq,
                )
                continue
            self.round_trips += 1
            return reply
        raise ReplyLost(f"no usable reply to {command} after {self.retries} attempts")

    def _send(self, frame: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(frame)

    def _read_frame(self) -> bytes:
        assert self._sock is not None
        deadline = time.monotonic() + self.account.timeout_s
        while b"\r" not in self._buffer:
            if len(self._buffer) > MAX_FRAME:
                self._buffer = b""
                raise Sip2Error("a reply longer than 64 KiB without a terminator")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the library system did not answer in time")
            self._sock.settimeout(left)
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionError("the library system closed the connection")
            self._buffer += chunk
        frame, _, rest = self._buffer.partition(b"\r")
        self._buffer = rest[1:] if rest.startswith(b"\n") else rest
        return frame.lstrip(b"\n")


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)

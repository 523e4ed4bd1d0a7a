"""The exit security gate: an RFID reader in continuous inventory at the door, an alarm for
any item that leaves without being lent, and a count of the people passing.

Each cycle asks the reader for the tags in its field (one inventory) and the security value
(AFI) of each tag it has not seen yet, then decides on the AFI alone: a secured value (the
one the self-checks write, and every known variant) raises the alarm at once — relay pulse
(light, buzzer), the sound hook, the screen. Only then are the alarmed tags' memories read
to name the items, a few per cycle, so that naming never delays the next inventory: the
security decision costs one inventory and one short command per new tag, nothing more.

"Smart" mode also asks the library system (SIP2 17, item information, cached) about every
item whose AFI says lent, and alarms when it says the item is not on loan. Only while the
library system answers: away, or answering garbage, the AFI alone decides. With a library
system the alarm screen shows titles from it; without, the title the tag carries, if any.

A tag that stays in the field alarms again only after ``realarm_s``. No reader (person) is
identified anywhere: events carry item ids, AFI values and reasons.

Bad input costs what it touched and is counted in :attr:`ExitGate.bad`: an unreadable or
truncated tag (alarmed on its AFI all the same, named by its UID), an unknown AFI value, a
flood of tags (looked at over several cycles), a garbled answer (that tag, asked again next
cycle), a library-system answer that makes no sense (that request). A reader that stops
answering takes the gate out of service — the screen says so, ``exit.alarm`` with reason
``reader_out_of_service`` says so to central — and the gate comes back by itself when the
reader answers again (reopened when its port went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from biblioedge.agent.store import NotRecorded
from biblioedge.agent.supervisor import Context
from biblioedge.drivers.errors import DeviceNotResponding, DeviceUnavailable, DriverError
from biblioedge.drivers.rfid.iso28560 import TagData, TagDataError, decode
from biblioedge.drivers.rfid.reader import AfiScheme, TagGone, TagReader, read_memory

log = logging.getLogger("biblioedge.agent.exitgate")

T = TypeVar("T")
AsyncEmit = Callable[[str, dict[str, Any]], Coroutine[Any, Any, Any]]
Mode = Literal["starting", "idle", "alarm", "out_of_service"]

#: SIP2 circulation states that mean "this copy is lent": carried out, no alarm.
ON_LOAN = frozenset({"charged", "charged_not_to_be_recalled", "recalled"})
#: States that mean the copy belongs in the building: carried out, an alarm (smart mode).
#: Anything else (other, claimed returned, a code we do not know) decides nothing.
IN_HOUSE = frozenset(
    {
        "available",
        "on_order",
        "in_process",
        "waiting_on_hold_shelf",
        "waiting_to_be_reshelved",
        "in_transit",
        "lost",
        "missing",
    }
)
#: Tags remembered at most: a flood of tags cannot grow the gate's memory without bound.
MAX_TRACKED = 2048


@dataclass(frozen=True)
class ExitSettings:
    afi: AfiScheme = AfiScheme()
    smart: bool = False
    pulse_ms: int = 3000
    realarm_s: float = 10.0
    forget_s: float = 2.0
    alarm_show_s: float = 8.0
    max_new_tags: int = 32
    loan_cache_s: float = 60.0
    probe_s: float = 15.0
    counter_silence_s: float = 10.0
    #: memories read per cycle to name items; the rest wait for the next cycles
    names_per_cycle: int = 2
    #: consecutive failed cycles before the gate says it is out of service
    down_after: int = 2


@dataclass(frozen=True)
class AlarmItem:
    """One item on the alarm screen. ``title`` from the library system, else the tag."""

    item_id: str
    title: str = ""
    reason: str = "afi_secured"


@dataclass(frozen=True)
class ExitView:
    """What the screen shows; ``message`` is an i18n key (``exit_*``)."""

    mode: Mode
    message: str
    items: tuple[AlarmItem, ...] = ()
    offline: bool = False
    counter_ok: bool = True
    passages_in: int = 0
    passages_out: int = 0


@dataclass
class _Tag:
    uid: str
    first: float
    last: float
    afi: int | None = None
    state: str = "unknown"
    data: TagData | None = None
    named: bool = False
    item_error: str = ""
    alarmed_at: float | None = None
    asked: bool = False  # smart mode: the library system was (or is being) asked
    reason: str | None = None  # why it alarms: afi_secured, or not_on_loan (smart mode)

    @property
    def item_id(self) -> str | None:
        return self.data.primary_item_id if self.data else None


@dataclass
class _Alarm:
    reason: str
    read_at: float
    alarm_at: float
    uids: list[str]
    afis: dict[str, int]
    offline: bool
    recorded: bool = False
    items: dict[str, str | None] = field(default_factory=dict)  # uid -> item id, once named


@dataclass(frozen=True)
class _Look:
    """One inventory: when it was asked, the UIDs, the new tags' AFI values."""

    started: float
    uids: list[str]
    afis: dict[str, int]
    deferred: int
    failed: Counter[str]


@dataclass
class _Loan:
    on_loan: bool | None
    title: str
    at: float


class ExitMetrics:
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter as PCounter
        from prometheus_client import Gauge

        self.alarms = PCounter(
            "exitgate_alarms", "Exit alarms raised", ["reason"], registry=registry
        )
        self.bad = PCounter(
            "exitgate_trouble",
            "Bad input and failures at the exit, by kind (each cost one tag or request)",
            ["kind"],
            registry=registry,
        )
        self.passages = PCounter(
            "exitgate_passages", "People through the exit", ["direction"], registry=registry
        )
        self.reader_ok = Gauge(
            "exitgate_reader_ok", "1 while the reader answers", registry=registry
        )
        self.reader_ok.set(1)


class ExitGate:
    """The flow. Drivers block, so each runs on its own worker thread: the reader's (every
    command to it in order), the library system's (a slow answer never holds the reader
    up) and the relay's; the decisions and all state stay on the event loop."""

    name = "exitgate"

    def __init__(
        self,
        *,
        reader: TagReader,
        relay: Any,
        emit: AsyncEmit,
        settings: ExitSettings | None = None,
        library: Any = None,
        counter: Any = None,
        reopen: Callable[[], TagReader] | None = None,
        on_alarm: Callable[[tuple[AlarmItem, ...]], None] | None = None,
        metrics: Any = None,
    ) -> None:
        self.reader = reader
        self.relay = relay
        self.emit = emit
        self.settings = settings or ExitSettings()
        self.library = library
        self.counter = counter
        self.reopen = reopen
        self.on_alarm = on_alarm
        self.metrics = metrics
        self.view = ExitView("starting", "exit_starting")
        self.online = library is not None
        #: bad input and trouble, by kind: each costs what it touched, never the gate
        self.bad: Counter[str] = Counter()
        self.alarms = 0
        self.cycles = 0
        self.cycle_s = 0.0  # the last cycle's length (inventory + new tags' AFI)
        self.reader_ok = True
        self.counter_ok = True
        self.simulator: Any = None  # the simulated reader, when rfid = "sim"
        self.counter_simulator: Any = None
        self.relay_board: Any = None  # the simulated relay board, when relay = "sim"
        #: where newer settings come from (central's desired state), read once a second
        self.settings_source: Callable[[], ExitSettings] | None = None
        self._tags: dict[str, _Tag] = {}
        self._pending: list[_Alarm] = []
        self._shown: dict[str, AlarmItem] = {}
        self._show_until = 0.0
        self._loans: dict[str, _Loan] = {}
        self._asking: set[str] = set()
        self._next_probe = 0.0
        self._failures = 0
        self._minute = ""
        self._passages = [0, 0]  # this minute's, sent to central when it ends
        self._today = ("", [0, 0])  # the day's, for the screen
        self._tasks: set[asyncio.Task[None]] = set()
        self._rfid = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exit-rfid")
        self._ils = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exit-ils")
        self._relay = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exit-relay")

    # -- plumbing ----------------------------------------------------------------------

    @staticmethod
    async def _on(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def _count(self, kind: str, n: int = 1) -> None:
        self.bad[kind] += n
        if self.metrics is not None:
            self.metrics.bad.labels(kind).inc(n)

    async def _record(self, etype: str, payload: dict[str, Any]) -> bool:
        try:
            await self.emit(etype, payload)
        except NotRecorded as exc:  # a full disk: the alarm still rang, the record is lost
            log.error("%s not recorded: %s", etype, exc)
            self._count("not_recorded")
            return False
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        """A lookup that failed in a way nobody foresaw costs that lookup, and is counted."""
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("exit gate lookup failed: %s", exc, exc_info=exc)
            self._count("internal_error")

    def _show(self, mode: Mode, message: str, items: tuple[AlarmItem, ...] = ()) -> None:
        self.view = ExitView(
            mode,
            message,
            items,
            offline=self.library is not None and not self.online,
            counter_ok=self.counter_ok,
            passages_in=self._today[1][0],
            passages_out=self._today[1][1],
        )

    # -- the reader's side (worker thread) -----------------------------------------------

    def _look(self, known: frozenset[str]) -> _Look:
        """One inventory and the AFI of each tag not known yet (at most ``max_new_tags``)."""
        started = time.monotonic()
        uids = self.reader.inventory()
        failed: Counter[str] = Counter()
        new = [u for u in dict.fromkeys(uids) if u not in known]
        limit = self.settings.max_new_tags
        afis: dict[str, int] = {}
        for uid in new[:limit]:
            try:
                afis[uid] = self.reader.read_afi(uid)
            except TagGone:
                failed["tag_gone"] += 1
            except (DeviceUnavailable, DeviceNotResponding):
                raise  # the reader, not the tag: the whole cycle fails
            except (DriverError, ValueError):  # a garbled answer: this tag, next cycle
                failed["bad_answer"] += 1
        return _Look(started, uids, afis, max(0, len(new) - limit), failed)

    def _name(self, uids: list[str]) -> dict[str, tuple[TagData | None, str]]:
        """Read and decode these tags' memories: (data, why not) per UID."""
        out: dict[str, tuple[TagData | None, str]] = {}
        for uid in uids:
            try:
                memory = read_memory(self.reader, uid)
            except TagGone:
                out[uid] = (None, "tag_gone")
                continue
            except (DeviceUnavailable, DeviceNotResponding):
                raise
            except (DriverError, ValueError):
                out[uid] = (None, "bad_answer")
                continue
            try:
                out[uid] = (decode(memory), "")
            except TagDataError as exc:
                log.info("tag %s: unreadable data: %s", uid, exc)
                out[uid] = (None, "corrupt_tag")
        return out

    def _pulse(self) -> None:
        self.relay.open(self.settings.pulse_ms)

    # -- the cycle ---------------------------------------------------------------------

    async def cycle(self) -> None:
        """One inventory, the decisions it allows, and a little naming."""
        known = frozenset(u for u, t in self._tags.items() if t.afi is not None)
        look = await self._on(self._rfid, self._look, known)
        now = time.monotonic()
        self.cycles += 1
        self.cycle_s = now - look.started
        for kind, n in look.failed.items():
            self._count(kind, n)
        if look.deferred:
            self._count("flood", look.deferred)
        self._track(look, now)
        due: dict[str, list[_Tag]] = {}
        for uid in dict.fromkeys(look.uids):
            tag = self._tags.get(uid)
            if tag is None or tag.reason is None or not self._due(tag, now):
                continue
            if tag.reason == "not_on_loan" and not self.online:
                continue  # the library system's word is trusted only while it answers
            due.setdefault(tag.reason, []).append(tag)
        for reason, tags in due.items():
            await self._raise(reason, tags, look.started)
        await self._name_some()
        self._ask_library()
        await self._finish_alarms()
        if self.view.mode == "alarm" and time.monotonic() > self._show_until:
            self._shown.clear()
            self._show("idle", "exit_idle")

    def _track(self, look: _Look, now: float) -> None:
        for uid in look.uids:
            tag = self._tags.get(uid)
            if tag is None:
                if len(self._tags) >= MAX_TRACKED:
                    self._count("flood")
                    continue
                tag = self._tags[uid] = _Tag(uid, now, now)
            tag.last = now
            if uid in look.afis and tag.afi is None:
                tag.afi = look.afis[uid]
                tag.state = self.settings.afi.state(tag.afi)
                if tag.state == "secured":
                    tag.reason = "afi_secured"
                if tag.state == "unknown":
                    self._count("unknown_afi")
        gone = [u for u, t in self._tags.items() if now - t.last > self.settings.forget_s]
        for uid in gone:
            tag = self._tags[uid]
            # a tag that left keeps its alarm time until the interval is over
            if tag.alarmed_at is None or now - tag.alarmed_at >= self.settings.realarm_s:
                del self._tags[uid]

    def _due(self, tag: _Tag, now: float) -> bool:
        return tag.alarmed_at is None or now - tag.alarmed_at >= self.settings.realarm_s

    async def _raise(self, reason: str, tags: list[_Tag], read_at: float) -> None:
        """Light, buzzer and sound first; the screen at once; the items named after."""
        try:
            await self._on(self._relay, self._pulse)
        except (DriverError, OSError) as exc:
            self._count("relay_failed")
            log.error("alarm relay failed: %s", exc)
        alarm_at = time.monotonic()
        for tag in tags:
            tag.alarmed_at = alarm_at
        self.alarms += 1
        if self.metrics is not None:
            self.metrics.alarms.labels(reason).inc()
        alarm = _Alarm(
            reason,
            read_at,
            alarm_at,
            [t.uid for t in tags],
            {t.uid: t.afi if t.afi is not None else -1 for t in tags},
            offline=self.library is not None and not self.online,
        )
        self._pending.append(alarm)
        for tag in tags:
            self._shown[tag.uid] = self._item(tag, reason)
        self._show_until = alarm_at + self.settings.alarm_show_s
        self._show("alarm", "exit_alarm", tuple(self._shown.values()))
        if self.on_alarm is not None:
            try:
                self.on_alarm(tuple(self._shown.values()))
            except Exception:  # a sound hook that fails must not silence the gate
                log.exception("alarm hook failed")
                self._count("hook_failed")

    def _item(self, tag: _Tag, reason: str) -> AlarmItem:
        item = tag.item_id
        loan = self._loans.get(item) if item else None
        title = loan.title if loan and loan.title else ""
        if not title and tag.data is not None:
            title = str(tag.data.elements.get("title", "") or "")
        return AlarmItem(item or f"UID {tag.uid}", title, reason)

    async def _name_some(self) -> None:
        """Name a few tags: alarmed ones first, then (smart mode) every lent-looking one."""
        alarmed = {u for a in self._pending for u in a.uids}
        todo = [t for u in alarmed if (t := self._tags.get(u)) is not None and not t.named]
        if self.settings.smart:
            todo += [
                t
                for t in self._tags.values()
                if not t.named and t.uid not in alarmed and t.afi is not None
            ]
        todo = todo[: self.settings.names_per_cycle]
        if not todo:
            return
        got = await self._on(self._rfid, self._name, [t.uid for t in todo])
        for tag in todo:
            data, why = got.get(tag.uid, (None, "bad_answer"))
            if why == "bad_answer":
                self._count(why)  # asked again next cycle
                continue
            tag.named = True
            tag.data, tag.item_error = data, why
            if why:
                self._count(why)
            if tag.uid in self._shown:
                self._shown[tag.uid] = self._item(tag, self._shown[tag.uid].reason)
        if any(t.uid in self._shown for t in todo) and self.view.mode == "alarm":
            self._show("alarm", "exit_alarm", tuple(self._shown.values()))

    async def _finish_alarms(self) -> None:
        """Record each alarm once its tags are named (or gone): item ids, AFI, reason."""
        now = time.monotonic()
        for alarm in list(self._pending):
            tags = [self._tags.get(u) for u in alarm.uids]
            ready = all(t is None or t.named for t in tags) or now - alarm.alarm_at > 5.0
            if not ready:
                continue
            self._pending.remove(alarm)
            items = []
            for uid, tag in zip(alarm.uids, tags, strict=True):
                entry: dict[str, Any] = {
                    "item_id": tag.item_id if tag else None,
                    "afi": alarm.afis[uid],
                }
                if entry["item_id"] is None:  # unreadable or gone: the tag's own number
                    entry["uid"] = uid
                    entry["problem"] = (tag.item_error if tag else "") or "tag_gone"
                items.append(entry)
            payload = {
                "reason": alarm.reason,
                "items": items,
                "offline": alarm.offline,
                "read_to_alarm_ms": round((alarm.alarm_at - alarm.read_at) * 1000, 1),
            }
            await self._record("exit.alarm", payload)
            self._ask_titles(alarm)

    # -- the library system (smart mode, titles) -----------------------------------------

    def _ask_library(self) -> None:
        """Smart mode: ask about every named item the AFI did not alarm on."""
        if not self.settings.smart or self.library is None or not self.online:
            return
        for tag in self._tags.values():
            if tag.named and not tag.asked and tag.item_id and tag.state != "secured":
                tag.asked = True
                self._spawn(self._check_loan(tag))

    def _ask_titles(self, alarm: _Alarm) -> None:
        if self.library is None or not self.online:
            return
        for uid in alarm.uids:
            tag = self._tags.get(uid)
            if tag is not None and tag.item_id is not None:
                self._spawn(self._title(tag))

    async def _loan(self, item: str) -> _Loan | None:
        """The library system's word on one item, cached; None when it cannot be had."""
        now = time.monotonic()
        cached = self._loans.get(item)
        if cached is not None and now - cached.at < self.settings.loan_cache_s:
            return cached
        if not self.online or item in self._asking:
            return None
        self._asking.add(item)
        try:
            answer = await self._on(self._ils, self.library.item, item)
        except (DriverError, OSError) as exc:  # OSError: a socket timeout the client let out
            log.warning("library system unreachable, the AFI alone decides: %s", exc)
            self._count("ils_unreachable")
            self.online = False
            self._next_probe = time.monotonic() + self.settings.probe_s
            return None
        except (ValueError, TypeError, AttributeError, IndexError) as exc:
            log.warning("library system answered nonsense about %s: %s", item, exc)
            self._count("ils_garbage")
            return None
        finally:
            self._asking.discard(item)
        status = getattr(answer, "circulation_status", "unknown")
        on_loan = True if status in ON_LOAN else False if status in IN_HOUSE else None
        if on_loan is None:
            self._count("ils_undecided")
        title = str(getattr(answer, "title", "") or "")[:200]
        loan = _Loan(on_loan, title, time.monotonic())
        if len(self._loans) >= MAX_TRACKED:
            self._loans.clear()
        self._loans[item] = loan
        return loan

    async def _check_loan(self, tag: _Tag) -> None:
        assert tag.item_id is not None
        loan = await self._loan(tag.item_id)
        if loan is None:
            tag.asked = False  # ask again when the library system is back
            return
        now = time.monotonic()
        at_door = tag.uid in self._tags and now - tag.last <= self.settings.forget_s
        if loan.on_loan is False and at_door and tag.reason is None:
            tag.reason = "not_on_loan"  # and again each interval while it stays
            if self._due(tag, now):
                await self._raise("not_on_loan", [tag], tag.last)

    async def _title(self, tag: _Tag) -> None:
        assert tag.item_id is not None
        loan = await self._loan(tag.item_id)
        if loan is not None and loan.title and tag.uid in self._shown:
            self._shown[tag.uid] = AlarmItem(tag.item_id, loan.title, self._shown[tag.uid].reason)
            if self.view.mode == "alarm":
                self._show("alarm", "exit_alarm", tuple(self._shown.values()))

    async def _probe(self) -> None:
        if self.library is None or self.online or time.monotonic() < self._next_probe:
            return
        self._next_probe = time.monotonic() + self.settings.probe_s
        try:
            status = await self._on(self._ils, self.library.status)
        except (DriverError, OSError, ValueError, TypeError, AttributeError, IndexError):
            return
        if getattr(status, "online", False):
            log.warning("library system reachable again")
            self.online = True

    # -- the passage counter -----------------------------------------------------------

    async def _count_passages(self) -> None:
        if self.counter is None:
            return
        got_in, got_out = self.counter.take()
        minute = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
        if self._minute and minute != self._minute:
            await self._flush_passages()
        self._minute = minute
        self._passages[0] += got_in
        self._passages[1] += got_out
        day = datetime.now().date().isoformat()  # the library's day, local time
        if self._today[0] != day:
            self._today = (day, [0, 0])
        self._today[1][0] += got_in
        self._today[1][1] += got_out
        if self.metrics is not None:
            self.metrics.passages.labels("in").inc(got_in)
            self.metrics.passages.labels("out").inc(got_out)
        silent = self.counter.silent_s > self.settings.counter_silence_s
        if silent == self.counter_ok:  # a transition
            self.counter_ok = not silent
            if silent:
                log.warning("passage counter silent for %.0f s", self.counter.silent_s)
                self._count("counter_silent")
            else:
                log.info("passage counter heard again")
            await self._record(
                "exit.passages",
                {"minute": minute, "in": 0, "out": 0, "counter": "silent" if silent else "ok"},
            )
        noise = self.counter.noise
        if noise:
            self.counter.noise = 0
            self._count("counter_noise", noise)

    async def _flush_passages(self) -> None:
        got_in, got_out = self._passages
        self._passages = [0, 0]
        if got_in or got_out:
            await self._record(
                "exit.passages",
                {
                    "minute": self._minute,
                    "in": got_in,
                    "out": got_out,
                    "counter": "ok" if self.counter_ok else "silent",
                },
            )

    # -- the loop ----------------------------------------------------------------------

    async def _reader_down(self, exc: Exception) -> None:
        self._failures += 1
        self._count("reader_failed")
        if self._failures < self.settings.down_after or not self.reader_ok:
            return
        self.reader_ok = False
        if self.metrics is not None:
            self.metrics.reader_ok.set(0)
        log.error("exit reader out of service: %s", exc)
        self._show("out_of_service", "exit_out_of_service")
        await self._record(
            "exit.alarm",
            {"reason": "reader_out_of_service", "state": "raised", "detail": str(exc)[:200]},
        )

    async def _reader_back(self) -> None:
        self._failures = 0
        if self.reader_ok:
            return
        self.reader_ok = True
        if self.metrics is not None:
            self.metrics.reader_ok.set(1)
        log.warning("exit reader answers again")
        self._show("idle", "exit_idle")
        await self._record("exit.alarm", {"reason": "reader_out_of_service", "state": "cleared"})

    async def _reopen(self) -> None:
        if self.reopen is None:
            return
        with contextlib.suppress(Exception):
            self.reader.close()
        try:
            self.reader = await self._on(self._rfid, self.reopen)
        except DriverError as exc:
            log.debug("exit reader cannot be reopened yet: %s", exc)

    async def run(self, ctx: Context) -> None:
        if self.view.mode == "starting":
            self._show("idle", "exit_idle")
        last_count = 0.0
        try:
            while True:
                ctx.heartbeat()
                try:
                    await self.cycle()
                except DeviceUnavailable as exc:
                    await self._reader_down(exc)
                    await asyncio.sleep(1.0)
                    await self._reopen()
                except DriverError as exc:
                    await self._reader_down(exc)
                    if not self.reader_ok:
                        await asyncio.sleep(1.0)
                else:
                    await self._reader_back()
                now = time.monotonic()
                if now - last_count >= 1.0:
                    last_count = now
                    if self.settings_source is not None:
                        self.settings = self.settings_source()
                    await self._probe()
                    await self._count_passages()
                    if self.view.mode == "idle":
                        self._show("idle", "exit_idle")  # counts and badges
                await asyncio.sleep(0)
        finally:
            await self._flush_passages()

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for pool in (self._rfid, self._ils, self._relay):
            pool.shutdown(wait=False, cancel_futures=True)

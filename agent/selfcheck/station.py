"""The self-check kiosk around the flow: what the reader sees and does, the pad watched, the
library system probed and the offline backlog forwarded when it is back.

Every blocking conversation (SIP2, the RFID reader, the offline store) runs on one worker
thread, in order, so the pad is never read while a security write is under way and the flow
needs no locks. The screen reads :attr:`SelfcheckStation.view` snapshots and calls
:meth:`tap`, :meth:`scanned` and :meth:`pin`; it never touches the flow or the drivers.

Steps: ``idle`` (scan your card, or tap "return" and put the books down) → ``pin`` (a patron
barcode was scanned: the PIN pad) → ``ready`` (put your books on the pad) → ``working`` →
``results`` (titles, due dates, per-item problems; a loan with a charge asks first) →
``receipt`` → ``idle``. Returning: ``return`` → ``working`` → ``returned`` → ``idle``.
"My account" (``account``, from ``ready`` or ``results``): loans with due dates, holds
waiting, fees; renew one or all; back to borrowing (agent/selfcheck/account.py).
A session with no activity for ``session_timeout_s`` ends by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.selfcheck.account import AccountInfo, MyAccount
from biblioedge.agent.selfcheck.flow import ATTENTION, ItemResult, Refused, SelfCheck, Session, Via
from biblioedge.agent.selfcheck.offline import OfflineDesk, OfflineRules
from biblioedge.agent.store import NotRecorded, Store
from biblioedge.agent.supervisor import Context
from biblioedge.drivers.errors import DriverError
from biblioedge.drivers.receipt import Receipt, ReceiptPrinter
from biblioedge.drivers.rfid.reader import AfiScheme, TagReader
from biblioedge.drivers.sip2.codec import Sip2Error

if TYPE_CHECKING:  # the face watch loads the camera and face engine: only with a camera
    from biblioedge.agent.selfcheck.face import FaceWatch

log = logging.getLogger("biblioedge.agent.selfcheck")

Step = Literal[
    "starting",
    "idle",
    "pin",
    "ready",
    "working",
    "results",
    "receipt",
    "returned",
    "refused",
    "out_of_service",
    "account",
]
T = TypeVar("T")
AsyncEmit = Callable[[str, dict[str, Any]], Coroutine[Any, Any, Any]]

ACTIONS: dict[Step, tuple[str, ...]] = {
    "idle": ("return",),
    "pin": ("cancel",),
    "ready": ("account", "finish", "cancel"),
    "results": ("account", "finish"),
    "account": ("renew_all", "back", "finish"),
    "receipt": ("new_session",),
    "returned": ("return_more", "new_session"),
    "refused": ("new_session",),
}


@dataclass(frozen=True)
class SelfcheckView:
    """What the screen shows; ``message`` is an i18n key (``selfcheck.*``)."""

    step: Step
    message: str
    name: str = ""
    fees: str = ""
    blocks: tuple[str, ...] = ()
    items: tuple[ItemResult, ...] = ()
    offline: bool = False
    actions: tuple[str, ...] = ()
    detail: str = ""
    receipt: str = ""  # the receipt as text, for the on-screen QR
    pending: int = 0  # offline transactions waiting to be forwarded
    account: AccountInfo | None = None  # "my account", in the account step


def _item_code(text: str) -> bool:
    """An item barcode: digits, 6 to 20 of them (patron barcodes start with a letter here;
    card and CCCD QR codes are longer and structured)."""
    return text.isascii() and text.isdigit() and 6 <= len(text) <= 20


def _vn_date(iso: str | None) -> str:
    if not iso or len(iso) != 10:
        return iso or ""
    return f"{iso[8:10]}/{iso[5:7]}/{iso[:4]}"


class SelfcheckStation:
    name = "selfcheck"

    def __init__(
        self,
        config: Callable[[], AgentConfig],
        emit: AsyncEmit,
        *,
        reader: TagReader,
        library: Any,
        offline_store: Store,
        identify_card: Callable[[str], str | None] = lambda _: None,
        identify_cccd: Callable[[str], str | None] = lambda _: None,
        blocked: Callable[[str], bool] = lambda _: False,
        can_record: Callable[[], bool] = lambda: True,
        printer: ReceiptPrinter | None = None,
    ) -> None:
        cfg = config().selfcheck
        self.config = config
        self._emit_async = emit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfcheck")
        self.offline = OfflineDesk(
            offline_store, OfflineRules(cfg.offline_max_items, cfg.offline_loan_days)
        )
        self.flow = SelfCheck(
            library,
            reader,
            self.offline,
            self._emit,
            afi=AfiScheme(secured=cfg.afi_secured, loaned=cfg.afi_loaned),
            blocked=blocked,
            can_record=can_record,
        )
        self.my_account = MyAccount(library, self._emit)
        self._shown_items: tuple[ItemResult, ...] = ()  # the results to go back to
        self._account_session: Session | None = None  # a refused reader's, for her account
        self.identify_card = identify_card
        self.identify_cccd = identify_cccd
        self.printer = printer or ReceiptPrinter(cfg.receipt)
        self.view = SelfcheckView("starting", "selfcheck_starting")
        self._pad: frozenset[str] = frozenset()
        self._pending_barcode = ""
        self._last_activity = time.monotonic()
        self._returning = False
        self._fee_items: set[str] = set()
        self._next_probe = 0.0
        self.stories: list[str] = []  # one line per finished session (the demo prints them)
        self.simulator: Any = None  # the simulated pad, when rfid = "sim" (demo, tests)
        self.face_watch: FaceWatch | None = None  # face identification, with selfcheck.camera

    # -- plumbing ----------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kw))

    def _emit(self, etype: str, payload: dict[str, Any]) -> None:
        """From the worker thread: record on the agent's loop and wait, so a refused record
        (full disk, full outbox) reaches the flow as NotRecorded."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._emit_async(etype, payload), self._loop)
        future.result(timeout=30)

    def _show(self, step: Step, message: str, **kw: Any) -> None:
        session = self.flow.session
        if session is not None:
            kw.setdefault("name", session.name)
            kw.setdefault("fees", session.fees)
            kw.setdefault("blocks", tuple(session.blocks))
        self.view = SelfcheckView(
            step,
            message,
            offline=not self.flow.online or bool(session and session.offline),
            actions=kw.pop("actions", ACTIONS.get(step, ())),
            pending=kw.pop("pending", self.view.pending),
            **kw,
        )

    def _idle(self) -> None:
        self._returning = False
        self._fee_items.clear()
        self._pending_barcode = ""
        self._show("idle", "selfcheck_idle")

    # -- inputs from the screen and the scanner ----------------------------------------

    def scanned(self, text: str) -> asyncio.Task[None] | None:
        """A code from the scanner: a library card, a CCCD or a patron barcode to start a
        session; during one, an item's barcode (an item without a tag)."""
        text = text.strip()
        self._touch()
        if self.view.step in ("ready", "results", "returned") and _item_code(text):
            if self._returning:
                return self._spawn(self._return_barcode(text))
            if self.flow.session is not None:
                return self._spawn(self._borrow_barcode(text))
        if self.view.step not in ("idle", "refused", "receipt", "returned"):
            return None
        return self._spawn(self._scanned(text))

    async def _borrow_barcode(self, item: str) -> None:
        self._show("working", "selfcheck_working", items=self.view.items)
        await self._call(self.flow.borrow_barcode, item, item in self._fee_items)
        session = self.flow.session
        shown = tuple(session.results) if session else ()
        self._show("results", "selfcheck_results", items=shown, actions=self._result_actions(shown))

    async def _return_barcode(self, item: str) -> None:
        done = self.view.items if self.view.step == "returned" else ()
        self._show("working", "selfcheck_returning")
        result = await self._call(self.flow.give_back_barcode, item)
        self._show("returned", "selfcheck_returned", items=(*done, result))

    async def _scanned(self, text: str) -> None:
        if text.startswith("BE1."):
            pid = self.identify_card(text)
            if pid is None:
                self._show("refused", "selfcheck_card_invalid")
                return
            await self._identify(pid, "card_qr")
            return
        if text.count("|") >= 5:  # the CCCD QR: number|old number|name|born|sex|address|…
            pid = self.identify_cccd(text)
            if pid is None:
                self._show("refused", "selfcheck_cccd_unknown")
                return
            await self._identify(pid, "cccd_qr")
            return
        if 0 < len(text) <= 32 and text.isprintable():
            self._pending_barcode = text
            self._show("pin", "selfcheck_pin")
            return
        self._show("refused", "selfcheck_code_unknown")

    def pin(self, pin: str) -> asyncio.Task[None] | None:
        if self.view.step != "pin" or not self._pending_barcode:
            return None
        self._touch()
        return self._spawn(self._identify(self._pending_barcode, "barcode_pin", pin))

    def face(self, patron_id: str) -> asyncio.Task[None] | None:
        """The camera recognised a reader who consented to face identification here."""
        if self.view.step != "idle":
            return None
        self._touch()
        return self._spawn(self._identify(patron_id, "face"))

    def tap(self, action: str) -> asyncio.Task[None] | None:
        self._touch()
        if action in ("cancel", "new_session"):
            return self._spawn(self._end(receipt=False))
        if action == "finish" and self.view.step in ("ready", "results", "account"):
            return self._spawn(self._end(receipt=True))
        if action in ("return", "return_more") and self.view.step in ("idle", "returned"):
            self._returning = True
            self._pad = frozenset()
            self._show("ready", "selfcheck_return_place", actions=("cancel",))
            return None
        in_session = self._reader() is not None
        account_from = ("ready", "results", "refused")
        if action == "account" and self.view.step in account_from and in_session:
            return self._spawn(self._account())
        if self.view.step == "account" and in_session:
            if action == "back":
                self._back_to_borrowing()
                return None
            if action == "renew_all" or action.startswith("renew:"):
                return self._spawn(self._renew(action))
        if action.startswith("fee_yes:") and self.view.step == "results":
            item = action[8:]
            self._fee_items.add(item)
            result = next((r for r in self.view.items if r.item_id == item), None)
            if result is not None and not result.tagged:
                return self._spawn(self._borrow_barcode(item))
            return self._spawn(self._borrow())
        return None

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        """A step that failed (the reader stopped answering mid-scan, a bug) costs that
        step: the screen says out of service, the loop recovers when the reader answers."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("self-check step failed: %s", exc, exc_info=exc)
        self._show("out_of_service", "selfcheck_reader_problem", detail=str(exc)[:200])

    def _touch(self) -> None:
        self._last_activity = time.monotonic()

    # -- the session -------------------------------------------------------------------

    async def _identify(self, patron_id: str, via: Via, pin: str | None = None) -> None:
        self._returning = False  # a reader who scans their card after returning now borrows
        self._account_session = None
        self._show("working", "selfcheck_identifying")
        got = await self._call(self.flow.identify, patron_id, via, pin)
        if isinstance(got, Refused):
            actions = ACTIONS["refused"]
            if got.reason == "reader_blocked" and self.flow.online:
                # she may not borrow (fees, too many loans): her account says why, and
                # renewing may be what unblocks her
                self._account_session = Session(patron_id, via)
                actions = ("account", *actions)
            self._show(
                "refused", f"selfcheck_refused_{got.reason}", detail=got.message, actions=actions
            )
            return
        self._pad = frozenset()
        self._show("ready", "selfcheck_place_books")

    async def _borrow(self) -> None:
        self._show("working", "selfcheck_working", items=self.view.items)
        results = await self._call(self.flow.borrow, frozenset(self._fee_items))
        session = self.flow.session
        shown = tuple(session.results) if session else tuple(results)
        self._show("results", "selfcheck_results", items=shown, actions=self._result_actions(shown))

    def _reader(self) -> Session | None:
        """Whose account is open: the borrowing session's, or a refused reader's."""
        return self.flow.session or self._account_session

    async def _account(self) -> None:
        session = self._reader()
        assert session is not None
        self._shown_items = self.view.items
        self._show("working", "selfcheck_account_reading", items=())
        info = await self._call(self.my_account.read, session, self.flow.online)
        self._show_account(info)

    def _show_account(self, info: AccountInfo) -> None:
        actions = ACTIONS["account"] if info.can_renew else ("back", "finish")
        if info.can_renew and not info.loans and (info.listed or self.my_account.no_renew_all):
            actions = ("back", "finish")  # nothing to renew, or no way to
        if self.flow.session is None:  # a refused reader: her account, then goodbye
            actions = tuple(a for a in actions if a != "back")
        message = "selfcheck_account_offline" if info.offline else "selfcheck_account"
        self._show("account", message, account=info, actions=actions)

    async def _renew(self, action: str) -> None:
        session, shown = self._reader(), self.view.account
        assert session is not None and shown is not None
        self._show("working", "selfcheck_renewing", account=shown)
        try:
            if action == "renew_all":
                await self._call(self.my_account.renew_all, session, shown.loans)
            else:
                await self._call(self.my_account.renew, session, action[6:])
        except Sip2Error as exc:
            self.flow.went_offline(exc)
        info = await self._call(self.my_account.read, session, self.flow.online)
        self._show_account(info)

    def _back_to_borrowing(self) -> None:
        items = self._shown_items
        if items:
            self._show(
                "results", "selfcheck_results", items=items, actions=self._result_actions(items)
            )
        else:
            self._show("ready", "selfcheck_place_books")

    @staticmethod
    def _result_actions(items: tuple[ItemResult, ...]) -> tuple[str, ...]:
        fees = tuple(f"fee_yes:{r.item_id}" for r in items if r.problem == "fee_required")
        return (*fees[:2], "finish") if fees else ("account", "finish")

    async def _return(self) -> None:
        self._show("working", "selfcheck_returning")
        results = await self._call(self.flow.give_back)
        self._show("returned", "selfcheck_returned", items=tuple(results))
        ok = sum(r.ok for r in results)
        self.stories.append(f"trả {ok}/{len(results)} tài liệu")

    async def _end(self, *, receipt: bool) -> None:
        self.my_account.forget()
        self._account_session = None
        self._shown_items = ()
        session: Session | None = await self._call(self.flow.end)
        if session is None or not receipt or not session.borrowed:
            if session is not None and session.borrowed:
                self._story(session)
            self._idle()
            return
        slip = Receipt(
            library=self.config().selfcheck.library_name,
            patron_tail=session.patron_id[-4:],
            when=datetime.now().strftime("%d/%m/%Y %H:%M"),
            loans=[(r.title or r.item_id, _vn_date(r.due)) for r in session.borrowed],
            offline=session.offline,
        )
        printed = None
        if self.printer.prints:
            try:
                printed = await self._call(self.printer.print, slip)
            except DriverError as exc:
                log.error("receipt not printed: %s", exc)
        self._story(session)
        self._show(
            "receipt",
            "selfcheck_receipt_printed" if printed else "selfcheck_receipt_qr",
            items=tuple(session.borrowed),
            receipt=slip.text(),
            name="",
            fees="",
            blocks=(),
        )

    def _story(self, session: Session) -> None:
        lent = session.borrowed
        how = "ngoại tuyến" if session.offline else "trực tuyến"
        self.stories.append(
            f"{session.patron_id} mượn {len(lent)} tài liệu ({how}, nhận diện {session.via})"
        )

    # -- the loop ----------------------------------------------------------------------

    async def _watch_pad(self) -> None:
        """Books put on (or taken off) the pad: lend or return once the stack is still."""
        if self.view.step not in ("ready", "results", "returned"):
            return
        try:
            uids = frozenset(await self._call(self.flow.reader.inventory))
        except DriverError as exc:
            self._show("out_of_service", "selfcheck_reader_problem", detail=str(exc))
            return
        if not uids or uids == self._pad:
            self._pad = uids
            return
        await asyncio.sleep(0.25)  # the stack is still moving: read it once more
        again = frozenset(await self._call(self.flow.reader.inventory))
        if again != uids:
            return
        self._pad = uids
        if self._returning:
            await self._return()
        elif self.flow.session is not None:
            await self._borrow()

    async def _probe(self) -> None:
        """Ask whether the library system is there; when it is, forward the backlog."""
        cfg = self.config().selfcheck
        if time.monotonic() < self._next_probe:
            return
        self._next_probe = time.monotonic() + cfg.probe_s
        if self.view.step not in ("idle", "starting", "out_of_service"):
            return  # never in the middle of someone's session
        online = await self._call(self.flow.probe)
        pending = await self._call(self.offline.pending)
        if online and pending:
            log.info("library system is back: forwarding %d offline transactions", pending)

            def progress(done: int, total: int) -> None:
                if done % 100 == 0 or done == total:
                    log.info("forwarded %d of %d offline transactions", done, total)

            out = await self._call(self.offline.forward, self.flow.library, progress)
            for refusal in out.refused:
                await self._attention(refusal)
            if out.done or out.refused:
                try:
                    await self._emit_async(
                        "circ.reconciled",
                        {"done": out.done, "refused": len(out.refused), "pending": out.pending},
                    )
                except NotRecorded as exc:
                    log.error("reconciliation not recorded: %s", exc)
                self.stories.append(
                    f"đối soát: {out.done} giao dịch ngoại tuyến đã ghi, {len(out.refused)} bị "
                    "từ chối (chuyển cho thủ thư)"
                )
            pending = out.pending
        self._show(self.view.step, self.view.message, pending=pending, items=self.view.items)

    async def _attention(self, refusal: dict[str, str]) -> None:
        payload = {
            "reason": "offline_refused",
            "item_id": refusal.get("item_id", ""),
            "patron_id": refusal.get("patron_id", ""),
            "kind": refusal.get("kind", ""),
            "message": refusal.get("message", "")[:500],
            "action": refusal.get("action", ""),
        }
        try:
            await self._emit_async(ATTENTION, payload)
        except NotRecorded as exc:
            log.error("attention case for %s not recorded: %s", payload["item_id"], exc)

    async def run(self, ctx: Context) -> None:
        self._loop = asyncio.get_running_loop()
        if self.view.step == "starting":
            self._idle()
        while True:
            ctx.heartbeat()
            await self._probe()
            await self._watch_pad()
            cfg = self.config().selfcheck
            busy = self.view.step not in ("idle", "starting", "out_of_service")
            if busy and time.monotonic() - self._last_activity > cfg.session_timeout_s:
                log.info("session timed out")
                await self._end(receipt=self.view.step == "results")
                if self.view.step == "receipt":
                    self._last_activity = time.monotonic()
            if self.view.step == "out_of_service":
                try:
                    await self._call(self.flow.reader.inventory)
                except DriverError:
                    await asyncio.sleep(1.0)
                else:  # the reader answers again: whoever was here starts over
                    log.info("RFID reader answers again")
                    await self._end(receipt=False)
            await asyncio.sleep(0.2)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

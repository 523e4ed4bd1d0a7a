"""The card desk: citizen ID card in, verified reader and printed library card out.

One session per reader:

1. the CCCD's QR is seen by the desk camera or scanned (0 taps); it gives the chip's keys;
2. the chip is read with progress (waiting for the card on the reader; a card pulled out
   mid-read is read again when it is back; wrong keys say "check the card" and are never
   retried into a lockout);
3. passive authentication: a forgery suspicion (hash mismatch, bad signature) blocks the
   registration unless the librarian overrides, which is recorded with the registration;
4. the live face is matched 1:1 against the chip photo (score and decision), collecting
   templates of good quality;
5. the consent screen (purpose, retention, withdrawal): the librarian taps the reader's answer;
6. the registration is recorded in the outbox (idempotency key = registration id) and central
   answers in the ack with the patron number and the signed card, which is printed.

A reader who registered from home (``agent/desk/prereg.py``) brings a code: it is scanned
first, then her CCCD, and step 5 becomes her own choices from home, confirmed in one tap.

Happy path: two taps (consent or confirm, next). Nothing personal outlives the session on the
desk except what waits in the outbox for central, and central's answer until it is printed.
Only the fields in ``keep_fields`` are sent; the ID number travels only as a keyed hash.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import orjson
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from prometheus_client import CollectorRegistry, Counter, Histogram

from biblioedge.agent.citizen import citizen_ref
from biblioedge.agent.desk.guardian import MinorPolicy, birth_of, is_minor
from biblioedge.agent.desk.guardian_flow import ask_guardian
from biblioedge.agent.desk.prereg import REFUSALS as PREREG_REFUSALS
from biblioedge.agent.desk.prereg import check_code, confirm_message, wait_cccd
from biblioedge.agent.store import AsyncStore, NotRecorded, Store
from biblioedge.agent.supervisor import Context
from biblioedge.drivers.camera import Camera
from biblioedge.drivers.cardprint import CardFace, CardPrinter
from biblioedge.drivers.cccd.card import CardData
from biblioedge.drivers.cccd.chip import CardRemoved, WrongKeys
from biblioedge.drivers.cccd.errors import CccdError
from biblioedge.drivers.cccd.qr import CccdQr, parse_qr
from biblioedge.drivers.codes import FrameDecoder
from biblioedge.drivers.errors import DriverError
from biblioedge.models.errors import FaceEngineError
from biblioedge.models.pipeline import FaceService
from biblioedge.models.quality import QualityConfig
from biblioedge.prereg_code import PreregCode, PreregCodeError, is_prereg
from biblioedge.protocol import registration_context, uuid7
from biblioedge.provisioning.sealing import seal

log = logging.getLogger("biblioedge.agent.desk")

Step = Literal[
    "idle",
    "prereg",
    "prereg_confirm",
    "place_card",
    "reading",
    "check_card",
    "reader_problem",
    "forgery",
    "face",
    "face_failed",
    "confirm_identity",
    "consent",
    "guardian_card",
    "guardian_refused",
    "relationship",
    "child_consent",
    "guardian_consent",
    "registering",
    "pending",
    "issued",
    "refused",
]
Emit = Callable[[str, dict[str, Any]], Awaitable[Any]]
REGISTRATION = "desk.registration"


@dataclass(frozen=True)
class DeskView:
    """What the desk screen shows; ``message`` is an i18n key, ``actions`` the buttons."""

    step: Step
    message: str
    detail: str = ""
    progress: float | None = None
    person: dict[str, str] = field(default_factory=dict)
    score: float | None = None
    threshold: float | None = None
    patron_id: str = ""
    actions: tuple[str, ...] = ()
    pending_cards: int = 0
    #: the card's link for the reader's phone (shown as a QR once the card is issued)
    link: str = ""


@dataclass(frozen=True)
class DeskSettings:
    librarian: str = "librarian"
    library_name: str = "Thư viện tỉnh"
    consent_version: str = "vi-2026-1"
    keep_fields: tuple[str, ...] = ("date_of_birth", "gender")
    card_photo: bool = False
    card_valid_days: int = 365 * 4
    templates: int = 3
    face_threshold: float | None = None  # None: the engine's own
    face_timeout_s: float = 30.0
    mismatch_frames: int = 6
    answer_wait_s: float = 8.0
    idle_reset_s: float = 120.0
    quality: QualityConfig = field(default_factory=QualityConfig)
    #: central's X25519 key: registrations are sealed to it before they enter the outbox
    seal_key: X25519PublicKey | None = None
    device_id: str = ""
    #: readers under the age of majority: guardian, child's consent, face (agent/desk/guardian.py)
    minors: MinorPolicy = field(default_factory=MinorPolicy)


class ChipSource(Protocol):
    """The PC/SC side, blocking: called from worker threads."""

    def present(self) -> bool: ...

    def read(self, qr: CccdQr, progress: Callable[[str, int, int], None]) -> CardData: ...


class DeskMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sessions = Counter(
            "desk_sessions", "Desk sessions by outcome", ["outcome"], registry=registry
        )
        self.taps = Counter("desk_taps", "Librarian taps", ["action"], registry=registry)
        self.chip_read = Histogram(
            "desk_chip_read_seconds", "Chip read, keys to SOD", registry=registry
        )
        self.face_score = Histogram(
            "desk_face_score",
            "1:1 score live face vs chip photo",
            buckets=(0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 1.0),
            registry=registry,
        )


class _Cancelled(Exception):
    pass


def mask_id(id_number: str) -> str:
    return id_number[:3] + "•" * (len(id_number) - 6) + id_number[-3:]


def decode_photo(data: bytes) -> np.ndarray | None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return image if image is not None and image.size else None


class DeskFlow:
    def __init__(
        self,
        *,
        chip: ChipSource | None,
        camera: Camera,
        face: FaceService,
        decoder: FrameDecoder | None,
        emit: Emit,
        store: AsyncStore,
        printer: CardPrinter,
        pepper: bytes,
        settings: DeskSettings,
        metrics: DeskMetrics,
    ) -> None:
        self.chip = chip
        self.camera = camera
        self.face = face
        self.decoder = decoder
        self.emit = emit
        #: False while the kiosk cannot record (full disk): no registration is started
        self.can_record: Callable[[], bool] = lambda: True
        self.store = store
        self.printer = printer
        self.pepper = pepper
        self.settings = settings
        self.metrics = metrics
        self.view = DeskView("idle", "desk_idle", actions=())
        self.on_view: Callable[[DeskView], None] | None = None
        self.taps = 0
        self.last_result: dict[str, Any] | None = None
        self._taps: asyncio.Queue[str] = asyncio.Queue()
        self._scans: asyncio.Queue[str] = asyncio.Queue()
        self._answers = asyncio.Event()
        self._late = asyncio.Event()
        self._current: str | None = None  # the event id of the session's registration
        self._ctx: Context | None = None
        self._last_frame = -1
        self._quiet: dict[str, float] = {}  # camera QR payload -> ignored until (monotonic)
        self.current: Any = None  # the newest camera frame, for the screen (memory only)

    # -- inputs ---------------------------------------------------------------------------

    def tap(self, action: str) -> None:
        """A librarian's button press (from the screen, or a test)."""
        if action in self.view.actions:
            self.taps += 1
            self.metrics.taps.labels(action).inc()
            self._taps.put_nowait(action)
        else:
            log.info("ignored tap %s on %s", action, self.view.step)

    def scanned(self, payload: str) -> None:
        """A code from the desk's hand scanner."""
        self._scans.put_nowait(payload)

    def answers_arrived(self) -> None:
        self._answers.set()
        self._late.set()

    # -- view -----------------------------------------------------------------------------

    def _show(self, view: DeskView) -> None:
        if view != self.view:
            self.view = view
            if self.on_view is not None:
                self.on_view(view)

    def _beat(self) -> None:
        if self._ctx is not None:
            self._ctx.heartbeat()

    async def _choose(self, within: float | None = None) -> str:
        """The next tap among the view's actions; ``cancel`` ends the session. Without
        ``within``, a screen left alone for ``idle_reset_s`` ends the session too, so a
        reader's data never stays on an unattended desk; with it, "timeout" is returned."""
        limit = self.settings.idle_reset_s if within is None else within
        deadline = time.monotonic() + limit
        while True:
            self._beat()
            try:
                action = await asyncio.wait_for(self._taps.get(), 1.0)
            except TimeoutError:
                if time.monotonic() > deadline:
                    if within is None:
                        raise _Cancelled from None
                    return "timeout"
                continue
            if action == "cancel":
                raise _Cancelled
            return action

    # -- the component --------------------------------------------------------------------

    async def run(self, ctx: Context) -> None:
        self._ctx = ctx
        self.camera.start()
        printer = asyncio.create_task(self._print_late_answers(), name="desk:late-cards")
        try:
            while True:
                self._drain_taps()
                await self._refresh_pending()
                self._show(DeskView("idle", "desk_idle", pending_cards=self.view.pending_cards))
                payload = await self._wait_qr()
                code = None
                if is_prereg(payload) and self.can_record():  # registered from home
                    first = payload
                    try:
                        code = check_code(payload)
                    except PreregCodeError as exc:
                        self.metrics.sessions.labels(exc.reason).inc()
                        self._show(DeskView("refused", exc.reason, detail=exc.detail))
                        self._quiet[first] = time.monotonic() + 10.0
                        await asyncio.sleep(3.0)
                        continue
                    cccd = await wait_cccd(self, code)
                    self._quiet[first] = time.monotonic() + 60.0
                    if cccd is None:
                        self.metrics.sessions.labels("cancelled").inc()
                        continue
                    payload = cccd
                if not self.can_record():  # a registration it could not keep: refuse it first
                    self.metrics.sessions.labels("storage_full").inc()
                    self._show(DeskView("refused", "storage_full"))
                    self._quiet[payload] = time.monotonic() + 10.0
                    await asyncio.sleep(3.0)
                    continue
                try:
                    qr = parse_qr(payload)
                except CccdError as exc:
                    self.metrics.sessions.labels("not_cccd").inc()
                    self._show(DeskView("idle", "not_cccd", detail=str(exc)))
                    self._quiet[payload] = time.monotonic() + 10.0
                    await asyncio.sleep(3.0)
                    continue
                try:
                    outcome = await self.session(qr, code)
                except _Cancelled:
                    outcome = "cancelled"
                # the card may still be held up to the camera: not a new registration
                self._quiet[payload] = time.monotonic() + 60.0
                self.metrics.sessions.labels(outcome).inc()
                log.info("desk session: %s (%d taps)", outcome, self.taps)
        finally:
            printer.cancel()
            self.camera.stop()

    def _drain_taps(self) -> None:
        while not self._taps.empty():
            self._taps.get_nowait()

    async def _wait_qr(self) -> str:
        """A CCCD QR from the hand scanner or held up to the desk camera."""
        while True:
            self._beat()
            if not self._scans.empty():
                return self._scans.get_nowait()
            if self.decoder is None:
                try:
                    return await asyncio.wait_for(self._scans.get(), 1.0)
                except TimeoutError:
                    continue
            frame = await asyncio.to_thread(self.camera.latest, self._last_frame, 0.5)
            if frame is None:
                continue
            self._last_frame = frame.seq
            self.current = frame
            codes = await asyncio.to_thread(self.decoder.decode, frame.image)
            now = time.monotonic()
            self._quiet = {k: t for k, t in self._quiet.items() if t > now}
            for code in codes:
                # a CCCD payload or a pre-registration code (library cards are BE1.… tokens),
                # not the one just handled
                wanted = "|" in code.text or is_prereg(code.text)
                if wanted and code.text not in self._quiet:
                    return code.text

    # -- one reader -----------------------------------------------------------------------

    async def session(self, qr: CccdQr, prereg: PreregCode | None = None) -> str:
        """Run one registration from a parsed QR (and the reader's pre-registration code,
        if she registered from home); returns the outcome for metrics."""
        person = {"name": qr.full_name, "id": mask_id(qr.id_number)}
        card: CardData | None = None
        chip_face: np.ndarray | None = None
        check: dict[str, Any] = {"method": "qr_librarian", "passive_auth": "absent"}
        if self.chip is not None:
            card = await self._read(qr, person)
        if card is not None:
            person = self._person(qr, card)
            pa = card.passive_auth
            status = (
                "failed"
                if pa.forgery_suspected
                else (
                    "ok" if pa.verified else ("unknown_csca" if pa.signature == "ok" else "absent")
                )
            )
            check = {"method": "chip_face", "passive_auth": status}
            if status == "failed":
                self._show(
                    DeskView(
                        "forgery",
                        "forgery_suspected",
                        detail=pa.detail or str(pa.hashes),
                        person=person,
                        actions=("override", "cancel"),
                    )
                )
                await self._choose()  # only "override" gets past; cancel raises
                check["override_by"] = self.settings.librarian
                check["override_reason"] = "passive authentication failed"
                log.warning(
                    "librarian %s overrode a failed passive authentication", self.settings.librarian
                )
            photo = decode_photo(card.photo)
            if photo is not None:
                try:
                    _, chip_face = await self.face.embed_largest(photo)
                except Exception as exc:  # no face in the chip photo: the librarian confirms
                    log.warning("no usable face in the chip photo: %s", exc)
            if chip_face is None:
                check["method"] = "qr_librarian"
        templates, score = await self._capture(person, chip_face)
        day = self.settings.minors.today()  # the age on the day at the desk, not a form's
        minor = is_minor(birth_of(qr, card), day, self.settings.minors)
        if chip_face is None:
            self._show(
                DeskView(
                    "confirm_identity",
                    "confirm_identity",
                    person=person,
                    actions=("confirm_identity", "cancel"),
                )
            )
            await self._choose()
        else:
            check["face_score"] = round(score, 4)
            check["face_threshold"] = self._threshold()
        guardian = None
        if minor:  # the guardian's card and consent, the child's own from 7 (guardian_flow)
            guardian = await ask_guardian(self, qr, card, person, birth_of(qr, card), day)
            if guardian is None:
                return "declined"
        face_allowed = not minor or self.settings.minors.face_for_minors
        granted = False
        if prereg is not None:  # her choices from home, confirmed in one tap
            self._show(
                DeskView(
                    "prereg_confirm",
                    confirm_message(prereg),
                    person=person,
                    score=check.get("face_score"),
                    threshold=check.get("face_threshold"),
                    actions=("confirm", "cancel"),
                )
            )
            await self._choose()  # "confirm": cancel raises
            granted = prereg.face and face_allowed
        elif face_allowed:
            self._show(
                DeskView(
                    "consent",
                    "consent_text",
                    person=person,
                    score=check.get("face_score"),
                    threshold=check.get("face_threshold"),
                    actions=("consent_yes", "consent_no", "cancel"),
                )
            )
            granted = await self._choose() == "consent_yes"
        payload = self._registration(qr, card, check, templates if granted else [], granted)
        if prereg is not None:
            payload["prereg"] = prereg.token
        if guardian is not None:
            payload["guardian"] = guardian
        return await self._register(payload, person, card)

    def _person(self, qr: CccdQr, card: CardData) -> dict[str, str]:
        p = card.personal
        return {
            "name": p.get("full_name") or qr.full_name,
            "id": mask_id(qr.id_number),
            "date_of_birth": p.get("date_of_birth") or qr.date_of_birth.strftime("%d/%m/%Y"),
            "gender": p.get("gender") or qr.gender,
        }

    async def _read(self, qr: CccdQr, person: dict[str, str]) -> CardData | None:
        chip = self.chip
        assert chip is not None
        loop = asyncio.get_running_loop()

        def progress(name: str, done: int, total: int) -> None:
            loop.call_soon_threadsafe(self._progress, person, name, done, total)

        waiting = "place_card"
        while True:
            self._show(DeskView("place_card", waiting, person=person, actions=("cancel",)))
            waiting = "place_card"
            try:
                while not await asyncio.to_thread(chip.present):
                    await self._poll_cancel(0.3)
            except DriverError as exc:  # no reader, no pcscd, no pyscard
                if await self._reader_problem(person, exc) == "qr_only":
                    return None
                continue
            self._show(
                DeskView(
                    "reading", "reading_chip", person=person, progress=0.0, actions=("cancel",)
                )
            )
            t0 = time.monotonic()
            try:
                card = await asyncio.to_thread(chip.read, qr, progress)
            except CardRemoved:
                log.info("card removed during the read; reading again when it is back")
                waiting = "card_removed"
                await asyncio.sleep(0.5)
                continue
            except WrongKeys as exc:
                self._show(
                    DeskView(
                        "check_card",
                        "check_card",
                        detail=str(exc),
                        person=person,
                        actions=("retry", "cancel"),
                    )
                )
                await self._choose()
                continue
            except (CccdError, DriverError) as exc:
                if await self._reader_problem(person, exc) == "qr_only":
                    return None
                continue
            self.metrics.chip_read.observe(time.monotonic() - t0)
            return card

    async def _reader_problem(self, person: dict[str, str], exc: Exception) -> str:
        log.warning("chip read failed: %s", exc)
        self._show(
            DeskView(
                "reader_problem",
                "reader_problem",
                detail=str(exc),
                person=person,
                actions=("retry", "qr_only", "cancel"),
            )
        )
        return await self._choose()

    async def _poll_cancel(self, seconds: float) -> None:
        self._beat()
        try:
            action = await asyncio.wait_for(self._taps.get(), seconds)
        except TimeoutError:
            return
        if action == "cancel":
            raise _Cancelled

    def _progress(self, person: dict[str, str], name: str, done: int, total: int) -> None:
        # DG2 (the photo) is most of the bytes: show its progress, others as steps
        frac = done / total if total else 1.0
        stage = {"COM": 0.02, "DG1": 0.05, "DG2": 0.1, "DG13": 0.85, "SOD": 0.92}.get(name, 0.95)
        value = 0.1 + 0.75 * frac if name == "DG2" else stage
        if self.view.step == "reading":
            self._show(replace(self.view, progress=round(value, 2), detail=name))

    def _threshold(self) -> float:
        t = self.settings.face_threshold
        return float(t if t is not None else self.face.threshold)

    async def _capture(
        self, person: dict[str, str], chip_face: np.ndarray | None
    ) -> tuple[list[np.ndarray], float]:
        """Good live frames until ``templates`` of them match the chip photo (or any, when
        there is no chip photo). Consistent non-matches end in ``face_failed``."""
        threshold = self._threshold()
        while True:
            got: list[np.ndarray] = []
            best = -1.0
            misses = 0
            deadline = time.monotonic() + self.settings.face_timeout_s
            self._show(DeskView("face", "look_at_camera", person=person, actions=("cancel",)))
            while len(got) < self.settings.templates and time.monotonic() < deadline:
                await self._poll_cancel(0.0)
                frame = await asyncio.to_thread(self.camera.latest, self._last_frame, 0.5)
                if frame is None:
                    continue
                self._last_frame = frame.seq
                self.current = frame
                try:
                    found = await self.face.analyze(frame.image, quality=self.settings.quality)
                except FaceEngineError as exc:  # worker restarting, bad frame, engine error
                    log.warning("face capture paused: %s", exc)
                    await asyncio.sleep(0.2)
                    continue
                quality = found.quality
                if found.detection is None or quality is None:
                    continue
                if not quality.ok:
                    self._show(
                        DeskView(
                            "face", f"hint_{quality.reasons[0]}", person=person, actions=("cancel",)
                        )
                    )
                    continue
                vec = found.vector
                if vec is None:
                    continue
                if chip_face is not None:
                    score = float(np.dot(vec, chip_face))
                    self.metrics.face_score.observe(score)
                    best = max(best, score)
                    if score < threshold:
                        misses += 1
                        if misses >= self.settings.mismatch_frames:
                            break
                        continue
                got.append(vec)
                self._show(
                    DeskView(
                        "face",
                        "face_matched" if chip_face is not None else "face_captured",
                        person=person,
                        score=round(best, 4) if chip_face is not None else None,
                        threshold=threshold if chip_face is not None else None,
                        progress=len(got) / self.settings.templates,
                        actions=("cancel",),
                    )
                )
            if len(got) >= self.settings.templates:
                return got, best
            self._show(
                DeskView(
                    "face_failed",
                    "face_mismatch" if misses >= self.settings.mismatch_frames else "face_timeout",
                    person=person,
                    score=round(best, 4) if best >= 0 else None,
                    threshold=threshold,
                    actions=("retry", "cancel"),
                )
            )
            await self._choose()

    def _registration(
        self,
        qr: CccdQr,
        card: CardData | None,
        check: dict[str, Any],
        templates: list[np.ndarray],
        granted: bool,
    ) -> dict[str, Any]:
        personal = dict(card.personal) if card else {}
        source = {
            "date_of_birth": personal.get("date_of_birth") or qr.date_of_birth.isoformat(),
            "gender": personal.get("gender") or qr.gender,
            "address": personal.get("place_of_residence") or qr.address,
            "nationality": personal.get("nationality", ""),
            "ethnicity": personal.get("ethnicity", ""),
        }
        profile = {k: source[k] for k in self.settings.keep_fields if source.get(k)}
        payload: dict[str, Any] = {
            "registration_id": uuid7(),
            "citizen_ref": citizen_ref(self.pepper, qr.id_number),
            "display_name": personal.get("full_name") or qr.full_name,
            "profile": profile,
            "consent": {
                "purpose": "face_gate",
                "granted": granted,
                "text_version": self.settings.consent_version,
                "librarian": self.settings.librarian,
            },
            "check": check,
            "card_valid_days": self.settings.card_valid_days,
        }
        if granted and templates:
            payload["face"] = {
                "model": self.face.embedder_name,
                "templates": [
                    base64.b64encode(np.asarray(t, "<f4").tobytes()).decode() for t in templates
                ],
            }
        return payload

    def _sealed(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Name, kept ID fields and templates sealed to central before they touch the disk:
        only the registration id stays readable (central answers a resend by it)."""
        key = self.settings.seal_key
        if key is None:
            return payload
        rid = str(payload["registration_id"])
        blob = seal(key, orjson.dumps(payload), registration_context(self.settings.device_id, rid))
        return {"registration_id": rid, "sealed": base64.b64encode(blob).decode()}

    async def _register(
        self, payload: dict[str, Any], person: dict[str, str], card: CardData | None
    ) -> str:
        self._show(DeskView("registering", "registering", person=person))
        try:
            event = await self.emit(REGISTRATION, self._sealed(payload))
        except NotRecorded as exc:  # nothing was kept: no consent, no card; say so
            log.error("registration not recorded: %s", exc)
            self._show(DeskView("refused", "storage_full", detail=str(exc)[:200]))
            await asyncio.sleep(3.0)
            return "not_recorded"
        event_id = event.event_id
        self._current = event_id
        photo = card.photo if card is not None and self.settings.card_photo else None
        answer = await self._await_answer(event_id, self.settings.answer_wait_s)
        if answer is None:
            # central or the broker is away: the registration waits in the outbox and the
            # card prints when central answers (see _print_late_answers)
            self._current = None  # from now on the late-card printer takes it
            self._late.set()
            await self._refresh_pending()
            self._show(
                DeskView(
                    "pending",
                    "card_pending",
                    person=person,
                    actions=("next",),
                    pending_cards=self.view.pending_cards,
                )
            )
            await self._choose(self.settings.idle_reset_s)
            return "pending"
        await self.store.call(Store.forget_answer, self.store.store, event_id)
        self._current = None
        if "rejected" in answer:
            reason = str(answer["rejected"])
            self._show(
                DeskView(
                    "refused",
                    reason if reason in PREREG_REFUSALS else "registration_refused",
                    detail=str(answer["rejected"]),
                    person=person,
                    actions=("next",),
                )
            )
            await self._choose(self.settings.idle_reset_s)
            return "refused"
        if "card" not in answer:  # central delivered this card once, in an ack lost since
            self._show(_reissue(answer, person))
            await self._choose(self.settings.idle_reset_s)
            return "reissue"
        self.last_result = answer
        await self._print(answer, photo)
        self._show(
            DeskView(
                "issued",
                "card_issued",
                person=person,
                patron_id=str(answer["patron_id"]),
                actions=("print", "next"),
                link=str(answer.get("phone_card", "")),
            )
        )
        while await self._choose(self.settings.idle_reset_s) == "print":
            await self._print(answer, photo)
        return "issued"

    async def _await_answer(self, event_id: str, wait: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + wait
        while True:
            answer = await self.store.call(Store.answer, self.store.store, event_id)
            if answer is not None or time.monotonic() > deadline:
                return answer
            self._answers.clear()
            self._beat()
            try:
                await asyncio.wait_for(self._answers.wait(), 0.25)
            except TimeoutError:
                pass

    async def _print(self, answer: dict[str, Any], photo: bytes | None) -> list[str]:
        card = answer["card"]
        face = CardFace(
            library=self.settings.library_name,
            name=str(answer["display_name"]),
            patron_id=str(answer["patron_id"]),
            expires=str(card["expires_at"])[:10],
            token=str(card["token"]),
            photo=photo,
            # the number the library system holds ("" until it assigns one: the card says
            # so, and the librarian's page lists it for a reprint; docs/ils.md)
            card_number=None if answer.get("card_number") is None else str(answer["card_number"]),
        )
        try:
            return await asyncio.to_thread(self.printer.print_card, face)
        except DriverError as exc:
            log.error("printing the card of %s failed: %s", face.patron_id, exc)
            return []

    async def _refresh_pending(self) -> None:
        n = len(await self.store.call(Store.pending, self.store.store, REGISTRATION))
        n += len(await self.store.call(Store.answered, self.store.store, REGISTRATION))
        if n != self.view.pending_cards:
            self._show(replace(self.view, pending_cards=n))

    async def _print_late_answers(self) -> None:
        """Cards of registrations central answered after the reader's session ended."""
        while True:
            await self._late.wait()
            self._late.clear()
            for event_id in await self.store.call(Store.answered, self.store.store, REGISTRATION):
                if event_id == self._current:
                    continue  # the live session prints its own
                answer = await self.store.call(Store.answer, self.store.store, event_id)
                if answer is not None and "card" not in answer and "rejected" not in answer:
                    log.warning(
                        "the card of %s was delivered in an ack that was lost: issue it again",
                        answer.get("patron_id"),
                    )
                elif answer is not None and "rejected" not in answer:
                    await self._print(answer, None)
                    log.info("printed the late card of %s", answer.get("patron_id"))
                elif answer is not None:
                    log.warning("a waiting registration was refused: %s", answer["rejected"])
                await self.store.call(Store.forget_answer, self.store.store, event_id)
            await self._refresh_pending()


def _reissue(answer: dict[str, Any], person: dict[str, str]) -> DeskView:
    """Central answers a registration it already answered with the patron number only (it
    keeps no card token): the librarian registers the reader again, which issues a new card
    and revokes the one whose answer was lost."""
    return DeskView(
        "refused",
        "card_reissue",
        detail=str(answer.get("patron_id", "")),
        person=person,
        actions=("next",),
    )

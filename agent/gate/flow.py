"""The entry gate: camera frame -> card code or face -> policy -> relay -> event.

One loop takes the newest frame (never a backlog), looks for a library card first (7 ms with
zxing-cpp) and for a face otherwise: detect -> quality -> liveness (when enabled) -> embed ->
1:N against the site's gallery with threshold and margin -> policy (blocked, expiry,
anti-passback, cooldown) -> open the relay and greet by name. Every decision is an event with
patron id, method, score and frame-to-relay latency; never an image. What the screen should
show is published as a :class:`GateView` for the kiosk UI.

Drivers block (camera waits, serial I/O, inference), so each runs off the event loop: the
face engine in its worker process (``models.worker``: one round trip per frame through
shared memory), codes and the relay on the loop's default executor. A face seen a moment ago
is tracked (looked for around where it was) and, when it did not match, embedded again only
from a clearly better frame. While the worker restarts the gate says so and takes cards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from biblioedge.agent.gate.policy import GatePolicy, Method, Verdict
from biblioedge.agent.store import NotRecorded
from biblioedge.agent.supervisor import Context
from biblioedge.cardtoken import CardTokenError, CardVerifier, looks_like_card
from biblioedge.drivers.camera import Camera, Frame
from biblioedge.drivers.codes import Code, FrameDecoder
from biblioedge.drivers.errors import DriverError
from biblioedge.drivers.gate import GateController
from biblioedge.models.errors import FaceEngineError
from biblioedge.models.gallery import Gallery
from biblioedge.models.liveness import Liveness
from biblioedge.models.pipeline import Analysis, FaceService
from biblioedge.models.presence import Presence
from biblioedge.models.quality import QualityConfig
from biblioedge.models.worker import WorkerUnavailable

log = logging.getLogger("biblioedge.agent.gate")

Mode = Literal["idle", "granted", "denied", "hint", "out_of_service"]
Emit = Callable[[str, dict[str, Any]], Awaitable[object]]


@dataclass(frozen=True)
class GateView:
    """What the gate screen shows. ``message`` is a key the kiosk translates (vi first)."""

    mode: Mode
    message: str
    name: str = ""
    face_box: tuple[float, float, float, float] | None = None


class GateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "gate_decisions", "Gate decisions", ["decision", "method", "reason"], registry=registry
        )
        self.latency = Histogram(
            "gate_frame_to_relay_seconds",
            "Camera frame to relay command, granted entries",
            buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2),
            registry=registry,
        )
        self.frames = Counter("gate_frames_processed", "Frames looked at", registry=registry)
        self.idle_frames = Counter(
            "gate_frames_idle", "Frames skipped: nothing moved, no face", registry=registry
        )
        self.camera_down = Counter(
            "gate_camera_unavailable", "Times the camera went out of service", registry=registry
        )
        self.camera_ok = Gauge("gate_camera_ok", "1 while the camera delivers", registry=registry)
        self.relay_failures = Counter(
            "gate_relay_failures", "Relay commands that failed", registry=registry
        )
        self.quality_rejects = Counter(
            "gate_quality_rejects", "Faces not good enough to try", ["reason"], registry=registry
        )


@dataclass(frozen=True)
class GateSettings:
    pulse_ms: int = 1500
    quality: QualityConfig = QualityConfig()
    unknown_cooldown_s: float = 4.0
    new_approach_s: float = 1.0
    frame_timeout_s: float = 0.5
    #: a face seen this recently is looked for around where it was, not in the whole frame
    track_s: float = 0.5
    #: a tracked face that did not match is embedded again only when a frame is clearly
    #: better, or after this long
    reembed_s: float = 0.4
    #: nothing moved and no face for this long: the gate idles (no detector, no code
    #: reader) until something moves (models/presence.py); 0 looks at every frame
    idle_after_s: float = 2.0


class GateFlow:
    name = "gate"

    def __init__(
        self,
        *,
        camera: Camera,
        face: FaceService,
        gallery: Gallery,
        decoder: FrameDecoder,
        gate: GateController,
        verifier: CardVerifier,
        policy: GatePolicy,
        barcode_to_patron: Callable[[str], str | None],
        emit: Emit,
        metrics: GateMetrics,
        settings: GateSettings | None = None,
        liveness: Liveness | None = None,
        on_view: Callable[[GateView], None] | None = None,
    ) -> None:
        self.camera = camera
        self.face = face
        self.gallery = gallery
        self.decoder = decoder
        self.gate = gate
        self.verifier = verifier
        self.policy = policy
        self.barcode_to_patron = barcode_to_patron
        self.emit = emit
        #: False while the kiosk cannot record (full disk): the gate does not open then
        self.can_record: Callable[[], bool] = lambda: True
        self.metrics = metrics
        self.settings = settings or GateSettings()
        self.liveness = liveness
        self.on_view = on_view
        self.view = GateView("idle", "welcome_idle")
        self.current: Frame | None = None  # the frame being decided (benchmarks attribute by it)
        self.breakdown: dict[str, float] = {}
        self._recent: dict[str, float] = {}  # refusal key -> when, to log one per approach
        self._last_face = 0.0
        self.presence = Presence()
        self._moved_at = 0.0
        self._track: tuple[float, float, float, float] | None = None  # the face seen last
        self._embedded_at = 0.0  # when the tracked face was last embedded, and how good it was
        self._embedded_goodness = 0.0

    def _show(self, view: GateView) -> None:
        if view != self.view:
            self.view = view
            if self.on_view is not None:
                self.on_view(view)

    async def run(self, ctx: Context) -> None:
        self.camera.start()
        last_seq = -1
        camera_ok = True
        try:
            while True:
                ctx.heartbeat()
                frame = await asyncio.to_thread(
                    self.camera.latest, last_seq, self.settings.frame_timeout_s
                )
                if frame is None:
                    if self.camera.status != "ok" and camera_ok:
                        camera_ok = False
                        self.metrics.camera_down.inc()
                        self.metrics.camera_ok.set(0)
                        log.warning("camera out of service (%s)", self.camera.status)
                        self._show(GateView("out_of_service", "out_of_service"))
                    continue
                if not camera_ok:
                    camera_ok = True
                    self.metrics.camera_ok.set(1)
                    log.info("camera back")
                    self._show(GateView("idle", "welcome_idle"))
                last_seq = frame.seq
                if not self.awake(frame):
                    self.metrics.idle_frames.inc()
                    continue
                self.metrics.frames.inc()
                await self.process(frame)
        finally:
            self.camera.stop()

    def awake(self, frame: Frame) -> bool:
        """Whether to look at this frame: something moved a moment ago, or a face is being
        tracked. The frame that first moves is looked at itself: idling costs a person
        stepping up no frame."""
        if self.settings.idle_after_s <= 0:
            return True
        now = time.monotonic()
        if self.presence.moved(frame.image):
            self._moved_at = now
        return (
            now - self._moved_at < self.settings.idle_after_s
            or now - self._last_face <= self.settings.idle_after_s
        )

    async def process(self, frame: Frame) -> None:
        self.current = frame
        #: where a frame's time went, ms (frame age when picked up, codes, face); benchmarks
        #: and the debug log read it
        self.breakdown = {"wait": round((time.monotonic() - frame.ts) * 1000, 1)}
        t0 = time.monotonic()
        if not self.can_record():  # an entry it could not record: out of service instead
            self._show(GateView("out_of_service", "out_of_service_storage"))
            return
        if self.view.message == "out_of_service_storage":
            self._show(GateView("idle", "welcome_idle"))
        # the card code and the face are looked for at once: the code on a thread, the face
        # in the worker; a card, when there is one, decides without waiting for the face
        looking = asyncio.create_task(self._analyze(frame))
        try:
            codes = await asyncio.to_thread(self.decoder.decode, frame.image)
        except BaseException:
            looking.cancel()
            raise
        self.breakdown["codes"] = round((time.monotonic() - t0) * 1000, 1)
        if codes:
            looking.cancel()
            await self._card(frame, codes[0])
            return
        found = await looking
        if found is not None:
            await self._face(frame, found)

    # -- card path ------------------------------------------------------------------------

    async def _card(self, frame: Frame, code: Code) -> None:
        method: Method = "card_qr" if looks_like_card(code.text) else "barcode"
        if method == "card_qr":
            try:
                patron_id = self.verifier.verify(code.text).pid
            except CardTokenError as exc:
                await self._refuse(frame, method, exc.reason, key=f"code:{code.text[:64]}")
                return
        else:
            found = await asyncio.to_thread(self.barcode_to_patron, code.text)
            if found is None:
                await self._refuse(frame, method, "unknown_barcode", key=f"code:{code.text[:64]}")
                return
            patron_id = found
        await self._decided(frame, method, self.policy.decide(patron_id, method), {})

    # -- face path ------------------------------------------------------------------------

    async def _analyze(self, frame: Frame) -> Analysis | None:
        """The frame's face through the engine; None when the engine cannot look now."""
        now = time.monotonic()
        tracking = now - self._last_face <= self.settings.track_s
        better_than = None
        if tracking and now - self._embedded_at < self.settings.reembed_s:
            better_than = self._embedded_goodness  # this face did not match a moment ago
        try:
            found = await self.face.analyze(
                frame.image,
                quality=self.settings.quality,
                # with liveness: only the frame that completes its evidence is embedded, in
                # the same call that finds its landmarks
                embed=self.liveness is None or self.liveness.decides_next(),
                track=self._track if tracking else None,
                better_than=better_than,
            )
        except WorkerUnavailable:
            self._show(GateView("out_of_service", "out_of_service_face"))
            return None  # cards still open the gate: their codes are read all the same
        except FaceEngineError as exc:  # a bad frame, or the engine failed on it: that frame
            log.warning("frame refused: %s", exc)
            return None
        self.breakdown["face"] = round((time.monotonic() - now) * 1000, 1)
        self.breakdown.update({f"engine_{k}": v for k, v in found.ms.items()})
        return found

    async def _face(self, frame: Frame, found: Analysis) -> None:
        now = time.monotonic()
        if self.view.message == "out_of_service_face":
            self._show(GateView("idle", "welcome_idle"))
        det = found.detection
        if det is None:
            self._track = None
            if now - self._last_face > self.settings.new_approach_s:
                # nobody in view for a moment: whoever comes next is a new approach
                self._recent.pop("unknown_face", None)
                self._recent.pop("liveness", None)
                self._embedded_at = 0.0
            if self.liveness is not None:
                self.liveness.reset()
            if self.view.mode in ("hint",):
                self._show(GateView("idle", "welcome_idle"))
            return
        self._last_face, self._track = now, det.box
        quality = found.quality
        if quality is not None and not quality.ok:
            reason = quality.reasons[0]
            self.metrics.quality_rejects.labels(reason).inc()
            self._show(GateView("hint", f"hint_{reason}", face_box=det.box))
            return
        vector = found.vector
        if vector is not None:  # matched or not, live or not: the next frames must beat it
            self._embedded_at, self._embedded_goodness = now, found.goodness
        if self.liveness is not None:
            live = self.liveness.check(frame.image, det)
            if live.live is None:
                self._show(GateView("hint", "hint_hold_still", face_box=det.box))
                return
            if not live.live:
                await self._refuse(frame, "face", "liveness", key="liveness", score=live.score)
                return
        if vector is None:
            return  # the same face as a moment ago, no better: already decided
        decision = self.gallery.decide(vector, self.face.threshold, self.face.margin)
        scores = {"score": round(decision.score, 4), "margin": round(decision.margin, 4)}
        if not decision.accepted or decision.patron_id is None:
            await self._refuse(frame, "face", "unknown_face", key="unknown_face", **scores)
            return
        verdict = self.policy.decide(decision.patron_id, "face")
        await self._decided(frame, "face", verdict, scores)

    # -- outcomes -------------------------------------------------------------------------

    async def _decided(
        self, frame: Frame, method: Method, verdict: Verdict, extra: dict[str, Any]
    ) -> None:
        if verdict.repeat:
            return  # same reader, same approach: decided a moment ago
        patron_id = verdict.patron.patron_id if verdict.patron else None
        if not verdict.grant:
            await self._refuse(
                frame, method, verdict.reason, key=None, patron_id=patron_id, **extra
            )
            return
        try:
            await asyncio.to_thread(self.gate.open, self.settings.pulse_ms)
        except DriverError as exc:
            self.metrics.relay_failures.inc()
            log.error("relay failed: %s", exc)
            await self._record("gate.alarm", {"reason": "relay_not_responding", "detail": str(exc)})
            self._show(GateView("out_of_service", "out_of_service"))
            return
        latency = time.monotonic() - frame.ts
        self.metrics.latency.observe(latency)
        self.metrics.decisions.labels("grant", method, "ok").inc()
        name = verdict.patron.display_name if verdict.patron else ""
        self._show(GateView("granted", "welcome_name", name=name))
        await self._record(
            "gate.decision",
            {
                "decision": "grant",
                "method": method,
                "patron_id": patron_id,
                "latency_ms": round(latency * 1000, 1),
                "direction": "in",
                **extra,
            },
        )

    async def _refuse(
        self, frame: Frame, method: Method, reason: str, *, key: str | None, **extra: Any
    ) -> None:
        now = time.monotonic()
        if key is not None:  # the same unknown face or bad card, frame after frame
            last = self._recent.get(key)
            if last is not None and now - last < self.settings.unknown_cooldown_s:
                return
            self._recent[key] = now
            if len(self._recent) > 1000:
                self._recent = {
                    k: t
                    for k, t in self._recent.items()
                    if now - t < self.settings.unknown_cooldown_s
                }
        self.metrics.decisions.labels("deny", method, reason).inc()
        message = "scan_card" if reason == "unknown_face" else f"denied_{reason}"
        self._show(GateView("denied", message))
        payload = {
            "decision": "deny",
            "method": method,
            "reason": reason,
            "latency_ms": round((now - frame.ts) * 1000, 1),
            "direction": "in",
        }
        payload.update({k: v for k, v in extra.items() if v is not None})
        await self._record("gate.decision", payload)

    async def _record(self, etype: str, payload: dict[str, Any]) -> None:
        """Record a decision already shown; if the disk filled a moment ago, the reader has
        already passed: log it, and the guard takes the gate out of service from now on."""
        try:
            await self.emit(etype, payload)
        except NotRecorded as exc:
            log.error("%s not recorded: %s", etype, exc)

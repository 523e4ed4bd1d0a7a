"""The gate flow with the product's simulators: simulated camera playing real face images,
the real dlib engine, the turnstile simulator on a real pty, real card tokens."""

import asyncio
import io
import time
from typing import Any

import cv2
import numpy as np
import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry
from samples import astronaut, sample_image

from biblioedge.agent.gate.flow import GateFlow, GateMetrics, GateSettings, GateView
from biblioedge.agent.gate.policy import GatePolicy, PatronInfo
from biblioedge.agent.supervisor import Context
from biblioedge.cardtoken import CardVerifier, issue
from biblioedge.drivers.camera import SimulatedCamera
from biblioedge.drivers.codes import ZxingDecoder
from biblioedge.drivers.gate import LineGate
from biblioedge.drivers.sim_serial import TurnstileSimulator
from biblioedge.models.engine import AsyncFaceEngine, FaceEngine
from biblioedge.models.gallery import Gallery
from biblioedge.models.liveness import MotionLiveness

KEY = Ed25519PrivateKey.generate()
PATRONS = {
    "P1": PatronInfo("P1", "Nguyễn Văn An", "active", "2099-01-01"),
    "P2": PatronInfo("P2", "Trần Thị Bình", "active", "2099-01-01"),
    "P3": PatronInfo("P3", "Lê Văn Cường", "blocked", "2099-01-01"),
}


def card_frame(token: str) -> np.ndarray:
    buf = io.BytesIO()
    segno.make(token, error="m").save(buf, kind="png", scale=5, border=4)
    code = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    frame = np.full((720, 1280, 3), 170, np.uint8)
    frame[150 : 150 + code.shape[0], 500 : 500 + code.shape[1]] = code
    return frame


@pytest.fixture(scope="module")
def face() -> Any:
    engine = asyncio.run(AsyncFaceEngine.load(FaceEngine))
    yield engine
    engine.close()


class Rig:
    def __init__(self, face: AsyncFaceEngine, frames: list[np.ndarray], **sim: bool) -> None:
        self.turnstile = TurnstileSimulator(**sim).start()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.views: list[GateView] = []
        gallery = Gallery(face.engine.dim)
        _, astro = face.engine.embed_largest(astronaut())
        gallery.add("P1", astro)
        self.camera = SimulatedCamera(frames, fps=10)
        self.gate = LineGate(self.turnstile.port, reply_timeout=0.3)
        self.registry = CollectorRegistry()
        self.metrics = GateMetrics(self.registry)
        self.flow = GateFlow(
            camera=self.camera,
            face=face,
            gallery=gallery,
            decoder=ZxingDecoder(),
            gate=self.gate,
            verifier=CardVerifier({"k1": KEY.public_key()}, revoked={"card-revoked"}),
            policy=GatePolicy(PATRONS.get, passback_s=300, cooldown_s=30),
            barcode_to_patron={"2000000002": "P2"}.get,
            emit=self.emit,
            metrics=self.metrics,
            settings=GateSettings(pulse_ms=300),
            on_view=self.views.append,
        )

    async def emit(self, etype: str, payload: dict[str, Any]) -> None:
        self.events.append((etype, payload))

    async def run_until(self, pred: Any, limit_s: float = 20.0) -> None:
        task = asyncio.create_task(self.flow.run(Context("gate", 30)))
        try:
            end = time.monotonic() + limit_s
            while not pred():
                assert time.monotonic() < end, (
                    f"timed out; events {self.events} views {self.views[-3:]}"
                )
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self.gate.close()
            self.turnstile.stop()

    def decisions(self) -> list[dict[str, Any]]:
        return [p for t, p in self.events if t == "gate.decision"]


async def test_enrolled_face_opens_the_gate_once_and_greets_by_name(face: AsyncFaceEngine) -> None:
    rig = Rig(face, [cv2.flip(astronaut(), 1)])
    # the relay opens just before the event is recorded: wait for the event, then one more
    # second of the reader standing in view, who must not be let in twice
    first: list[float] = []

    def done() -> bool:
        if rig.decisions() and not first:
            first.append(time.monotonic())
        return bool(first) and time.monotonic() - first[0] > 1.0

    await rig.run_until(done, limit_s=20)
    (d,) = rig.decisions()
    assert d["decision"] == "grant" and d["method"] == "face" and d["patron_id"] == "P1"
    assert d["score"] > face.engine.threshold and 0 < d["latency_ms"] < 2000
    assert len(rig.turnstile.state.opens) == 1  # the reader still in view is not let in twice
    assert any(v.mode == "granted" and v.name == "Nguyễn Văn An" for v in rig.views)
    assert "image" not in str(d) and "embedding" not in str(d)


async def test_unknown_faces_are_refused_and_asked_for_the_card(face: AsyncFaceEngine) -> None:
    rig = Rig(face, [sample_image("t1.jpg")])
    await rig.run_until(rig.decisions)
    d = rig.decisions()[0]
    assert d == {**d, "decision": "deny", "method": "face", "reason": "unknown_face"}
    assert not rig.turnstile.state.opens
    assert any(v.message == "scan_card" for v in rig.views)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (issue(KEY, "k1", "card-ok", "P2", valid_days=30), None),
        (issue(KEY, "k1", "card-revoked", "P2", valid_days=30), "revoked"),
        (issue(KEY, "k1", "card-blocked", "P3", valid_days=30), "blocked"),
        (issue(Ed25519PrivateKey.generate(), "k1", "card-x", "P2", valid_days=30), "bad_signature"),
        ("2000000002", None),
        ("2999999999", "unknown_barcode"),
    ],
)
async def test_cards_and_barcodes(face: AsyncFaceEngine, token: str, reason: str | None) -> None:
    rig = Rig(face, [card_frame(token)])
    await rig.run_until(rig.decisions)
    d = rig.decisions()[0]
    if reason is None:
        assert d["decision"] == "grant" and d["patron_id"] == "P2"
        await asyncio.sleep(0)
        assert rig.turnstile.state.opens
    else:
        assert d["decision"] == "deny" and d["reason"] == reason
        assert not rig.turnstile.state.opens


async def test_dead_relay_raises_an_alarm(face: AsyncFaceEngine) -> None:
    rig = Rig(face, [card_frame(issue(KEY, "k1", "card-ok", "P2", valid_days=30))], mute=True)
    await rig.run_until(lambda: any(t == "gate.alarm" for t, _ in rig.events))
    alarm = next(p for t, p in rig.events if t == "gate.alarm")
    assert alarm["reason"] == "relay_not_responding"
    assert rig.flow.view.mode == "out_of_service"


async def test_camera_unplugged_shows_out_of_service_and_recovers(face: AsyncFaceEngine) -> None:
    rig = Rig(face, [np.full((480, 640, 3), 90, np.uint8)])
    rig.camera.stall_timeout = 0.3

    async def scenario() -> None:
        await asyncio.sleep(0.5)
        rig.camera.unplug()

    asyncio.get_running_loop().call_later(1.5, rig.camera.replug)
    _unplug = asyncio.create_task(scenario())
    modes: list[str] = []
    rig.flow.on_view = lambda v: modes.append(v.mode)
    await rig.run_until(lambda: "out_of_service" in modes and modes[-1] == "idle", limit_s=15)
    await _unplug
    assert rig.registry.get_sample_value("gate_camera_unavailable_total") >= 1
    assert rig.registry.get_sample_value("gate_camera_ok") == 1


def test_bench_gate_small_run() -> None:
    from biblioedge.bench.gate import bench_gate

    doc = bench_gate(people=4, rounds=1, frames=4, progress=False, idle_s=1.0)
    assert doc["approaches"] == 4 and doc["enrolled_approaches"] == 2
    assert doc["false_accepts"] == 0
    assert doc["frame_to_relay_ms"]["p50"] > 0 and doc["people_per_minute"] > 0
    for key in ("false_rejects", "no_decision", "closest_stranger_score", "targets"):
        assert key in doc
    stages = doc["engine_stage_p50_ms"]  # the engine alone, on the frames decided on
    assert stages["frames"] > 0 and stages["detect"] > 0 and stages["embed"] > 0
    assert doc["overhead_ratio"] > 0.5 and doc["max_loop_lag_ms"] >= 0
    assert doc["engine"] == "process" and "p95" in doc["thread_baseline"]["frame_to_relay_ms"]
    assert doc["granted_frame_ms_p50"]["face"] > 0
    idle = doc["idle"]  # an empty lobby: idling against the detector on every frame
    assert idle["idle_cpu_pct"] >= 0 and idle["always_detect_cpu_pct"] > 0
    assert idle["appear_to_first_look_ms"]["idle"] is not None  # the reader was looked at


class CountingFace:
    """The engine, recording what the gate asks of it: per analysis whether an embedding was
    asked for and whether one came back. (The face service has no separate embed call: an
    embedding only ever comes with its frame's analysis.)"""

    def __init__(self, inner: AsyncFaceEngine) -> None:
        self.inner = inner
        self.asked: list[tuple[bool, bool]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def analyze(self, image: Any, **kw: Any) -> Any:
        found = await self.inner.analyze(image, **kw)
        self.asked.append((kw.get("embed", True), found.vector is not None))
        return found


async def test_with_liveness_the_deciding_frame_is_embedded_in_its_own_analysis(
    face: AsyncFaceEngine,
) -> None:
    rig = Rig(face, [cv2.flip(astronaut(), 1)])
    counting = CountingFace(face)
    rig.flow.face = counting  # type: ignore[assignment]
    rig.flow.liveness = MotionLiveness(window=3, min_residual=0.0)  # any motion is live here
    await rig.run_until(lambda: bool(rig.decisions()), limit_s=20)
    first = rig.decisions()[0]
    assert (first["decision"], first["method"]) == ("grant", "face")
    asked = [embed for embed, _ in counting.asked]
    assert asked[:2] == [False, False] and asked[2]  # two frames of evidence, then the third


async def test_a_photo_held_still_is_refused_once_and_not_embedded_frame_after_frame(
    face: AsyncFaceEngine,
) -> None:
    rig = Rig(face, [cv2.flip(astronaut(), 1)])  # an enrolled reader's photo, held still
    counting = CountingFace(face)
    rig.flow.face = counting  # type: ignore[assignment]
    rig.flow.liveness = MotionLiveness(window=3)
    start = time.monotonic()
    await rig.run_until(lambda: time.monotonic() - start > 3.0, limit_s=10)
    assert [(d["decision"], d["reason"]) for d in rig.decisions()] == [("deny", "liveness")]
    embedded = sum(got for _, got in counting.asked)
    # embedded again only when the face was last embedded reembed_s ago, never on every frame
    assert 1 <= embedded <= 3.0 / rig.flow.settings.reembed_s + 1, (embedded, counting.asked)


async def test_each_approach_of_a_stranger_is_one_event(face: AsyncFaceEngine) -> None:
    blank = np.full((720, 1280, 3), 100, np.uint8)
    rig = Rig(face, [sample_image("t1.jpg")])

    async def walk() -> None:  # stranger, gone for 1.5 s, a stranger again
        await asyncio.sleep(1.0)
        rig.camera.show([blank])
        await asyncio.sleep(1.5)
        rig.camera.show([sample_image("t1.jpg")])

    walker = asyncio.create_task(walk())
    await rig.run_until(lambda: len(rig.decisions()) >= 2, limit_s=15)
    await walker
    assert [d["reason"] for d in rig.decisions()[:2]] == ["unknown_face", "unknown_face"]


async def test_a_flood_of_frames_does_not_starve_the_event_loop(face: AsyncFaceEngine) -> None:
    """The engine works off the loop: while frames pour in, the loop keeps turning during the
    analyses themselves (counted, not timed: the suite runs on a loaded machine)."""
    rig = Rig(face, [sample_image("t1.jpg"), cv2.flip(astronaut(), 1)])
    rig.camera.fps = 60.0  # far more frames than the engine can take
    busy = [0]  # analyses in flight
    during = [0]  # loop turns while one was in flight

    class Watched(CountingFace):
        async def analyze(self, image: Any, **kw: Any) -> Any:
            busy[0] += 1
            try:
                return await super().analyze(image, **kw)
            finally:
                busy[0] -= 1

    rig.flow.face = Watched(face)  # type: ignore[assignment]

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.005)
            during[0] += busy[0] > 0

    tick = asyncio.create_task(ticker())
    await rig.run_until(lambda: len(rig.flow.face.asked) >= 10, limit_s=60)  # type: ignore[attr-defined]
    tick.cancel()
    await asyncio.gather(tick, return_exceptions=True)
    frames = rig.registry.get_sample_value("gate_frames_processed_total")
    assert frames is not None and frames >= 10 and rig.flow.current is not None
    assert frames < rig.flow.current.seq  # newest frame only: the rest dropped, no backlog
    assert during[0] >= 10, during  # the loop turned while the engine worked


async def test_an_empty_lobby_idles_and_the_first_frame_of_a_reader_is_looked_at(
    face: AsyncFaceEngine,
) -> None:
    """Nobody in view: no detector, no code reader, frame after frame. The frame on which a
    reader steps up wakes the gate and is itself analysed (idling costs no frame)."""
    rng = np.random.default_rng(3)
    lobby = np.full((720, 1280, 3), 150, np.uint8)
    noisy = [  # a camera's sensor noise on an empty scene
        np.clip(lobby + rng.normal(0, 4, lobby.shape), 0, 255).astype(np.uint8) for _ in range(4)
    ]
    rig = Rig(face, noisy)
    rig.flow.settings = GateSettings(pulse_ms=300, idle_after_s=0.3)
    scenes: list[int] = []  # the scene of each frame the engine was asked about

    class Seeing(CountingFace):
        async def analyze(self, image: Any, **kw: Any) -> Any:
            assert rig.flow.current is not None
            scenes.append(rig.flow.current.scene)
            return await super().analyze(image, **kw)

    counting = Seeing(face)
    rig.flow.face = counting  # type: ignore[assignment]

    def idle() -> float:
        return rig.registry.get_sample_value("gate_frames_idle_total") or 0.0

    reader = cv2.flip(astronaut(), 1)
    state: dict[str, Any] = {}

    def progress() -> bool:
        if "asked" not in state and idle() >= 10:  # idling: the engine is not asked
            state["asked"] = len(counting.asked)
            state["idle"] = idle()
        if "asked" in state and "shown" not in state and idle() >= state["idle"] + 10:
            state["still"] = len(counting.asked)
            rig.camera.show([reader])
            state["shown"] = rig.camera.scene
        return bool(rig.decisions())

    await rig.run_until(progress, limit_s=60)
    assert state["still"] == state["asked"]  # ten more idle frames, not one analysis
    (d,) = rig.decisions()[:1]
    assert (d["decision"], d["patron_id"]) == ("grant", "P1")
    # the first analysis after idling is of the reader: the frame that moved is looked at
    assert scenes[state["still"]] == state["shown"]

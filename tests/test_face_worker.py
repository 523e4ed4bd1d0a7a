"""The face engine in its worker process: the same answers as in-process, bad frames refused
without harm, a crashed or hung worker replaced while the gate takes cards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import numpy as np
import pytest
from samples import astronaut, sample_image
from test_gate_flow import KEY, Rig, card_frame

from biblioedge.cardtoken import issue
from biblioedge.models.engine import AsyncFaceEngine, FaceEngine
from biblioedge.models.errors import ImageError
from biblioedge.models.pipeline import analyze
from biblioedge.models.worker import FaceWorker, WorkerUnavailable


async def turns_during(work: Awaitable[None]) -> int:
    """How many times the event loop turned while ``work`` ran: a loop held by the work
    turns not at all. Counted, not timed: the suite runs on a loaded machine."""
    turns, done = 0, False

    async def tick() -> None:
        nonlocal turns
        while not done:
            await asyncio.sleep(0.002)
            turns += 1

    ticker = asyncio.create_task(tick())
    try:
        await work
    finally:
        done = True
        await ticker
    return turns


@pytest.fixture
async def worker() -> AsyncIterator[FaceWorker]:
    w = await FaceWorker(timeout_s=3.0).start()
    yield w
    w.close()


async def test_the_worker_answers_as_the_engine_in_process_does(worker: FaceWorker) -> None:
    engine = FaceEngine()
    image = astronaut()
    local = analyze(engine, image)
    remote = await worker.analyze(image)
    assert remote.detection is not None and local.detection is not None
    assert np.allclose(remote.detection.box, local.detection.box)
    assert remote.vector is not None and local.vector is not None
    assert float(np.dot(remote.vector, local.vector)) > 0.9999
    assert (worker.dim, worker.threshold, worker.embedder_name) == (
        engine.dim,
        engine.threshold,
        "dlib-resnet@1",
    )
    # tracked: found again in a crop around the face, at a fraction of the cost
    again = await worker.analyze(image, track=local.detection.box)
    assert again.tracked and again.vector is not None
    assert float(np.dot(again.vector, local.vector)) > 0.99
    # a face that did not match a moment ago is not embedded again from a frame no better
    same = await worker.analyze(image, track=local.detection.box, better_than=again.goodness)
    assert same.detection is not None and same.vector is None


async def test_bad_frames_are_refused_and_the_worker_goes_on(worker: FaceWorker) -> None:
    pid = worker.pid
    for bad in (
        np.zeros((720, 1280), np.uint8),  # grey
        np.zeros((720, 1280, 3), np.float32),  # wrong type
        np.zeros((4, 4, 3), np.uint8),  # too small
        np.zeros((2160, 3840, 3), np.uint8),  # larger than the shared buffer
        "not a frame",
    ):
        with pytest.raises(ImageError):
            await worker.analyze(bad)
    whole = await worker.analyze(astronaut())
    assert whole.detection is not None
    _, y1, _, y2 = whole.detection.box
    cut = np.ascontiguousarray(astronaut()[: int(y1 + (y2 - y1) * 0.7)])  # chin off the edge
    found = await worker.analyze(cut)
    assert found.quality is not None and "out_of_frame" in found.quality.reasons
    assert found.vector is None  # never embedded, never matched
    assert worker.pid == pid and (await worker.analyze(astronaut())).vector is not None


@pytest.mark.parametrize("how", ["crash", "hang"])
async def test_a_worker_that_dies_or_hangs_is_replaced(worker: FaceWorker, how: str) -> None:
    pid = worker.pid
    # a hung call never answers: that this raises at all is the timeout at work (not timed
    # here: the suite runs on a loaded machine; pytest-timeout ends a test that hangs)
    with pytest.raises(WorkerUnavailable):
        await worker._call(how, astronaut())
    with pytest.raises(WorkerUnavailable):  # meanwhile: refused at once, never waited on
        await worker.analyze(astronaut())
    assert await worker.wait_available(60)
    assert worker.pid != pid and worker.restarts == 1
    assert (await worker.analyze(astronaut())).vector is not None


async def test_while_the_worker_restarts_the_gate_says_so_and_takes_cards() -> None:
    local = await AsyncFaceEngine.load(FaceEngine)
    worker = await FaceWorker(timeout_s=3.0).start()
    token = issue(KEY, "k1", "card-2", "P2", valid_days=30)
    try:
        rig = Rig(local, [astronaut()])
        rig.flow.face = worker
        assert worker._proc is not None
        worker._proc.kill()  # the worker dies under the gate
        worker._proc.join(5)
        seen: list[Any] = []

        def shown() -> bool:
            seen.extend(v.message for v in rig.views)
            if "out_of_service_face" in seen and not any(
                p.get("method") == "card_qr" for p in rig.decisions()
            ):
                rig.camera.show([card_frame(token)])  # a reader holds up a library card
            return any(p.get("method") == "card_qr" for p in rig.decisions())

        await rig.run_until(shown, 60)
        assert "out_of_service_face" in seen
        assert rig.decisions()[-1]["decision"] == "grant"
        assert await worker.wait_available(60)
    finally:
        worker.close()
        local.close()


async def test_the_event_loop_is_not_held_by_the_face_work(worker: FaceWorker) -> None:
    """A frame in the worker leaves the loop free: it keeps turning while each frame is
    analysed in the other process (bench gate measures the lag itself)."""
    image = sample_image("t1.jpg")
    analysing = [0]

    async def four_frames() -> None:
        for _ in range(4):
            analysing[0] += 1
            await worker.analyze(image)

    turns = await turns_during(four_frames())
    assert analysing[0] == 4 and turns >= 8, turns  # more than once per frame


async def test_a_flood_of_frames_costs_frames_not_the_loop() -> None:
    """A camera delivering 1000 frames a second: the gate takes the newest frame each time
    (the rest are dropped), its loop stays responsive, and a stranger standing there is one
    refusal, not one per frame. The camera is far faster than any engine (CI's took 15 ms a
    tracked frame, 66 a second), so most frames must be dropped on any machine."""
    local = await AsyncFaceEngine.load(FaceEngine)
    worker = await FaceWorker(timeout_s=3.0).start()
    try:
        rig = Rig(local, [sample_image("t1.jpg")])
        rig.flow.face = worker
        rig.camera.fps = 1000
        seen: list[int] = []  # frames produced when the refusal came

        def enough() -> bool:  # the refusal, then 500 more frames of her standing there
            if rig.decisions() and not seen:
                seen.append(rig.camera.stats.frames)
            return bool(seen) and rig.camera.stats.frames > max(1000, seen[0] + 500)

        turns = await turns_during(rig.run_until(enough, 120))
        produced = rig.camera.stats.frames
        looked = rig.registry.get_sample_value("gate_frames_processed_total")
        assert produced > 1000 and looked is not None and looked < produced / 3, (produced, looked)
        refusals = [p for p in rig.decisions() if p["decision"] == "deny"]
        assert len(refusals) == 1 and not any(p["decision"] == "grant" for p in rig.decisions())
        assert turns >= looked, (turns, looked)  # the loop turned between and during frames
    finally:
        worker.close()
        local.close()


async def test_an_engine_error_costs_that_frame_not_the_gate(worker: FaceWorker) -> None:
    from biblioedge.models.errors import FaceEngineError

    pid = worker.pid
    with pytest.raises(FaceEngineError, match="unknown operation"):
        await worker._call("no-such-op", astronaut())
    assert worker.pid == pid  # the worker answered with the error and goes on
    local = await AsyncFaceEngine.load(FaceEngine)
    try:
        rig = Rig(local, [astronaut()])
        failures = [3]
        real = worker.analyze

        async def failing(image: Any, **kw: Any) -> Any:
            if failures[0]:
                failures[0] -= 1
                raise FaceEngineError("dlib: internal error on this frame")
            return await real(image, **kw)

        rig.flow.face = worker
        worker.analyze = failing  # type: ignore[method-assign]
        await rig.run_until(lambda: any(p["decision"] == "grant" for p in rig.decisions()), 30)
        assert failures[0] == 0 and rig.decisions()[-1]["patron_id"] == "P1"
    finally:
        local.close()

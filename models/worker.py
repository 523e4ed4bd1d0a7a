"""The face engine in a worker process: the kiosk's second core, and an event loop that never
waits for the engine.

dlib holds the GIL while it computes (about 75 ms a frame here), so a face engine on a thread
stalls the agent's event loop: sync, the screen and the relay wait behind every frame. In its
own process it stalls nothing, and the kiosk's second core does the face work.

Frames go through shared memory: the parent copies a frame into one shared buffer and sends
only its shape; the worker answers with the small result (a detection, a 128- or 512-value
template, timings). One call is in flight at a time. The worker is started and warmed up
before it is used; a worker that dies or does not answer within ``timeout_s`` is killed and
started again in the background, and calls meanwhile raise :class:`WorkerUnavailable` at
once, so the gate shows out of service and still takes cards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from biblioedge.models.detect import Detection
from biblioedge.models.errors import FaceEngineError, ImageError
from biblioedge.models.pipeline import Analysis, Box, check_frame
from biblioedge.models.quality import QualityConfig

log = logging.getLogger("biblioedge.models.worker")
F32 = npt.NDArray[np.float32]
#: the largest frame that fits the shared buffer (1080p); larger frames are refused
MAX_FRAME_BYTES = 1920 * 1080 * 3


class WorkerUnavailable(FaceEngineError):
    """The worker process is down or restarting; the caller goes on without the face."""


@dataclass(frozen=True)
class EngineSpec:
    """How the worker builds its engine (picklable: the worker is spawned, not forked)."""

    models_dir: Path | None = None
    intra_threads: int = 2
    inter_threads: int = 1
    optimization: str = "all"
    detect_side: int = 960


@dataclass(frozen=True)
class EngineInfo:
    dim: int
    threshold: float
    margin: float
    embedder_name: str
    detector_name: str


def _build(spec: EngineSpec) -> Any:
    from biblioedge.models.engine import FaceEngine
    from biblioedge.models.onnx import RuntimeOptions
    from biblioedge.models.store import ModelStore

    options = RuntimeOptions(spec.intra_threads, spec.inter_threads, spec.optimization)
    store = ModelStore(spec.models_dir) if spec.models_dir is not None else None
    return FaceEngine(store, options=options, detect_side=spec.detect_side)


def _serve(conn: Connection, shm_name: str, spec: EngineSpec) -> None:
    """The worker's main loop: one request, one answer, until the pipe closes."""
    from biblioedge.models import pipeline

    shm = SharedMemory(name=shm_name)
    try:
        engine = _build(spec)
        engine.warm_up()
        info = EngineInfo(
            engine.dim,
            float(engine.threshold),
            float(engine.margin),
            engine.embedder.name,
            engine.detector_name,
        )
        conn.send(("ready", info))
        while True:
            try:
                op, shape, kwargs = conn.recv()
            except EOFError:
                return
            try:
                image = np.ndarray(shape, np.uint8, buffer=shm.buf)
                if op == "analyze":
                    result: Any = pipeline.analyze(engine, image, **kwargs)
                elif op == "embed_largest":
                    result = engine.embed_largest(image)
                elif op == "crash":  # tests: a worker that dies mid-call
                    os._exit(3)
                elif op == "hang":  # tests: a worker that stops answering
                    time.sleep(3600)
                    result = None
                else:
                    raise ValueError(f"unknown operation {op!r}")
                del image
                conn.send(("ok", result))
            except Exception as exc:  # a bad frame costs that frame, never the worker
                conn.send(("error", (type(exc).__name__, str(exc)[:500])))
    finally:
        shm.close()


class FaceWorker:
    """The async face service on a worker process; ``start`` before use, ``close`` after."""

    def __init__(
        self,
        spec: EngineSpec | None = None,
        *,
        timeout_s: float = 5.0,
        start_timeout_s: float = 120.0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self.spec = spec or EngineSpec()
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.max_frame_bytes = max_frame_bytes
        self.info: EngineInfo | None = None
        self.restarts = 0
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self._shm: SharedMemory | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="face-ipc")
        self._lock = asyncio.Lock()
        self._restarting: asyncio.Task[None] | None = None
        self._closed = False

    # -- the engine's figures, as the callers read them --------------------------------------

    def _info(self) -> EngineInfo:
        if self.info is None:
            raise WorkerUnavailable("the face worker has not started")
        return self.info

    @property
    def dim(self) -> int:
        return self._info().dim

    @property
    def threshold(self) -> float:
        return self._info().threshold

    @property
    def margin(self) -> float:
        return self._info().margin

    @property
    def embedder_name(self) -> str:
        return self._info().embedder_name

    @property
    def available(self) -> bool:
        return self._conn is not None and self._proc is not None and self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else int(self._proc.pid)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> FaceWorker:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._spawn)
        return self

    def _spawn(self) -> None:
        if self._shm is None:
            self._shm = SharedMemory(create=True, size=self.max_frame_bytes)
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_serve, args=(child, self._shm.name, self.spec), daemon=True, name="face"
        )
        proc.start()
        child.close()
        if not parent.poll(self.start_timeout_s):
            proc.kill()
            proc.join(5)
            raise WorkerUnavailable(f"the face worker did not start in {self.start_timeout_s} s")
        try:
            kind, info = parent.recv()
        except EOFError:
            proc.join(5)
            raise WorkerUnavailable(
                f"the face worker died at start (exit {proc.exitcode})"
            ) from None
        if kind != "ready":
            raise WorkerUnavailable(f"the face worker failed to start: {info}")
        self.info, self._proc, self._conn = info, proc, parent
        log.info("face worker %d ready (%s)", proc.pid, info.embedder_name)

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.kill()
            proc.join(5)

    def _restart_later(self, why: str) -> None:
        self._kill()
        log.error("face worker lost (%s); starting another", why)
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        delay = 0.5
        while not self._closed:
            try:
                await asyncio.get_running_loop().run_in_executor(self._pool, self._spawn)
                self.restarts += 1
                return
            except WorkerUnavailable as exc:
                log.error("face worker restart failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def wait_available(self, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.available:
                return True
            await asyncio.sleep(0.05)
        return self.available

    def close(self) -> None:
        self._closed = True
        if self._restarting is not None:
            self._restarting.cancel()
        self._kill()
        if self._shm is not None:
            self._shm.close()
            with contextlib.suppress(FileNotFoundError):
                self._shm.unlink()
            self._shm = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- calls ---------------------------------------------------------------------------

    def _roundtrip(self, op: str, image: npt.NDArray[np.uint8], kwargs: dict[str, Any]) -> Any:
        conn, shm = self._conn, self._shm
        if conn is None or shm is None:
            raise WorkerUnavailable("the face worker is restarting")
        if image.nbytes > self.max_frame_bytes:
            raise ImageError(f"a {image.shape[1]}x{image.shape[0]} frame is larger than 1080p")
        np.ndarray(image.shape, np.uint8, buffer=shm.buf)[...] = image
        conn.send((op, image.shape, kwargs))
        if not conn.poll(self.timeout_s):
            raise TimeoutError(f"no answer in {self.timeout_s} s")
        kind, result = conn.recv()
        if kind == "error":
            name, message = result
            if name == "ImageError":
                raise ImageError(message)
            if name == "NoFace":
                from biblioedge.models.engine import NoFace

                raise NoFace(message)
            raise FaceEngineError(f"{name}: {message}")
        return result

    async def _call(self, op: str, image: Any, **kwargs: Any) -> Any:
        frame = check_frame(image)
        async with self._lock:
            if not self.available:
                if self._conn is not None or self._proc is not None:
                    self._restart_later("it exited")
                raise WorkerUnavailable("the face worker is restarting")
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._pool, self._roundtrip, op, frame, kwargs)
            except (EOFError, OSError) as exc:  # the pipe broke: the worker is gone
                self._restart_later(f"{type(exc).__name__}")
                raise WorkerUnavailable("the face worker died") from exc
            except TimeoutError as exc:
                self._restart_later(str(exc))
                raise WorkerUnavailable("the face worker stopped answering") from exc

    async def analyze(
        self,
        image: Any,
        *,
        quality: QualityConfig | None = None,
        embed: bool = True,
        track: Box | None = None,
        better_than: float | None = None,
    ) -> Analysis:
        result: Analysis = await self._call(
            "analyze", image, quality=quality, embed=embed, track=track, better_than=better_than
        )
        return result

    async def embed_largest(self, image: Any) -> tuple[Detection, F32]:
        result: tuple[Detection, F32] = await self._call("embed_largest", image)
        return result

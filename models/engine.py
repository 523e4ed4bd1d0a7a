"""The face engine: the active detector and embedder from the model store, dlib otherwise.

Callers get one object with ``detect``, ``embed_largest``, ``embed_aligned`` and ``compare``.
:class:`AsyncFaceEngine` runs the same calls on a dedicated worker thread (onnxruntime and
dlib release the GIL while they compute), warmed up at load so the first reader at the gate
does not pay for lazy initialisation. A model that fails to load leaves the engine on what it
had: the caller gets the error, the kiosk keeps recognizing with the previous model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from biblioedge.models.align import norm_crop
from biblioedge.models.detect import SCRFD, Detection, Detector, YuNet
from biblioedge.models.dlib_backend import DLIB_MARGIN, DLIB_THRESHOLD, DlibBackend
from biblioedge.models.embed import OnnxEmbedder
from biblioedge.models.errors import FaceEngineError, ModelLoadError
from biblioedge.models.image import Image
from biblioedge.models.manifest import Manifest
from biblioedge.models.onnx import RuntimeOptions
from biblioedge.models.store import ModelStore, ModelStoreError

if TYPE_CHECKING:
    from biblioedge.models.pipeline import Analysis
    from biblioedge.models.quality import QualityConfig

log = logging.getLogger("biblioedge.models.engine")
F32 = npt.NDArray[np.float32]
P = ParamSpec("P")
T = TypeVar("T")


class NoFace(FaceEngineError):
    """No face was found in the image."""


@dataclass(frozen=True)
class Comparison:
    score: float
    threshold: float
    match: bool


def load_detector(manifest: Manifest, path: object, options: RuntimeOptions) -> Detector:
    from pathlib import Path

    if manifest.layout == "scrfd":
        return SCRFD(Path(str(path)), manifest, options=options)
    if manifest.layout == "yunet":
        return YuNet(Path(str(path)), manifest, options=options)
    raise ModelLoadError(f"{manifest.ref}: {manifest.layout} is not an ONNX detector layout")


def load_embedder(manifest: Manifest, path: object, options: RuntimeOptions) -> OnnxEmbedder:
    from pathlib import Path

    if manifest.layout not in ("arcface", "sface"):
        raise ModelLoadError(f"{manifest.ref}: {manifest.layout} is not an ONNX embedder layout")
    return OnnxEmbedder(Path(str(path)), manifest, options=options)


def check_model(manifest: Manifest, path: object) -> None:
    """Load a model once to prove it matches its manifest (used by ``models activate``)."""
    opts = RuntimeOptions(intra_threads=1)
    if manifest.task == "detect":
        load_detector(manifest, path, opts)
    elif manifest.task == "embed":
        load_embedder(manifest, path, opts)
    else:
        from pathlib import Path

        from biblioedge.models.liveness import OnnxLiveness

        OnnxLiveness(Path(str(path)), manifest, opts)


class FaceEngine:
    def __init__(
        self,
        store: ModelStore | None = None,
        *,
        options: RuntimeOptions | None = None,
        detector: str | None = None,
        embedder: str | None = None,
        detect_side: int = 960,
    ) -> None:
        """``detector``/``embedder`` name a stored model (name@version); default: the active
        one of its task, or dlib when none is active. dlib's detector looks at frames
        downscaled to ``detect_side`` pixels on their long side (ONNX detectors resize to
        their own input size)."""
        self.options = options or RuntimeOptions()
        self._dlib: DlibBackend | None = None
        self.detector: Detector
        self.embedder: OnnxEmbedder | DlibBackend
        det_m = self._pick(store, "detect", detector)
        emb_m = self._pick(store, "embed", embedder)
        if det_m is None or emb_m is None:
            self._dlib = DlibBackend(max_side=detect_side)
        if det_m is not None and store is not None:
            self.detector = load_detector(det_m, store.verified_path(det_m), self.options)
        else:
            assert self._dlib is not None
            self.detector = self._dlib
        if emb_m is not None and store is not None:
            self.embedder = load_embedder(emb_m, store.verified_path(emb_m), self.options)
            self.threshold, self.margin = emb_m.threshold, emb_m.margin
        else:
            assert self._dlib is not None
            self.embedder = self._dlib
            self.threshold, self.margin = DLIB_THRESHOLD, DLIB_MARGIN
        self.dim = self.embedder.dim

    @staticmethod
    def _pick(store: ModelStore | None, task: str, ref: str | None) -> Manifest | None:
        if store is None:
            if ref is not None:
                raise ModelStoreError(f"no model store to load {ref} from")
            return None
        if ref is not None:
            return store.manifest(ref)
        return store.active(task)  # type: ignore[arg-type]

    @property
    def detector_name(self) -> str:
        return "dlib-hog@1" if isinstance(self.detector, DlibBackend) else self.detector.name

    def align(self, image: Image, det: Detection) -> Image:
        if isinstance(self.embedder, DlibBackend):
            return self.embedder.align(image, det)
        return norm_crop(image, det.landmarks)

    def detect(self, image: Image) -> list[Detection]:
        return self.detector.detect(image)

    def embed_detections(self, image: Image, dets: Sequence[Detection]) -> F32:
        if isinstance(self.embedder, DlibBackend):
            return self.embedder.embed_faces(image, dets)
        return self.embedder.embed([norm_crop(image, d.landmarks) for d in dets])

    def embed_largest(self, image: Image) -> tuple[Detection, F32]:
        dets = self.detect(image)
        if not dets:
            raise NoFace("no face found")
        det = max(dets, key=lambda d: d.area)
        return det, self.embed_detections(image, [det])[0]

    def embed_aligned(self, crops: Sequence[Image]) -> F32:
        return self.embedder.embed(crops)

    def compare(self, a: F32, b: F32) -> Comparison:
        score = float(np.dot(a, b))
        return Comparison(round(score, 6), self.threshold, score >= self.threshold)

    def warm_up(self) -> None:
        blank = np.full((480, 640, 3), 127, np.uint8)
        self.detect(blank)
        if isinstance(self.embedder, OnnxEmbedder):
            self.embedder.embed([np.zeros((112, 112, 3), np.uint8)])


class AsyncFaceEngine:
    """The engine on its own worker thread. dlib holds the GIL while it computes, so the event
    loop does wait for it: kiosks use :class:`models.worker.FaceWorker`, with the same calls;
    this one serves tools and tests that want the engine in their own process."""

    def __init__(self, engine: FaceEngine) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="face")

    @classmethod
    async def load(cls, factory: Callable[[], FaceEngine]) -> AsyncFaceEngine:
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="face")
        engine = await loop.run_in_executor(pool, factory)
        await loop.run_in_executor(pool, engine.warm_up)
        self = cls.__new__(cls)
        self.engine, self._pool = engine, pool
        return self

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the face service's calls (as FaceWorker's) -------------------------------------------

    available = True

    @property
    def dim(self) -> int:
        return self.engine.dim

    @property
    def threshold(self) -> float:
        return float(self.engine.threshold)

    @property
    def margin(self) -> float:
        return float(self.engine.margin)

    @property
    def embedder_name(self) -> str:
        return str(self.engine.embedder.name)

    async def analyze(
        self,
        image: Image,
        *,
        quality: QualityConfig | None = None,
        embed: bool = True,
        track: tuple[float, float, float, float] | None = None,
        better_than: float | None = None,
    ) -> Analysis:
        from biblioedge.models.pipeline import analyze

        return await self.run(
            analyze,
            self.engine,
            image,
            quality=quality,
            embed=embed,
            track=track,
            better_than=better_than,
        )

    async def embed_largest(self, image: Image) -> tuple[Detection, F32]:
        return await self.run(self.engine.embed_largest, image)

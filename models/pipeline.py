"""One camera frame through the face engine, in one call: detect (around the face tracked in
the previous frame when there is one), pick the largest face, check its quality, embed it.

The gate, the self-checkout's camera and the desk all go through ``analyze``, wherever the
engine runs (a thread, or the worker process of ``models.worker``): one round trip per frame,
and quality computed from the landmarks the detector already found.

Tracking: a face seen a moment ago is looked for first in a crop around where it was (twice
its size), which costs a fraction of a whole-frame detection; only when it is not there is
the whole frame searched again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from biblioedge.models.detect import Detection
from biblioedge.models.errors import ImageError
from biblioedge.models.quality import QualityConfig, QualityReport, assess

F32 = npt.NDArray[np.float32]
Box = tuple[float, float, float, float]
MAX_PIXELS = 4096 * 4096
#: the crop around a tracked face: this many face sizes on each side
ROI_MARGIN = 0.6


@dataclass(frozen=True)
class Analysis:
    detection: Detection | None
    faces: int
    quality: QualityReport | None = None
    vector: F32 | None = field(default=None, repr=False)
    tracked: bool = False  # found in the crop around the previous face
    ms: dict[str, float] = field(default_factory=dict)  # the engine's own time per stage
    #: how good the face is to recognize (eye distance x sqrt(sharpness)); 0 without one
    goodness: float = 0.0


def goodness(report: QualityReport) -> float:
    m = report.metrics
    sharpness = max(float(m.get("sharpness", 0.0)), 0.0)
    return float(m.get("eye_distance_px", 0.0)) * float(np.sqrt(sharpness))


def check_frame(image: Any) -> npt.NDArray[np.uint8]:
    """A camera frame the engine can take: HxWx3 uint8. Anything else is refused with a
    reason, before it reaches native code."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"a frame must be an array, not {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"a frame must be HxWx3 uint8, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if h < 16 or w < 16 or h * w > MAX_PIXELS:
        raise ImageError(f"frame size {w}x{h} is out of range")
    return np.ascontiguousarray(image)


def roi_of(box: Box, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * ROI_MARGIN, (y2 - y1) * ROI_MARGIN
    h, w = shape[:2]
    return (
        max(0, int(x1 - mx)),
        max(0, int(y1 - my)),
        min(w, int(x2 + mx)),
        min(h, int(y2 + my)),
    )


def _shift(det: Detection, dx: int, dy: int) -> Detection:
    x1, y1, x2, y2 = det.box
    lms = det.landmarks + np.array([dx, dy], np.float32)
    return Detection((x1 + dx, y1 + dy, x2 + dx, y2 + dy), det.score, lms.astype(np.float32))


def detect(
    engine: Any, image: npt.NDArray[np.uint8], track: Box | None
) -> tuple[list[Detection], bool]:
    """Faces in ``image``; first around ``track`` (the face seen last) when given."""
    if track is not None:
        x1, y1, x2, y2 = roi_of(track, image.shape)
        if x2 - x1 >= 32 and y2 - y1 >= 32:
            found = engine.detect(np.ascontiguousarray(image[y1:y2, x1:x2]))
            if found:
                return [_shift(d, x1, y1) for d in found], True
    return list(engine.detect(image)), False


def analyze(
    engine: Any,
    image: Any,
    *,
    quality: QualityConfig | None = None,
    embed: bool = True,
    track: Box | None = None,
    better_than: float | None = None,
) -> Analysis:
    """The largest face of the frame, its quality and (when it passes and ``embed``) its
    template. ``engine`` is a :class:`models.engine.FaceEngine`. With ``better_than`` (the
    goodness of a frame of this face already embedded), it embeds only a clearly better one
    (15 % more): a face that did not match is not embedded again frame after frame."""
    frame = check_frame(image)
    t0 = time.perf_counter()
    dets, tracked = detect(engine, frame, track)
    t1 = time.perf_counter()
    ms = {"detect": round((t1 - t0) * 1000, 2)}
    if not dets:
        return Analysis(None, 0, ms=ms)
    det = max(dets, key=lambda d: d.area)
    report = assess(frame, det, quality)
    good = goodness(report)
    vector = None
    if embed and report.ok and (better_than is None or good > better_than * 1.15):
        vector = engine.embed_detections(frame, [det])[0]
        ms["embed"] = round((time.perf_counter() - t1) * 1000, 2)
    return Analysis(det, len(dets), report, vector, tracked, ms, good)


class FaceService(Protocol):
    """The face engine as the kiosk's flows call it: in a worker process
    (:class:`models.worker.FaceWorker`) or on a thread (:class:`models.engine.AsyncFaceEngine`)."""

    @property
    def available(self) -> bool: ...
    @property
    def dim(self) -> int: ...
    @property
    def threshold(self) -> float: ...
    @property
    def margin(self) -> float: ...
    @property
    def embedder_name(self) -> str: ...

    async def analyze(
        self,
        image: Any,
        *,
        quality: QualityConfig | None = None,
        embed: bool = True,
        track: Box | None = None,
        better_than: float | None = None,
    ) -> Analysis: ...
    async def embed_largest(self, image: Any) -> tuple[Detection, F32]: ...
    def close(self) -> None: ...

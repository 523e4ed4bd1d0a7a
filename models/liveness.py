"""Liveness (presentation-attack detection). NOT CERTIFIED: neither check here has been tested
against ISO/IEC 30107-3 attack sets. They raise the cost of the casual attack (a phone photo
held up to the gate); they do not stop a determined one. The gate's real second factor is the
library card.

- :class:`MotionLiveness`, the cheap default: a live face moves non-rigidly across a few
  frames (expression, 3-D head turn: the nose moves against the eyes); a flat photo moved in
  front of the camera keeps its landmarks related by one similarity transform. The residual
  of that fit, in inter-eye distances, is the evidence.
- :class:`OnnxLiveness`: a passive single-frame model (layout ``binary_live``: one NCHW input,
  output two logits or probabilities ordered [spoof, live]).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from biblioedge.models.align import similarity_transform
from biblioedge.models.detect import Detection
from biblioedge.models.errors import ModelLoadError
from biblioedge.models.image import Image
from biblioedge.models.manifest import Manifest
from biblioedge.models.onnx import RuntimeOptions, open_session


@dataclass(frozen=True)
class LivenessResult:
    live: bool | None  # None: not enough evidence yet
    score: float
    method: str


class Liveness(Protocol):
    def check(self, image: Image, det: Detection) -> LivenessResult: ...

    def reset(self) -> None: ...

    def decides_next(self) -> bool:
        """Whether the next check gives a verdict: the caller then asks for that frame's
        embedding in the same engine call as its landmarks, not in a second round trip."""
        ...


class MotionLiveness:
    def __init__(self, window: int = 6, min_residual: float = 0.015) -> None:
        self.window = window
        self.min_residual = min_residual
        self._history: deque[np.ndarray] = deque(maxlen=window)

    def reset(self) -> None:
        self._history.clear()

    def decides_next(self) -> bool:
        return len(self._history) >= self.window - 1

    def check(self, image: Image, det: Detection) -> LivenessResult:
        lm = det.landmarks.astype(np.float64)
        self._history.append(lm)
        if len(self._history) < self.window:
            return LivenessResult(None, 0.0, "motion")
        first = self._history[0]
        iod = float(np.linalg.norm(first[1] - first[0])) or 1.0
        worst = 0.0
        for later in list(self._history)[1:]:
            m = similarity_transform(first, later)
            mapped = first @ m[:, :2].T + m[:, 2]
            worst = max(worst, float(np.abs(mapped - later).max()) / iod)
        return LivenessResult(worst >= self.min_residual, round(worst, 4), "motion")


class OnnxLiveness:
    def __init__(self, path: Path, manifest: Manifest, options: RuntimeOptions | None = None):
        self.session = open_session(path, options)
        self.input_name = self.session.get_inputs()[0].name
        self.size = manifest.input_size
        self.threshold = manifest.threshold
        norm = manifest.normalization
        self.mean, self.std, self.rgb = norm.mean, norm.std, norm.rgb
        w, h = self.size
        out = self.session.run(None, {self.input_name: np.zeros((1, 3, h, w), np.float32)})[0]
        if out.reshape(-1).shape[0] != 2:
            raise ModelLoadError(f"{manifest.ref}: binary_live needs 2 outputs, got {out.shape}")

    def reset(self) -> None:
        pass

    def decides_next(self) -> bool:
        return True  # one frame is all it needs

    def check(self, image: Image, det: Detection) -> LivenessResult:
        x1, y1, x2, y2 = det.box
        cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 1.5
        h, w = image.shape[:2]
        a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        crop = image[b : min(h, int(b + side)), a : min(w, int(a + side))]
        if crop.size == 0:
            return LivenessResult(None, 0.0, "onnx")
        blob = cv2.dnn.blobFromImage(
            crop, 1 / self.std, self.size, (self.mean,) * 3, swapRB=self.rgb
        )
        out = self.session.run(None, {self.input_name: blob})[0].reshape(-1).astype(np.float64)
        if out.min() < 0 or out.sum() > 1.0001 or out.sum() < 0.9999:  # logits: softmax them
            e = np.exp(out - out.max())
            out = e / e.sum()
        live = float(out[1])
        return LivenessResult(live >= self.threshold, round(live, 4), "onnx")

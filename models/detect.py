"""Face detectors on onnxruntime: SCRFD (insightface) and YuNet (OpenCV Zoo).

Both return :class:`Detection` with the box in image pixels, a score and five landmarks
(left eye, right eye, nose, left and right mouth corner, as the viewer sees them).

SCRFD's published models (det_500m, det_2.5g, det_10g, with or without keypoints, 3 or 5
strides) differ only in how many outputs they have; the layout is: scores per stride, then
box distances per stride, then keypoint offsets per stride, each over a grid of anchor centres
(``num_anchors`` per cell), distances in units of the stride. Input: RGB, (x - 127.5) / 128,
letterboxed into the top-left corner of the input size.

YuNet (2023mar) outputs cls, obj, bbox and kps for strides 8, 16 and 32; score is
sqrt(clamp(cls) * clamp(obj)); box centre is (cell + offset) * stride, size exp(log-size) *
stride; landmarks are (cell + offset) * stride. Input: BGR, 0-255, padded to a multiple of 32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from biblioedge.models.errors import ModelLoadError
from biblioedge.models.image import Image
from biblioedge.models.manifest import Manifest
from biblioedge.models.onnx import RuntimeOptions, input_hw, open_session

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: F32 = field(repr=False)  # (5, 2)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def as_dict(self) -> dict[str, object]:
        return {
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 5),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


class Detector(Protocol):
    name: str

    def detect(self, image: Image) -> list[Detection]: ...


def nms(boxes: F32, scores: F32, iou: float, pixel: float = 1.0) -> list[int]:
    """Greedy non-maximum suppression; indices kept, best first. ``pixel`` is 1 for the
    inclusive-pixel areas insightface uses, 0 for OpenCV's continuous ones."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + pixel) * (y2 - y1 + pixel)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + pixel)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + pixel)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap <= iou]
    return keep


def _finish(
    boxes: F32, scores: F32, kps: F32, iou: float, max_faces: int, pixel: float = 1.0
) -> list[Detection]:
    if len(scores) == 0:
        return []
    keep = nms(boxes, scores, iou, pixel)[:max_faces]
    return [
        Detection(tuple(float(v) for v in boxes[i]), float(scores[i]), kps[i].astype(np.float32))  # type: ignore[arg-type]
        for i in keep
    ]


class _OnnxDetector:
    """What SCRFD and YuNet share: the session, the input size (fixed by the graph, else the
    manifest's) and the thresholds."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        options: RuntimeOptions | None,
        score_threshold: float | None,
        nms_threshold: float,
        max_faces: int,
    ) -> None:
        self.name = manifest.ref
        self.session = open_session(path, options)
        self.input_name = self.session.get_inputs()[0].name
        fixed_h, fixed_w = input_hw(self.session)
        w, h = manifest.input_size
        self.input_size = (fixed_w or w, fixed_h or h)
        self.score_threshold = manifest.threshold if score_threshold is None else score_threshold
        self.nms_threshold = nms_threshold
        self.max_faces = max_faces


class SCRFD(_OnnxDetector):
    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        *,
        options: RuntimeOptions | None = None,
        score_threshold: float | None = None,
        nms_threshold: float = 0.4,
        max_faces: int = 50,
    ) -> None:
        super().__init__(path, manifest, options, score_threshold, nms_threshold, max_faces)
        n_out = len(self.session.get_outputs())
        layouts = {6: (3, 2, False), 9: (3, 2, True), 10: (5, 1, False), 15: (5, 1, True)}
        if n_out not in layouts:
            raise ModelLoadError(f"{self.name}: SCRFD has 6, 9, 10 or 15 outputs, not {n_out}")
        fmc, self.num_anchors, self.has_kps = layouts[n_out]
        if not self.has_kps:
            raise ModelLoadError(f"{self.name}: this SCRFD has no keypoints; alignment needs them")
        self.strides = (8, 16, 32, 64, 128)[:fmc]
        norm = manifest.normalization
        self.mean, self.std, self.rgb = norm.mean, norm.std, norm.rgb
        self._centers: dict[tuple[int, int, int], F32] = {}
        self._check_outputs()

    def _check_outputs(self) -> None:
        """Run once on a blank frame: a model whose outputs do not fit the layout is refused."""
        w, h = self.input_size
        outs = self.session.run(None, {self.input_name: np.zeros((1, 3, h, w), np.float32)})
        fmc = len(self.strides)
        for i, stride in enumerate(self.strides):
            cells = (h // stride) * (w // stride) * self.num_anchors
            for part, width in ((0, 1), (1, 4), (2, 10)):
                arr = outs[i + part * fmc]
                got = arr.reshape(-1, arr.shape[-1]) if arr.ndim >= 2 else arr
                if got.shape != (cells, width):
                    raise ModelLoadError(
                        f"{self.name}: output {i + part * fmc} has shape {arr.shape}, "
                        f"layout scrfd needs ({cells}, {width}) at {w}x{h}"
                    )

    def _anchor_centers(self, h: int, w: int, stride: int) -> F32:
        key = (h, w, stride)
        if key not in self._centers:
            ys, xs = np.mgrid[:h, :w]
            centers = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
            if self.num_anchors > 1:
                centers = np.repeat(centers, self.num_anchors, axis=0)
            self._centers[key] = centers
        return self._centers[key]

    def detect(self, image: Image) -> list[Detection]:
        in_w, in_h = self.input_size
        ih, iw = image.shape[:2]
        # insightface rounds the same way: keeps its results and ours comparable to 1e-4
        if ih / iw > in_h / in_w:
            nh, nw = in_h, int(in_h / (ih / iw))
        else:
            nw, nh = in_w, int(in_w * (ih / iw))
        det_scale = nh / ih
        canvas = np.zeros((in_h, in_w, 3), np.uint8)
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh))
        blob = cv2.dnn.blobFromImage(
            canvas, 1.0 / self.std, (in_w, in_h), (self.mean,) * 3, swapRB=self.rgb
        )
        outs = self.session.run(None, {self.input_name: blob})
        fmc = len(self.strides)
        all_boxes, all_scores, all_kps = [], [], []
        for i, stride in enumerate(self.strides):
            scores = outs[i].reshape(-1)
            boxes = outs[i + fmc].reshape(-1, 4) * stride
            kps = outs[i + 2 * fmc].reshape(-1, 10) * stride
            centers = self._anchor_centers(in_h // stride, in_w // stride, stride)
            pos = np.where(scores >= self.score_threshold)[0]
            if pos.size == 0:
                continue
            c = centers[pos]
            b = boxes[pos]
            all_boxes.append(
                np.stack(
                    [c[:, 0] - b[:, 0], c[:, 1] - b[:, 1], c[:, 0] + b[:, 2], c[:, 1] + b[:, 3]],
                    axis=-1,
                )
            )
            k = kps[pos].reshape(-1, 5, 2) + c[:, None, :]
            all_kps.append(k)
            all_scores.append(scores[pos])
        if not all_scores:
            return []
        return _finish(
            (np.vstack(all_boxes) / det_scale).astype(np.float32),
            np.concatenate(all_scores).astype(np.float32),
            (np.vstack(all_kps) / det_scale).astype(np.float32),
            self.nms_threshold,
            self.max_faces,
            1.0,
        )


class YuNet(_OnnxDetector):
    STRIDES = (8, 16, 32)

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        *,
        options: RuntimeOptions | None = None,
        score_threshold: float | None = None,
        nms_threshold: float = 0.3,
        max_faces: int = 50,
    ) -> None:
        super().__init__(path, manifest, options, score_threshold, nms_threshold, max_faces)
        if self.input_size[0] % 32 or self.input_size[1] % 32:
            raise ModelLoadError(f"{self.name}: YuNet input sides must be multiples of 32")
        names = [o.name for o in self.session.get_outputs()]
        wanted = [f"{p}_{s}" for p in ("cls", "obj", "bbox", "kps") for s in self.STRIDES]
        if len(names) != 12:
            raise ModelLoadError(f"{self.name}: YuNet has 12 outputs, not {len(names)}")
        # name order when the export kept the names, positional order otherwise
        self.order = (
            [names.index(n) for n in wanted] if set(wanted) <= set(names) else list(range(12))
        )
        self.rgb = manifest.normalization.rgb
        self._check_outputs()

    def _check_outputs(self) -> None:
        w, h = self.input_size
        outs = self.session.run(None, {self.input_name: np.zeros((1, 3, h, w), np.float32)})
        for j, stride in enumerate(self.STRIDES):
            cells = (h // stride) * (w // stride)
            for part, width in enumerate((1, 1, 4, 10)):
                arr = outs[self.order[part * 3 + j]]
                if arr.reshape(-1, arr.shape[-1]).shape != (cells, width):
                    raise ModelLoadError(
                        f"{self.name}: output {part * 3 + j} has shape {arr.shape}, "
                        f"layout yunet needs ({cells}, {width}) at {w}x{h}"
                    )

    def detect(self, image: Image) -> list[Detection]:
        in_w, in_h = self.input_size
        ih, iw = image.shape[:2]
        scale = min(in_w / iw, in_h / ih)
        nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
        canvas = np.zeros((in_h, in_w, 3), np.uint8)
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh))
        blob = cv2.dnn.blobFromImage(canvas, 1.0, (in_w, in_h), (0, 0, 0), swapRB=self.rgb)
        outs = self.session.run(None, {self.input_name: blob})
        boxes_l, scores_l, kps_l = [], [], []
        for j, stride in enumerate(self.STRIDES):
            cols = in_w // stride
            cls = np.clip(outs[self.order[j]].reshape(-1), 0, 1)
            obj = np.clip(outs[self.order[3 + j]].reshape(-1), 0, 1)
            score = np.sqrt(cls * obj)
            pos = np.where(score >= self.score_threshold)[0]
            if pos.size == 0:
                continue
            bbox = outs[self.order[6 + j]].reshape(-1, 4)[pos]
            kps = outs[self.order[9 + j]].reshape(-1, 5, 2)[pos]
            cell = np.stack([pos % cols, pos // cols], axis=-1).astype(np.float32)
            centre = (cell + bbox[:, :2]) * stride
            size = np.exp(bbox[:, 2:4]) * stride
            boxes_l.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            kps_l.append((kps + cell[:, None, :]) * stride)
            scores_l.append(score[pos])
        if not scores_l:
            return []
        return _finish(
            (np.vstack(boxes_l) / scale).astype(np.float32),
            np.concatenate(scores_l).astype(np.float32),
            (np.vstack(kps_l) / scale).astype(np.float32),
            self.nms_threshold,
            self.max_faces,
            0.0,
        )

"""Quality gates before recognition: size, sharpness, pose and light, each with a reason the
kiosk can show ("move closer", "too dark") instead of a silent failure to recognize.

Pose comes from the five landmarks alone: roll is the angle of the eye line; yaw is how far
the nose sits off the eyes' midpoint, in inter-eye distances; pitch is where the nose sits
between the eye line and the mouth line (about 0.45 of the way looking straight ahead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from biblioedge.models.detect import Detection
from biblioedge.models.image import Image


@dataclass(frozen=True)
class QualityConfig:
    min_eye_distance_px: float = 36.0
    min_sharpness: float = 40.0  # variance of the Laplacian on a 112-px face
    max_roll_deg: float = 25.0
    max_yaw: float = 0.35
    pitch_range: tuple[float, float] = (0.2, 0.75)
    brightness_range: tuple[float, float] = (50.0, 215.0)


@dataclass(frozen=True)
class QualityReport:
    reasons: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.reasons


def assess(image: Image, det: Detection, cfg: QualityConfig | None = None) -> QualityReport:
    cfg = cfg or QualityConfig()
    lm = det.landmarks.astype(np.float64)
    left_eye, right_eye, nose, mouth_l, mouth_r = lm
    eye_vec = right_eye - left_eye
    iod = float(np.linalg.norm(eye_vec))
    reasons: list[str] = []
    metrics: dict[str, float] = {"eye_distance_px": round(iod, 1)}
    if iod < cfg.min_eye_distance_px:
        reasons.append("too_small")
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    eye_mid = (left_eye + right_eye) / 2
    mouth_mid = (mouth_l + mouth_r) / 2
    axis = mouth_mid - eye_mid
    # rotate into the face's frame so roll does not read as yaw
    c, s = math.cos(-math.radians(roll)), math.sin(-math.radians(roll))
    rel = nose - eye_mid
    nx, ny = c * rel[0] - s * rel[1], s * rel[0] + c * rel[1]
    yaw = nx / max(iod, 1e-6)
    depth = float(np.linalg.norm(axis))
    pitch = ny / max(depth, 1e-6)
    metrics.update(roll_deg=round(roll, 1), yaw=round(yaw, 3), pitch=round(pitch, 3))
    if (
        abs(roll) > cfg.max_roll_deg
        or abs(yaw) > cfg.max_yaw
        or not (cfg.pitch_range[0] <= pitch <= cfg.pitch_range[1])
    ):
        reasons.append("pose")
    x1, y1, x2, y2 = (int(round(v)) for v in det.box)
    h, w = image.shape[:2]
    bw, bh = max(x2 - x1, 1), max(y2 - y1, 1)
    cut = max(-x1, x2 - w, 0) / bw + max(-y1, y2 - h, 0) / bh
    if cut > 0.15 or (lm < -2).any() or (lm[:, 0] > w + 2).any() or (lm[:, 1] > h + 2).any():
        reasons.append("out_of_frame")  # part of the face is beyond the frame's edge
    crop = image[max(0, y1) : min(h, y2), max(0, x1) : min(w, x2)]
    if crop.size == 0:
        return QualityReport((*reasons, "out_of_frame"), metrics)
    gray = cv2.cvtColor(cv2.resize(crop, (112, 112)), cv2.COLOR_BGR2GRAY)
    sharp = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    bright = float(gray.mean())
    metrics.update(sharpness=round(sharp, 1), brightness=round(bright, 1))
    if sharp < cfg.min_sharpness:
        reasons.append("blurry")
    if bright < cfg.brightness_range[0]:
        reasons.append("too_dark")
    elif bright > cfg.brightness_range[1]:
        reasons.append("too_bright")
    return QualityReport(tuple(reasons), metrics)

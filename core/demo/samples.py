"""Real faces that ship inside installed packages, for the demo and the benchmarks.

Nothing is downloaded: insightface's wheel carries ``t1.jpg`` (six people) and a Tom Hanks
crop; scikit-image carries the astronaut. :func:`scene_frame` puts one person into a 1280x720
camera scene with the augmentations a real gate sees.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from biblioedge.models.engine import FaceEngine


def people_in_samples() -> list[tuple[str, Any, Any]]:
    """(name, image, detection) of every distinct person in the packaged images."""
    sources: list[tuple[str, Any]] = []
    spec = importlib.util.find_spec("insightface")
    if spec and spec.submodule_search_locations:
        images = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
        t1 = cv2.imread(str(images / "t1.jpg"))
        tom = cv2.imread(str(images / "Tom_Hanks_54745.png"))
        if t1 is not None:
            sources.append(("t1", t1))
        if tom is not None:
            sources.append(("tom", cv2.resize(tom, (336, 336), interpolation=cv2.INTER_CUBIC)))
    try:
        from skimage import data

        skdata: Any = data
        sources.append(("astronaut", cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)))
    except ImportError:
        pass
    engine = FaceEngine()
    people = []
    for name, image in sources:
        dets = sorted(engine.detect(image), key=lambda d: d.box[0])
        for i, det in enumerate(dets):
            people.append((f"{name}-{i}" if len(dets) > 1 else name, image, det))
    return people


def portrait(image: Any, box: tuple[float, float, float, float], face_px: float) -> Any:
    """The person's head and shoulders, scaled so the face is ``face_px`` wide."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    pad = cv2.copyMakeBorder(image, 400, 400, 400, 400, cv2.BORDER_REFLECT)
    cx, cy = (x1 + x2) / 2 + 400, (y1 + y2) / 2 + 400
    crop = pad[int(cy - 1.4 * h) : int(cy + 1.6 * h), int(cx - 1.5 * w) : int(cx + 1.5 * w)]
    scale = face_px / w
    return cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)


def scene_frame(portrait: Any, rng: Any) -> Any:
    """One camera frame: the portrait on a 1280x720 scene, augmented."""
    p = portrait
    s = rng.uniform(0.8, 1.2)
    p = cv2.resize(p, None, fx=s * rng.uniform(0.85, 1.0), fy=s)  # scale, yaw-like squeeze
    h, w = p.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-10, 10), 1.0)
    p = cv2.warpAffine(p, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.25:  # a scarf over the lower face
        p = p.copy()
        y0 = int(h * 0.62)
        p[y0 : int(h * 0.75), int(w * 0.3) : int(w * 0.7)] = rng.integers(20, 90)
    scene = np.full((720, 1280, 3), int(rng.integers(60, 200)), np.uint8)
    h, w = min(h, 720), min(w, 1280)
    y, x = (720 - h) // 2, int(rng.integers(0, 1280 - w + 1))
    scene[y : y + h, x : x + w] = p[:h, :w]
    out = scene.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    out += rng.normal(0, rng.uniform(0, 8), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def desk_person(index: int = 3, frames: int = 6, seed: int = 7) -> tuple[bytes, list[Any]]:
    """(chip photo JPEG of about 15 KB, live desk-camera frames) of one sample person: the
    chip holds an older, smaller, compressed portrait; the camera sees the person again."""
    people = people_in_samples()
    _, image, det = people[index % len(people)]
    chip = portrait(image, det.box, 150)
    quality = 90
    while True:
        ok, jpeg = cv2.imencode(".jpg", chip, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        if len(jpeg) <= 16_000 or quality <= 40:
            break
        quality -= 10
    rng = np.random.default_rng(seed)
    live = portrait(image, det.box, 190)
    return jpeg.tobytes(), [scene_frame(live, rng) for _ in range(frames)]

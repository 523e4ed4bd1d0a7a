"""Images in, one predictable format out: 8-bit, 3-channel BGR, of a bounded size.

Cameras, files and chip photos arrive as grayscale, 16-bit PNGs, RGBA screenshots or 40 MP
phone pictures; every such case is converted or refused here with a reason, so detectors and
embedders only ever see what they were written for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from biblioedge.models.errors import ImageError

Image = npt.NDArray[np.uint8]

#: Refuse anything larger: a frame this big is not a face photo, and decoding it costs memory.
MAX_PIXELS = 50_000_000
#: Longest side kept for processing; larger images are downscaled (faces stay far above the
#: detectors' minimum size, time and memory stay bounded).
MAX_SIDE = 1920


def to_bgr8(array: npt.NDArray[Any]) -> Image:
    """Convert any 2-D/3-D array cv2 could hand us to BGR uint8, or raise ImageError."""
    image: Any = array
    if not isinstance(image, np.ndarray) or image.size == 0:
        raise ImageError("empty image")
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 8:
        raise ImageError(f"not an image: shape {image.shape}")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f"image too large: {image.shape[1]}x{image.shape[0]} pixels")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        peak = float(np.nanmax(image)) if image.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        image = np.clip(np.nan_to_num(image) * scale, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] != 3:
        raise ImageError(f"unsupported channel count {image.shape[2]}")
    side = max(image.shape[:2])
    if side > MAX_SIDE:
        f = MAX_SIDE / side
        image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    out: Image = np.ascontiguousarray(image)
    return out


def decode_image(data: bytes) -> Image:
    if not data:
        raise ImageError("empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError("not a decodable image (JPEG, PNG, BMP, WebP, TIFF, JPEG 2000)")
    return to_bgr8(image)


def read_image(path: Path) -> Image:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc}") from exc
    return decode_image(data)

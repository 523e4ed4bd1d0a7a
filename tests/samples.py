"""Face images shipped inside installed packages (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np


def insightface_images() -> Path:
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.submodule_search_locations, "insightface (test extra) missing"
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "images"


def sample_image(name: str) -> np.ndarray:
    image = cv2.imread(str(insightface_images() / name))
    assert image is not None, name
    return image


def astronaut() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)

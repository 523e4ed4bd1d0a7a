"""Is anyone in front of the camera? A check cheap enough to run on every frame, so that the
face detector and the code reader run only when something moves.

The frame is sampled every ``step`` pixels (80 × 45 points of a 1280 × 720 frame, averaged
over the colours) and compared with a background that follows the scene slowly (light
through a window, the camera's exposure). A point counts as changed when it differs by more
than ``level`` grey levels; the scene moved when more than ``share`` of the points changed.
Sensor noise of a few levels changes almost no point at that level; a person stepping up
changes hundreds. A person who stands still fades into the background in a second or two:
the gate stays awake meanwhile for as long as it tracks a face.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Presence:
    def __init__(
        self, step: int = 16, level: float = 20.0, share: float = 0.005, follow: float = 0.05
    ) -> None:
        self.step = step
        self.level = level
        self.share = share
        self.follow = follow
        self.background: np.ndarray[Any, np.dtype[np.float32]] | None = None

    def moved(self, image: np.ndarray[Any, Any]) -> bool:
        """Whether this frame differs from the scene as it has been (the first one does)."""
        small = image[:: self.step, :: self.step]
        grey = small.mean(axis=2, dtype=np.float32) if small.ndim == 3 else small.astype(np.float32)
        if self.background is None or self.background.shape != grey.shape:
            self.background = grey
            return True
        changed = float(np.count_nonzero(np.abs(grey - self.background) > self.level))
        self.background += self.follow * (grey - self.background)
        return changed >= self.share * grey.size

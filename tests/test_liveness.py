import numpy as np

from biblioedge.models.detect import Detection
from biblioedge.models.liveness import MotionLiveness

BASE = np.array([[100, 100], [140, 100], [120, 125], [105, 150], [135, 150]], np.float32)


def det(lm: np.ndarray) -> Detection:
    return Detection((80.0, 70.0, 160.0, 170.0), 0.99, lm.astype(np.float32))


def test_photo_moved_rigidly_is_not_live_and_a_turning_head_is() -> None:
    frame = np.zeros((240, 320, 3), np.uint8)
    photo = MotionLiveness(window=5)
    results = []
    for i in range(5):  # the whole photo slides, scales and tilts
        a = np.radians(2 * i)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * (1 + 0.03 * i)
        results.append(photo.check(frame, det(BASE @ rot.T + [3 * i, 2 * i])))
    assert results[0].live is None and results[-1].live is False
    live = MotionLiveness(window=5)
    for i in range(5):  # the nose moves against the eyes: a head turning in depth
        lm = BASE.copy()
        lm[2, 0] += 1.5 * i
        last = live.check(frame, det(lm))
    assert last.live is True and last.score > 0.015
    live.reset()
    assert live.check(frame, det(BASE)).live is None

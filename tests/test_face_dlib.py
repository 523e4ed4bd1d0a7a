"""Real accuracy with real weights: the dlib backend on face images shipped in packages."""

import cv2
import numpy as np
import pytest
from samples import astronaut, sample_image

from biblioedge.models.detect import Detection
from biblioedge.models.dlib_backend import DLIB_THRESHOLD, DlibBackend
from biblioedge.models.engine import FaceEngine, NoFace
from biblioedge.models.quality import assess


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()  # no store: the dlib default


def test_default_engine_is_dlib(engine: FaceEngine) -> None:
    assert isinstance(engine.detector, DlibBackend) and engine.dim == 128
    assert engine.threshold == DLIB_THRESHOLD


def test_all_six_faces_in_t1_are_found(engine: FaceEngine) -> None:
    image = sample_image("t1.jpg")
    dets = engine.detect(image)
    assert len(dets) == 6
    for det in dets:
        left_eye, right_eye, nose = det.landmarks[:3]
        x1, y1, x2, y2 = det.box
        assert x1 - 5 <= nose[0] <= x2 + 5 and y1 - 5 <= nose[1] <= y2 + 5
        assert left_eye[0] < nose[0] < right_eye[0]  # viewer's left eye is left in the image


def augment(image: np.ndarray, kind: str) -> np.ndarray:
    h, w = image.shape[:2]
    if kind == "flip":
        return cv2.flip(image, 1)
    if kind == "rotate":
        return cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0), (w, h))
    if kind == "brighter":
        return cv2.convertScaleAbs(image, alpha=1.1, beta=45)
    if kind == "darker":
        return cv2.convertScaleAbs(image, alpha=0.7, beta=-10)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["flip", "rotate", "brighter", "darker"])
def test_same_face_under_changes_is_a_match(engine: FaceEngine, kind: str) -> None:
    _, ref = engine.embed_largest(astronaut())
    _, probe = engine.embed_largest(augment(astronaut(), kind))
    result = engine.compare(ref, probe)
    assert result.match, result


def test_different_people_do_not_match(engine: FaceEngine) -> None:
    image = sample_image("t1.jpg")
    dets = engine.detect(image)
    vecs = engine.embed_detections(image, dets)
    _, astro = engine.embed_largest(astronaut())
    _, tom = engine.embed_largest(sample_image("Tom_Hanks_54745.png"))
    others = np.vstack([vecs, astro, tom])
    scores = others @ others.T
    off_diagonal = scores[~np.eye(len(others), dtype=bool)]
    assert off_diagonal.max() < engine.threshold


def test_no_face_is_a_clear_error(engine: FaceEngine) -> None:
    with pytest.raises(NoFace):
        engine.embed_largest(np.full((480, 640, 3), 90, np.uint8))


def test_quality_passes_a_good_face_and_names_what_is_wrong(engine: FaceEngine) -> None:
    image = astronaut()
    det = max(engine.detect(image), key=lambda d: d.area)
    assert assess(image, det).ok, assess(image, det)
    dark = cv2.convertScaleAbs(image, alpha=0.15, beta=0)
    assert "too_dark" in assess(dark, det).reasons
    blurred = cv2.GaussianBlur(image, (0, 0), 6)
    assert "blurry" in assess(blurred, det).reasons
    small = cv2.resize(image, None, fx=0.25, fy=0.25)
    small_det = Detection(tuple(v / 4 for v in det.box), det.score, det.landmarks / 4)  # type: ignore[arg-type]
    assert "too_small" in assess(small, small_det).reasons
    # a head turned far to the side: the nose sits out by the eye
    turned = det.landmarks.copy()
    turned[2, 0] = turned[1, 0]
    assert "pose" in assess(image, Detection(det.box, det.score, turned)).reasons

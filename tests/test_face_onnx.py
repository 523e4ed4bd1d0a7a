"""ONNX detectors and embedders on graphs with the real signatures, checked against the
reference implementations (insightface for SCRFD/ArcFace, OpenCV for YuNet/SFace)."""

from pathlib import Path

import cv2
import numpy as np
import onnx_graphs as g
import pytest
from samples import sample_image

from biblioedge.models.align import ARCFACE_TEMPLATE, norm_crop, similarity_transform
from biblioedge.models.detect import SCRFD, YuNet
from biblioedge.models.embed import OnnxEmbedder
from biblioedge.models.errors import ModelLoadError
from biblioedge.models.manifest import Manifest

ARC_NORM = {"mean": 127.5, "std": 127.5, "rgb": True}


def scrfd_manifest(path: Path, size: int = 320) -> Manifest:
    return Manifest.model_validate(
        g.manifest_for(
            path,
            name="scrfd-test",
            task="detect",
            layout="scrfd",
            input_size=(size, size),
            normalization={"mean": 127.5, "std": 128.0, "rgb": True},
            threshold=0.5,
        )
    )


def yunet_manifest(path: Path, size: int = 320) -> Manifest:
    return Manifest.model_validate(
        g.manifest_for(
            path,
            name="yunet-test",
            task="detect",
            layout="yunet",
            input_size=(size, size),
            normalization={"mean": 0.0, "std": 1.0, "rgb": False},
            threshold=0.6,
        )
    )


def embed_manifest(path: Path, layout: str, dim: int) -> Manifest:
    norm = ARC_NORM if layout == "arcface" else {"mean": 0.0, "std": 1.0, "rgb": True}
    return Manifest.model_validate(
        g.manifest_for(
            path,
            name=f"{layout}-test",
            task="embed",
            layout=layout,
            input_size=(112, 112),
            normalization=norm,
            embedding_size=dim,
            threshold=0.3,
        )
    )


@pytest.mark.parametrize("batch_dim", [True, False])
def test_scrfd_matches_insightface(tmp_path: Path, batch_dim: bool) -> None:
    from insightface.model_zoo.scrfd import SCRFD as Reference

    path = g.scrfd(tmp_path / "scrfd.onnx", size=320, batch_dim=batch_dim)
    ours = SCRFD(path, scrfd_manifest(path), max_faces=100_000).detect(sample_image("t1.jpg"))
    ref = Reference(model_file=str(path))
    ref.prepare(-1, input_size=(320, 320), det_thresh=0.5, nms_thresh=0.4)
    det, kps = ref.detect(sample_image("t1.jpg"), input_size=(320, 320))
    assert len(ours) == len(det) > 10
    got = np.array([[*d.box, d.score] for d in ours])
    np.testing.assert_allclose(got, det, atol=1e-4)
    np.testing.assert_allclose(np.stack([d.landmarks for d in ours]), kps, atol=1e-4)


def test_yunet_matches_opencv_face_detector_yn(tmp_path: Path) -> None:
    path = g.yunet(tmp_path / "yunet.onnx", size=320)
    image = cv2.resize(sample_image("t1.jpg"), (320, 320))  # OpenCV's detector does not letterbox
    # NMS off on both sides: OpenCV runs its NMS on integer rectangles, a convention we do
    # not copy; what must agree is the decoding of every candidate.
    ours = YuNet(path, yunet_manifest(path), nms_threshold=1.0, max_faces=5000).detect(image)
    ref = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.6, 1.0, 5000)
    _, faces = ref.detect(image)
    assert faces is not None and len(ours) == len(faces) > 3
    mine = sorted((d.score, d.box[0], d.box[1], *d.landmarks.ravel()) for d in ours)
    theirs = sorted((f[14], f[0], f[1], *f[4:14]) for f in faces)
    np.testing.assert_allclose(np.array(mine), np.array(theirs), rtol=1e-4, atol=1e-3)


def test_alignment_matches_insightface_norm_crop() -> None:
    from insightface.utils import face_align

    image = sample_image("t1.jpg")
    lms = np.array([[400.3, 200.1], [440.7, 198.2], [421.9, 225.0], [405.2, 250.3], [437.8, 249.6]])
    ref = face_align.estimate_norm(lms.astype(np.float32))
    np.testing.assert_allclose(similarity_transform(lms, ARCFACE_TEMPLATE), ref, atol=1e-4)
    crop = norm_crop(image, lms)
    assert crop.shape == (112, 112, 3)
    assert (
        np.abs(
            crop.astype(int) - face_align.norm_crop(image, lms.astype(np.float32)).astype(int)
        ).max()
        <= 1
    )


def test_arcface_matches_insightface_and_is_normalized(tmp_path: Path) -> None:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    path = g.embedder(tmp_path / "w600k.onnx", 512)
    emb = OnnxEmbedder(path, embed_manifest(path, "arcface", 512))
    crops = [
        cv2.resize(sample_image("t1.jpg")[100 + 40 * i : 300 + 40 * i, 300:500], (112, 112))
        for i in range(3)
    ]
    ours = emb.embed(crops)
    assert ours.shape == (3, 512) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    ref = ArcFaceONNX(model_file=str(path))
    theirs = ref.get_feat(crops)
    theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # one at a time gives the same as the batch
    np.testing.assert_allclose(emb.embed(crops[1:2])[0], ours[1], atol=1e-5)


def test_sface_matches_opencv_face_recognizer_sf(tmp_path: Path) -> None:
    path = g.embedder(tmp_path / "sface.onnx", 128, name="sface", dynamic_batch=False)
    emb = OnnxEmbedder(path, embed_manifest(path, "sface", 128))
    crop = cv2.resize(sample_image("t1.jpg")[100:300, 300:500], (112, 112))
    ours = emb.embed([crop])[0]
    ref = cv2.FaceRecognizerSF.create(str(path), "")
    theirs = ref.feature(crop).reshape(-1)
    np.testing.assert_allclose(ours, theirs / np.linalg.norm(theirs), atol=1e-4)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    from biblioedge.models.detect import nms

    boxes = np.array(
        [[0, 0, 100, 100], [5, 5, 105, 105], [200, 200, 260, 260], [0, 0, 100, 100]], np.float32
    )
    scores = np.array([0.8, 0.9, 0.7, 0.5], np.float32)
    assert nms(boxes, scores, 0.4) == [1, 2]
    assert nms(boxes, scores, 0.99) == [1, 0, 2]


def test_outputs_that_do_not_fit_the_manifest_are_refused(tmp_path: Path) -> None:
    path = g.embedder(tmp_path / "e.onnx", 512)
    with pytest.raises(ModelLoadError, match="embedding_size 128"):
        OnnxEmbedder(path, embed_manifest(path, "arcface", 128))
    no_kps = g.scrfd(tmp_path / "nokps.onnx", kps=False)
    with pytest.raises(ModelLoadError, match="no keypoints"):
        SCRFD(no_kps, scrfd_manifest(no_kps))
    det = g.scrfd(tmp_path / "s.onnx", size=320)
    with pytest.raises(ModelLoadError, match="embedder input"):
        OnnxEmbedder(det, embed_manifest(det, "arcface", 512))
    with pytest.raises(ModelLoadError, match="YuNet has 12 outputs"):
        YuNet(det, yunet_manifest(det))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not really a protobuf" * 50)
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        SCRFD(garbage, scrfd_manifest(garbage))

import json
from pathlib import Path

import numpy as np
import onnx_graphs as g
import pytest

from biblioedge.models.detect import SCRFD
from biblioedge.models.engine import FaceEngine, check_model
from biblioedge.models.errors import ImageError
from biblioedge.models.image import MAX_SIDE, decode_image, read_image, to_bgr8
from biblioedge.models.manifest import Manifest, ManifestError, load_manifest
from biblioedge.models.store import ModelStore, ModelStoreError


def arcface(tmp_path: Path, seed: int = 0, dim: int = 512, **over: object) -> tuple[Path, Manifest]:
    path = g.embedder(tmp_path / f"arc{seed}.onnx", dim, seed=seed)
    doc = g.manifest_for(
        path,
        name="w600k-test",
        task="embed",
        layout="arcface",
        input_size=(112, 112),
        normalization={"mean": 127.5, "std": 127.5, "rgb": True},
        embedding_size=dim,
        threshold=0.3,
    )
    doc["version"] = str(seed + 1)
    doc.update(over)
    return path, Manifest.model_validate(doc)


def test_add_list_verify_activate_rollback(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    p1, m1 = arcface(tmp_path, 0)
    p2, m2 = arcface(tmp_path, 1)
    ticks: list[int] = []
    store.add(p1, m1, progress=lambda done, total: ticks.append(done))
    store.add(p2, m2)
    assert ticks and ticks[-1] == p1.stat().st_size
    assert [s.manifest.ref for s in store.list()] == ["w600k-test@1", "w600k-test@2"]
    assert store.active("embed") is None
    store.activate("w600k-test@1", check=check_model)
    store.activate("w600k-test@2", check=check_model)
    assert store.active("embed") == m2
    assert store.verify() == {"w600k-test@1": "ok", "w600k-test@2": "ok"}
    engine = FaceEngine(store)
    assert engine.embedder.name == "w600k-test@2" and engine.threshold == 0.3
    assert store.rollback("embed") == "w600k-test@1"
    assert store.active("embed") == m1
    assert store.rollback("embed") is None and store.active("embed") is None  # back to dlib


def test_wrong_hash_corrupt_file_and_misfit_model_are_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    p1, m1 = arcface(tmp_path, 0)
    _, m_other = arcface(tmp_path, 5)
    with pytest.raises(ModelStoreError, match="is not the manifest's"):
        store.add(p1, m_other)
    store.add(p1, m1)
    store.activate(m1.ref, check=check_model)
    # a model whose outputs do not match its manifest cannot become active
    p3, m3 = arcface(tmp_path, 2, dim=256, embedding_size=512)
    store.add(p3, m3)
    with pytest.raises(ModelStoreError, match="refused.*embedding_size 512"):
        store.activate(m3.ref, check=check_model)
    assert store.active("embed") == m1
    # bit rot: the blob changes on disk; verify says so, activation and loading refuse it
    blob = store.blob(m1)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert "does not match manifest" in store.verify()[m1.ref]
    with pytest.raises(ModelStoreError, match="corrupt or replaced"):
        FaceEngine(store)
    with pytest.raises(ModelStoreError, match="no model"):
        store.activate("nothing@1")


def test_manifest_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ManifestError, match="version"):
        load_manifest(path)
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not JSON"):
        load_manifest(path)
    _, m = arcface(tmp_path, 0)
    bad = m.model_dump() | {"layout": "scrfd"}
    with pytest.raises(ValueError, match="detect layout"):
        Manifest.model_validate(bad)


def test_truncated_onnx_is_a_load_error(tmp_path: Path) -> None:
    from biblioedge.models.errors import ModelLoadError

    good = g.scrfd(tmp_path / "s.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    doc = g.manifest_for(
        cut, name="s", task="detect", layout="scrfd", input_size=(320, 320), threshold=0.5
    )
    with pytest.raises(ModelLoadError):
        SCRFD(cut, Manifest.model_validate(doc))


def test_images_are_normalized_or_refused(tmp_path: Path) -> None:
    gray = np.full((100, 120), 80, np.uint8)
    assert to_bgr8(gray).shape == (100, 120, 3)
    deep = np.full((100, 120, 3), 40000, np.uint16)
    assert to_bgr8(deep).max() == 40000 >> 8
    rgba = np.zeros((50, 60, 4), np.uint8)
    assert to_bgr8(rgba).shape == (50, 60, 3)
    huge = np.zeros((4000, 3000, 3), np.uint8)
    assert max(to_bgr8(huge).shape[:2]) == MAX_SIDE
    for bad, reason in [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((10000, 6000), np.uint8), "too large"),
        (np.zeros((20, 20, 3), np.int32), "pixel type"),
        (np.zeros((20, 20, 5), np.uint8), "channel"),
    ]:
        with pytest.raises(ImageError, match=reason):
            to_bgr8(bad)
    with pytest.raises(ImageError, match="not a decodable image"):
        decode_image(b"GIF89a but not really")
    with pytest.raises(ImageError, match="empty file"):
        decode_image(b"")
    with pytest.raises(ImageError, match="cannot read"):
        read_image(tmp_path / "missing.jpg")


def test_a_running_engine_keeps_serving_when_a_new_model_fails(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    p1, m1 = arcface(tmp_path, 0)
    store.add(p1, m1)
    store.activate(m1.ref, check=check_model)
    running = FaceEngine(store)
    crop = np.full((112, 112, 3), 100, np.uint8)
    before = running.embed_aligned([crop])
    blob = store.blob(m1)
    blob.chmod(0o644)
    blob.write_bytes(b"truncated")
    with pytest.raises(ModelStoreError):
        FaceEngine(store)  # the reload fails ...
    np.testing.assert_array_equal(running.embed_aligned([crop]), before)  # ... the old one serves

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from biblioedge.agent.gallery_store import GalleryStore, TemplateKeyError, load_or_create_key
from biblioedge.agent.store import Store
from biblioedge.models.gallery import Gallery


def test_templates_survive_restart_encrypted_and_bound_to_their_reader(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "template.key"
    key = load_or_create_key(key_path)
    assert key_path.stat().st_mode & 0o777 == 0o600 and load_or_create_key(key_path) == key
    store = Store(tmp_path / "agent.sqlite3")
    gs = GalleryStore(store, key)
    rng = np.random.default_rng(0)
    an, binh = (
        rng.standard_normal((2, 128)).astype(np.float32),
        rng.standard_normal((1, 128)).astype(np.float32),
    )
    gs.put("P1", an, "dlib-resnet@1")
    gs.put("P2", binh, "dlib-resnet@1")
    gs.put("P9", rng.standard_normal((1, 512)).astype(np.float32), "w600k@1")
    store.close()
    # nothing readable on disk: the raw float bytes of a template are not in the file
    raw = (tmp_path / "agent.sqlite3").read_bytes()
    assert an[0].tobytes()[:32] not in raw
    store = Store(tmp_path / "agent.sqlite3")
    gs = GalleryStore(store, key)
    ids, mat = gs.load("dlib-resnet@1", 128)
    assert ids == ["P1", "P1", "P2"]
    np.testing.assert_array_equal(mat[:2], an)
    g = Gallery(128)
    g.add_matrix(ids, mat)
    assert g.search(an[1])[0].patron_id == "P1"
    # erase on request: gone from the store
    assert gs.delete(["P1"]) == 2 and gs.load("dlib-resnet@1", 128)[0] == ["P2"]
    # a row moved to another reader, or the wrong key, does not open
    with sqlite3.connect(tmp_path / "agent.sqlite3") as conn:
        conn.execute("UPDATE gallery_templates SET patron_id = 'P3' WHERE patron_id = 'P2'")
    with pytest.raises(TemplateKeyError, match="tampered"):
        gs.load("dlib-resnet@1", 128)
    with pytest.raises(TemplateKeyError):
        GalleryStore(store, b"short")
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"x" * 7)
    with pytest.raises(TemplateKeyError, match="32 bytes"):
        load_or_create_key(bad)


def test_bulk_templates_load_back_exactly(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.sqlite3")
    gs = GalleryStore(store, load_or_create_key(tmp_path / "k"))
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((2000, 128)).astype(np.float32)
    for i in range(2000):
        gs.put(f"P{i:05d}", vecs[i : i + 1], "dlib-resnet@1")
    store.close()
    ids, mat = GalleryStore(
        Store(tmp_path / "agent.sqlite3"), load_or_create_key(tmp_path / "k")
    ).load("dlib-resnet@1", 128)
    assert ids == [f"P{i:05d}" for i in range(2000)]
    np.testing.assert_array_equal(mat, vecs)

import numpy as np
import pytest

from biblioedge.models.errors import GalleryError
from biblioedge.models.gallery import Gallery


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def noisy(rng: np.random.Generator, t: np.ndarray, cos: float) -> np.ndarray:
    n = rng.standard_normal(t.shape).astype(np.float32)
    n -= (n @ t) * t
    n /= np.linalg.norm(n)
    return (cos * t + np.sqrt(1 - cos**2) * n).astype(np.float32)


@pytest.mark.parametrize("fast_from", [10**9, 1])  # exact mode, fast mode
def test_identify_add_replace_remove(fast_from: int) -> None:
    rng = np.random.default_rng(1)
    g = Gallery(512, fast_from=fast_from)
    templates = unit(rng, 3000, 512)
    g.add_many((f"P{i:05d}", templates[i]) for i in range(3000))
    assert len(g) == 3000 and g.identities == 3000 and g.fast == (fast_from == 1)
    for i in rng.integers(0, 3000, 50):
        top = g.search(noisy(rng, templates[i], 0.55), k=3)
        assert top[0].patron_id == f"P{i:05d}" and top[0].score > 0.5 > top[1].score
    # replace moves the identity; the old template no longer matches
    new = unit(rng, 1, 512)[0]
    g.replace("P00007", new)
    assert g.search(noisy(rng, templates[7], 0.8))[0].patron_id != "P00007"
    assert g.search(noisy(rng, new, 0.8))[0].patron_id == "P00007"
    # remove: swap-removal keeps every other identity findable
    assert g.remove("P00000") == 1
    assert "P00000" not in g and len(g) == 2999
    for i in (1, 2999 - 1, 1500):
        assert g.search(templates[i])[0].patron_id == f"P{i:05d}"
    with pytest.raises(GalleryError):
        g.remove("P00000")
    with pytest.raises(GalleryError):
        g.templates("nobody")


def test_fast_mode_agrees_with_exact_search() -> None:
    rng = np.random.default_rng(2)
    g = Gallery(512, fast_from=1, rerank=100)
    templates = unit(rng, 20_000, 512)
    g.add_many((f"P{i}", templates[i]) for i in range(len(templates)))
    ids = rng.integers(0, len(templates), 300)
    probes = [
        noisy(rng, templates[i], c) for i, c in zip(ids, rng.uniform(0.5, 0.8, 300), strict=True)
    ]
    agree = sum(g.search(p, k=1)[0] == g.search(p, k=1, exact=True)[0] for p in probes)
    assert agree == 300
    fast = g.search(probes[0], k=1)[0]
    assert abs(fast.score - float(templates[ids[0]] @ probes[0])) < 1e-3  # fp16, re-ranked


def test_decision_needs_threshold_and_margin_over_second_identity() -> None:
    rng = np.random.default_rng(3)
    g = Gallery(128)
    a, b, c = unit(rng, 3, 128)
    g.add("an", a)
    g.add("an", noisy(rng, a, 0.95))  # two templates of one reader are not a rival
    g.add("binh", b)
    assert g.decide(a, threshold=0.9, margin=0.05).patron_id == "an"
    assert g.decide(c, 0.5, 0.05).reason == "below_threshold"
    twin = noisy(rng, a, 0.97)
    g.add("twin", twin)
    mid = (a + twin) / np.linalg.norm(a + twin)
    d = g.decide(mid, 0.5, 0.05)
    assert d.reason == "ambiguous" and not d.accepted and d.margin < 0.05
    assert Gallery(128).decide(a, 0.5, 0.05).reason == "empty_gallery"


@pytest.mark.parametrize(
    "bad", [np.zeros(128), np.full(128, np.nan), np.ones(64), np.ones((2, 3, 128))]
)
def test_bad_templates_are_refused_and_the_gallery_is_unchanged(bad: np.ndarray) -> None:
    g = Gallery(128)
    g.add("an", np.ones(128, np.float32))
    with pytest.raises(GalleryError):
        g.add("x", bad)
    with pytest.raises(GalleryError):
        g.replace("an", bad)
    assert len(g) == 1 and g.search(np.ones(128, np.float32))[0].patron_id == "an"

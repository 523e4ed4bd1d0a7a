"""Every text on every kiosk screen is readable: at least 24 sp, and at a contrast of 4.5:1
or more (WCAG 2, level AA) against what is really drawn around its letters, measured on the
PNGs of the product's own screenshot command (each state of the gate, desk, self-check and
exit gate, Vietnamese and English), with the library's name and a logo at the top."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from samples import insightface_images
from test_kiosk import screenshots

SCREENS = {"gate": "1024x600", "desk": "1280x800", "selfcheck": "1280x800", "exitgate": "1024x600"}


def luminance(rgb: np.ndarray) -> float:
    c = rgb.astype(float) / 255
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2])


def contrast(a: np.ndarray, b: np.ndarray) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def measured(img: np.ndarray, box: list[int], colour: list[int]) -> tuple[float, int]:
    """(contrast, glyph pixels) of one text: its letters are the pixels of its colour inside
    its box; the background is the commonest colour 2-3 pixels away from them."""
    x, y, w, h = box
    crop = img[max(0, y) : y + h, max(0, x) : x + w].astype(int)
    rgb = crop[:, :, ::-1]
    glyph = np.abs(rgb - np.array(colour)).sum(axis=2) < 60
    n = int(glyph.sum())
    if n == 0:
        return 0.0, 0
    near = cv2.dilate(glyph.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    ring = (cv2.dilate(glyph.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0) & ~near
    around = rgb[ring]
    if len(around) == 0:
        return 0.0, n
    colours, counts = np.unique(around, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    text = np.median(rgb[glyph], axis=0)
    return contrast(text, background), n


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    logo = tmp_path_factory.mktemp("logo") / "logo.png"
    img = np.full((96, 96, 3), 255, np.uint8)
    cv2.circle(img, (48, 48), 40, (40, 90, 160), -1)
    cv2.imwrite(str(logo), img)
    out = {}
    for screen, size in SCREENS.items():
        out[screen] = screenshots(
            screen,
            tmp_path_factory.mktemp(screen),
            size,
            "--library-name",
            "Thư viện tỉnh Tây Ninh",
            "--logo",
            str(logo),
        )
    return out


@pytest.mark.parametrize("screen", list(SCREENS))
def test_every_text_is_large_and_contrasted(shots: dict[str, Path], screen: str) -> None:
    folder = shots[screen]
    states = sorted(folder.glob("*.png"))
    assert len(states) >= 5
    bad = []
    checked = 0
    for png in states:
        img = cv2.imread(str(png))
        texts = json.loads(png.with_suffix(".texts.json").read_text(encoding="utf-8"))
        assert any(t["text"] == "Thư viện tỉnh Tây Ninh" for t in texts), png.name
        for t in texts:
            if t["sp"] < 24:
                bad.append(f"{png.stem}: {t['text'][:40]!r} at {t['sp']} sp")
            ratio, glyphs = measured(img, t["box"], t["colour"])
            checked += 1
            if glyphs < 10 or ratio < 4.5:
                bad.append(f"{png.stem}: {t['text'][:40]!r} {ratio:.2f}:1 ({glyphs} px)")
    assert checked > 5 * len(states) // 2
    assert not bad, "\n".join(bad)


def test_the_logo_is_shown(shots: dict[str, Path]) -> None:
    img = cv2.imread(str(shots["gate"] / "idle.png"))
    corner = img[0:45, 0:80].astype(int)  # the logo's blue disc, top left
    assert (np.abs(corner - np.array([40, 90, 160])).sum(axis=2) < 30).sum() > 200


def test_the_gate_preview_is_a_photo_not_text(shots: dict[str, Path]) -> None:
    """The contrast rule is for text; the camera image is checked to be there instead."""
    assert insightface_images().exists()
    img = cv2.imread(str(shots["gate"] / "idle.png"))
    assert img[120:380, 40:480].std() > 30

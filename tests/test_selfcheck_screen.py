"""The self-check screen, rendered off screen by the product's own screenshot command."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_kiosk import pixel, screenshots

from biblioedge.kiosk.i18n import keys, text


def test_every_selfcheck_message_problem_and_action_is_translated() -> None:
    from biblioedge.agent.selfcheck import flow as selfcheck
    from biblioedge.agent.selfcheck import station as selfcheck_station

    station = Path(selfcheck_station.__file__).read_text()
    flow = Path(selfcheck.__file__).read_text()
    shown = set(re.findall(r'"(selfcheck_[a-z_]+)"', station))
    refusals = {f"selfcheck_refused_{r}" for r in re.findall(r'Refused\("([a-z_]+)"', flow)}
    problems = {f"problem_{p}" for p in re.findall(r'problem="([a-z_]+)"', flow)}
    security = next(  # what a failed security write is called
        n
        for n in ast.walk(ast.parse(flow))
        if isinstance(n, ast.FunctionDef) and n.name == "_security"
    )
    problems |= {
        f"problem_{n.value.value}"
        for n in ast.walk(security)
        if isinstance(n, ast.Return) and isinstance(n.value, ast.Constant) and n.value.value
    }
    problems |= {"problem_" + r for r in ("offline_limit", "reader_blocked", "not_while_offline")}
    actions = {
        f"action_{a.split(':')[0]}"
        for node in ast.walk(ast.parse(station))
        if isinstance(node, ast.Dict)
        for v in node.values
        if isinstance(v, ast.Tuple)
        for a in (e.value for e in v.elts if isinstance(e, ast.Constant))
    }
    actions |= {"action_fee_yes", "action_return"}
    wanted = shown | refusals | problems | actions
    assert len(refusals) >= 5 and len(problems) >= 8 and "selfcheck_idle" in shown
    assert wanted <= keys(), wanted - keys()
    assert text("problem_fee_required", "vi", fee="5.000") == "Mượn mất phí 5.000 đ"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshots("selfcheck", tmp_path_factory.mktemp("selfcheck"), "1280x800")


def shot(shots: Path, name: str) -> np.ndarray:
    img = cv2.imread(str(shots / f"{name}.png"))
    assert img is not None and img.shape[:2] == (800, 1280)
    return img


@pytest.mark.parametrize(
    ("state", "tone"),
    [
        ("sc_idle", "normal"),
        ("sc_results", "normal"),
        ("sc_receipt", "done"),
        ("sc_returned", "done"),
        ("sc_refused", "alarm"),
        ("sc_out_of_service", "alarm"),
    ],
)
def test_each_state_has_its_colour(shots: Path, state: str, tone: str) -> None:
    from biblioedge.kiosk.selfcheck_screen import BACKGROUND

    expected = tuple(round(c * 255) for c in BACKGROUND[tone])
    got = pixel(shot(shots, state), 1270, 400)
    assert all(abs(a - b) <= 3 for a, b in zip(got, expected, strict=True)), (got, expected)


def rows_of(img: np.ndarray, colour: tuple[int, int, int]) -> int:
    """Item rows of one text colour in the list area (lines with such pixels, grouped)."""
    area = img[150:560, 30:900].astype(int)
    bgr = np.array(colour[::-1])
    hit = (np.abs(area - bgr).sum(axis=2) < 60).any(axis=1)
    return int(((hit[1:].astype(int) - hit[:-1].astype(int)) == 1).sum())


def test_loans_and_problems_are_listed_in_their_colours(shots: Path) -> None:
    from biblioedge.kiosk.selfcheck_screen import OK_COLOUR, PROBLEM_COLOUR

    ok = tuple(round(c * 255) for c in OK_COLOUR[:3])
    bad = tuple(round(c * 255) for c in PROBLEM_COLOUR[:3])
    results = shot(shots, "sc_results")
    assert rows_of(results, ok) == 2  # type: ignore[arg-type]
    assert rows_of(results, bad) == 3  # type: ignore[arg-type]
    offline = shot(shots, "sc_offline")
    assert rows_of(offline, ok) == 2 and rows_of(offline, bad) == 1  # type: ignore[arg-type]
    badge = offline[10:45, 800:1270].astype(int)  # the yellow offline badge, top right
    assert (np.abs(badge - np.array([77, 217, 255])).sum(axis=2) < 80).mean() > 0.01
    assert (np.abs(shot(shots, "sc_results")[10:45, 800:1270].astype(int) - badge).max()) > 60


def test_pin_pad_only_when_asked_and_qr_only_with_the_receipt(shots: Path) -> None:
    pin, idle = shot(shots, "sc_pin"), shot(shots, "sc_idle")
    keypad = (slice(250, 640), slice(66, 500))
    assert np.abs(pin[keypad].astype(int) - idle[keypad].astype(int)).max() > 60
    receipt = shot(shots, "sc_receipt")
    qr = receipt[260:520, 945:1205]
    assert (qr > 200).mean() > 0.3 and (qr < 50).mean() > 0.2  # black and white modules
    detector = cv2.QRCodeDetector()
    decoded, _, _ = detector.detectAndDecode(receipt[230:560, 900:1240])
    assert decoded.startswith("Thư viện tỉnh")
    assert (shot(shots, "sc_results")[260:520, 945:1205] > 200).mean() < 0.05


def test_english_on_a_tap(shots: Path) -> None:
    vi, en = shot(shots, "sc_results"), shot(shots, "sc_results_english")
    assert np.abs(vi[50:500, 30:900].astype(int) - en[50:500, 30:900].astype(int)).max() > 100

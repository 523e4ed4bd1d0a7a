"""Render the gate and desk screens in each of their states to PNG files, off screen.

Used by the screenshot tests and by anyone reviewing the UI without a kiosk at hand:
``biblioedge kiosk screenshot gate --out shots/`` (or ``desk``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from biblioedge.agent.desk import DeskView
from biblioedge.agent.gate import GateView

STATES: dict[str, tuple[GateView, bool]] = {
    "idle": (GateView("idle", "welcome_idle"), True),
    "granted": (GateView("granted", "welcome_name", name="Nguyễn Văn An"), True),
    "hint": (GateView("hint", "hint_too_small", face_box=(560.0, 260.0, 720.0, 440.0)), True),
    "denied": (GateView("denied", "scan_card"), True),
    "blocked": (GateView("denied", "denied_blocked"), True),
    "out_of_service": (GateView("out_of_service", "out_of_service"), True),
    "storage_full": (GateView("out_of_service", "out_of_service_storage"), True),
    "offline": (GateView("idle", "welcome_idle"), False),
}


_AN = {"name": "Nguyễn Thị Bình", "id": "001••••••345"}
_FULL = {**_AN, "date_of_birth": "15/03/1990", "gender": "Nữ"}
DESK_STATES: dict[str, tuple[DeskView, bool]] = {
    "desk_idle": (DeskView("idle", "desk_idle", pending_cards=0), True),
    "desk_storage_full": (DeskView("refused", "storage_full"), True),
    "desk_reading": (
        DeskView("reading", "reading_chip", person=_AN, progress=0.6, actions=("cancel",)),
        True,
    ),
    "desk_forgery": (
        DeskView("forgery", "forgery_suspected", person=_FULL, actions=("override", "cancel")),
        True,
    ),
    "desk_check_card": (
        DeskView(
            "check_card",
            "check_card",
            detail="check the card: the chip refused these keys (not retried)",
            person=_AN,
            actions=("retry", "cancel"),
        ),
        True,
    ),
    "desk_face_mismatch": (
        DeskView(
            "face_failed",
            "face_mismatch",
            person=_FULL,
            score=0.884,
            threshold=0.93,
            actions=("retry", "cancel"),
        ),
        True,
    ),
    "desk_consent": (
        DeskView(
            "consent",
            "consent_text",
            person=_FULL,
            score=0.981,
            threshold=0.93,
            actions=("consent_yes", "consent_no", "cancel"),
        ),
        True,
    ),
    "desk_pending": (
        DeskView("pending", "card_pending", person=_FULL, actions=("next",), pending_cards=2),
        False,
    ),
    "desk_issued": (
        DeskView(
            "issued", "card_issued", person=_FULL, patron_id="BE0000042", actions=("print", "next")
        ),
        True,
    ),
}


def render_desk(
    out: Path, size: tuple[int, int] = (1280, 800), frame: np.ndarray | None = None
) -> list[Path]:
    from biblioedge.kiosk.desk_screen import DeskScreen

    states = list(DESK_STATES.items())
    states.append(("desk_consent_english", DESK_STATES["desk_consent"]))
    return _render(out, size, frame, DeskScreen, states, "desk_consent_english")


def render_gate(
    out: Path, size: tuple[int, int] = (1024, 600), frame: np.ndarray | None = None
) -> list[Path]:
    from biblioedge.kiosk.gate_screen import GateScreen

    states = list(STATES.items()) + [
        ("english", (GateView("granted", "welcome_name", name="Nguyễn Văn An"), True))
    ]
    return _render(out, size, frame, GateScreen, states, "english")


def _render(
    out: Path,
    size: tuple[int, int],
    frame: np.ndarray | None,
    make: Any,
    states: list[tuple[str, tuple[Any, bool]]],
    english: str,
) -> list[Path]:
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from kivy.config import Config

    Config.set("graphics", "width", str(size[0]))
    Config.set("graphics", "height", str(size[1]))
    Config.set("graphics", "fullscreen", "0")
    from kivy.app import App
    from kivy.clock import Clock

    out.mkdir(parents=True, exist_ok=True)
    camera = frame if frame is not None else np.full((720, 1280, 3), 90, np.uint8)
    written: list[Path] = []

    class Shots(App):  # type: ignore[misc]
        def build(self) -> Any:
            self.screen = make()
            self.todo = list(states)
            Clock.schedule_once(self.next, 0.2)
            return self.screen

        def next(self, *_: object) -> None:
            if not self.todo:
                self.stop()
                return
            name, (view, online) = self.todo.pop(0)
            if name == english:
                self.screen.toggle_language()
            self.screen.show(view, camera, online=online)
            Clock.schedule_once(lambda *_: self.capture(name), 0.1)

        def capture(self, name: str) -> None:
            path = out / f"{name}.png"
            self.screen.export_to_png(str(path))
            written.append(path)
            Clock.schedule_once(self.next, 0)

    Shots().run()
    return written

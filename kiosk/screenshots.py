"""Render the gate screen in each of its states to PNG files, off screen.

Used by the screenshot tests and by anyone reviewing the UI without a kiosk at hand:
``biblioedge kiosk screenshot gate --out shots/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from biblioedge.agent.gate import GateView

STATES: dict[str, tuple[GateView, bool]] = {
    "idle": (GateView("idle", "welcome_idle"), True),
    "granted": (GateView("granted", "welcome_name", name="Nguyễn Văn An"), True),
    "hint": (GateView("hint", "hint_too_small", face_box=(560.0, 260.0, 720.0, 440.0)), True),
    "denied": (GateView("denied", "scan_card"), True),
    "blocked": (GateView("denied", "denied_blocked"), True),
    "out_of_service": (GateView("out_of_service", "out_of_service"), True),
    "offline": (GateView("idle", "welcome_idle"), False),
}


def render_gate(
    out: Path, size: tuple[int, int] = (1024, 600), frame: np.ndarray | None = None
) -> list[Path]:
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from kivy.config import Config

    Config.set("graphics", "width", str(size[0]))
    Config.set("graphics", "height", str(size[1]))
    Config.set("graphics", "fullscreen", "0")
    from kivy.app import App
    from kivy.clock import Clock

    from biblioedge.kiosk.gate_screen import GateScreen

    out.mkdir(parents=True, exist_ok=True)
    camera = frame if frame is not None else np.full((720, 1280, 3), 90, np.uint8)
    written: list[Path] = []

    class Shots(App):  # type: ignore[misc]
        def build(self) -> GateScreen:
            self.screen = GateScreen()
            self.todo = list(STATES.items()) + [
                ("english", (GateView("granted", "welcome_name", name="Nguyễn Văn An"), True))
            ]
            Clock.schedule_once(self.next, 0.2)
            return self.screen

        def next(self, *_: object) -> None:
            if not self.todo:
                self.stop()
                return
            name, (view, online) = self.todo.pop(0)
            if name == "english":
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

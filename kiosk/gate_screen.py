"""The gate screen (Kivy): camera preview with the face box, the greeting or the hint in big
type, an offline badge, and a language button. Vietnamese by default.

The screen only renders snapshots it is handed (``show(view, frame, online)``): it never
talks to drivers. Colours carry the decision for readers who do not read the text: green
welcome, amber hint, red refusal, grey out of service.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
os.environ.setdefault("KIVY_NO_FILELOG", "1")
if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")  # no screen: render off screen

import numpy as np
from kivy.graphics import Color, Rectangle
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.label import Label

from biblioedge.kiosk.i18n import Lang, subtitle, text
from biblioedge.kiosk.widgets import (
    DEFAULT_LIBRARY,
    MIN_SP,
    Badge,
    CameraPreview,
    flat_button,
    library_header,
)

COLOURS: dict[str, tuple[float, float, float]] = {
    "idle": (0.07, 0.18, 0.33),
    "granted": (0.04, 0.36, 0.18),
    "hint": (0.62, 0.42, 0.05),
    "denied": (0.62, 0.12, 0.12),
    "out_of_service": (0.30, 0.30, 0.30),
}


class GateScreen(FloatLayout):  # type: ignore[misc]  # kivy ships no types
    def __init__(
        self,
        lang: Lang = "vi",
        library_name: str = DEFAULT_LIBRARY,
        logo: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.lang: Lang = lang
        self.mode = "idle"
        self.message = "welcome_idle"
        self.name_text = ""
        self.online = True
        self._box: tuple[float, float, float, float] | None = None
        self._frame_size = (1280, 720)
        with self.canvas.before:
            self._bg_colour = Color(*COLOURS["idle"])
            self._bg = Rectangle(pos=self.pos, size=self.size)
        self.header = library_header(self, library_name, logo)
        self.preview = CameraPreview(size_hint=(0.46, 0.62), pos_hint={"x": 0.03, "y": 0.26})
        self.add_widget(self.preview)
        self.title = Label(
            font_size="40sp",
            bold=True,
            halign="center",
            valign="middle",
            size_hint=(0.46, 0.34),
            pos_hint={"x": 0.51, "y": 0.52},
        )
        self.sub = Label(
            font_size=f"{MIN_SP}sp",
            halign="center",
            valign="top",
            size_hint=(0.46, 0.2),
            pos_hint={"x": 0.51, "y": 0.3},
        )
        for label in (self.title, self.sub):
            label.bind(size=lambda w, s: setattr(w, "text_size", s))
            self.add_widget(label)
        self.badge = Badge(size_hint=(0.26, 0.08), pos_hint={"right": 0.99, "top": 0.99})
        self.add_widget(self.badge)
        self.lang_button = flat_button(
            font_size=f"{MIN_SP}sp", size_hint=(0.18, 0.1), pos_hint={"right": 0.98, "y": 0.03}
        )
        self.lang_button.bind(on_release=lambda *_: self.toggle_language())
        self.add_widget(self.lang_button)
        self.bind(pos=self._layout, size=self._layout)
        self._render()

    def _layout(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size

    def toggle_language(self) -> None:
        self.lang = "en" if self.lang == "vi" else "vi"
        self._render()

    def show(self, view: Any, frame: np.ndarray | None = None, online: bool = True) -> None:
        """Render a ``GateView`` snapshot; ``frame`` is the camera image (BGR)."""
        self.mode, self.message, self.name_text = view.mode, view.message, view.name
        self._box = view.face_box
        self.online = online
        if frame is not None:
            self.preview.set_frame(frame, self._box)
        self._render()

    def _render(self) -> None:
        self._bg_colour.rgb = COLOURS.get(self.mode, COLOURS["idle"])
        self.title.text = text(self.message, self.lang, name=self.name_text)
        self.sub.text = subtitle(self.message, self.lang)
        self.badge.text = "" if self.online else text("offline", self.lang)
        self.lang_button.text = text("language", self.lang)

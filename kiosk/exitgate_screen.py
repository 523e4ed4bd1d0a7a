"""The exit gate's screen (Kivy), for the reader at the door and the staff who come to help.

Red while the alarm is up: what happened in big type, then one line per item that left
without a loan — its title (from the library system when it answers, else from the tag) and
its number — so that staff can help without asking who the reader is. Blue at rest with the
day's passages; grey when the reader is out of service. An offline badge says when the
library system is away (the security values alone decide then). The screen renders
``ExitView`` snapshots and never touches the flow or the drivers. Vietnamese by default,
English on a tap.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
os.environ.setdefault("KIVY_NO_FILELOG", "1")
if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")

from kivy.graphics import Color, Rectangle
from kivy.uix.floatlayout import FloatLayout

from biblioedge.kiosk.i18n import Lang, subtitle, text
from biblioedge.kiosk.widgets import (
    DEFAULT_LIBRARY,
    MIN_SP,
    Badge,
    flat_button,
    library_header,
    text_label,
)

COLOURS: dict[str, tuple[float, float, float]] = {
    "starting": (0.07, 0.18, 0.33),
    "idle": (0.07, 0.18, 0.33),
    "alarm": (0.72, 0.08, 0.08),
    "out_of_service": (0.30, 0.30, 0.30),
}
MAX_ITEMS = 6


class ExitgateScreen(FloatLayout):  # type: ignore[misc]  # kivy ships no types
    def __init__(
        self,
        lang: Lang = "vi",
        library_name: str = DEFAULT_LIBRARY,
        logo: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.lang: Lang = lang
        self.view: Any = None
        self.online = True
        with self.canvas.before:
            self._bg_colour = Color(*COLOURS["idle"])
            self._bg = Rectangle(pos=self.pos, size=self.size)
        self.header = library_header(self, library_name, logo)
        self.title = text_label(self, "44sp", (0.94, 0.18), {"x": 0.03, "top": 0.91}, bold=True)
        self.sub = text_label(self, f"{MIN_SP}sp", (0.94, 0.12), {"x": 0.03, "top": 0.73})
        self.items = text_label(self, "26sp", (0.94, 0.4), {"x": 0.03, "top": 0.6}, valign="top")
        self.badge = Badge(size_hint=(0.5, 0.08), pos_hint={"x": 0.03, "y": 0.04})
        self.add_widget(self.badge)
        self.lang_button = flat_button(
            font_size=f"{MIN_SP}sp", size_hint=(0.18, 0.1), pos_hint={"right": 0.98, "y": 0.03}
        )
        self.lang_button.bind(on_release=lambda *_: self.toggle_language())
        self.add_widget(self.lang_button)
        self.bind(pos=self._layout, size=self._layout)

    def _layout(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size

    def toggle_language(self) -> None:
        self.lang = "en" if self.lang == "vi" else "vi"
        self._render()

    def show(self, view: Any, frame: Any = None, online: bool = True) -> None:
        """Render an ``ExitView`` snapshot (``frame``: unused, the exit has no camera)."""
        self.view, self.online = view, online
        self._render()

    def _render(self) -> None:
        view = self.view
        self.lang_button.text = text("language", self.lang)
        if view is None:
            return
        self._bg_colour.rgb = COLOURS.get(view.mode, COLOURS["idle"])
        self.title.text = text(view.message, self.lang)
        self.sub.text = subtitle(view.message, self.lang)
        lines = []
        for item in view.items[:MAX_ITEMS]:
            if item.title:
                lines.append(f"• {item.title} ({item.item_id})")
            else:
                lines.append(f"• {item.item_id}")
        if len(view.items) > MAX_ITEMS:
            lines.append(text("exit_more_items", self.lang, n=str(len(view.items) - MAX_ITEMS)))
        if view.mode != "alarm":
            lines = [
                text(
                    "exit_passages",
                    self.lang,
                    n_in=str(view.passages_in),
                    n_out=str(view.passages_out),
                )
            ]
        self.items.text = "\n".join(lines)
        badges = []
        if view.offline or not self.online:
            badges.append(text("offline", self.lang))
        if not view.counter_ok:
            badges.append(text("exit_counter_down", self.lang))
        self.badge.text = " · ".join(badges)

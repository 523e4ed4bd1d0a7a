"""The card desk screen (Kivy): what the librarian and the reader both look at.

Left, the desk camera with the reader's face; right, the step in big type, what it means, the
person read from the chip (ID number masked), the read progress or the face match score, and
at the bottom one large button per action the flow offers (at most three). The screen renders
``DeskView`` snapshots and reports button presses through ``on_action``; it never touches the
flow or the drivers. Vietnamese by default, English on a tap.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from kivy.uix.progressbar import ProgressBar

from biblioedge.kiosk.i18n import Lang, subtitle, text
from biblioedge.kiosk.widgets import (
    BACKGROUND,
    CameraPreview,
    StepScreen,
    action_button,
    bottom_bar,
)

TONE = {
    "forgery": "alarm",
    "check_card": "warning",
    "reader_problem": "warning",
    "face_failed": "warning",
    "confirm_identity": "warning",
    "refused": "alarm",
    "guardian_refused": "warning",
    "issued": "done",
    "pending": "warning",
}
DETAILED = ("check_card", "reader_problem", "refused", "not_cccd", "guardian_refused")
PRIMARY = {"consent_yes", "next", "retry", "confirm_identity", "override"}
PERSON_FIELDS = (
    ("name", "Họ tên", "Name"),
    ("id", "Số CCCD", "ID number"),
    ("date_of_birth", "Ngày sinh", "Born"),
    ("gender", "Giới tính", "Sex"),
    ("age", "Tuổi", "Age"),
    ("guardian", "Người giám hộ", "Guardian"),
)


class DeskScreen(StepScreen):
    def __init__(
        self, lang: Lang = "vi", on_action: Callable[[str], None] | None = None, **kw: Any
    ) -> None:
        super().__init__(lang, on_action, **kw)
        self.preview = CameraPreview(size_hint=(0.40, 0.56), pos_hint={"x": 0.02, "y": 0.3})
        self.add_widget(self.preview)
        self.title = self._label("34sp", (0.54, 0.16), {"x": 0.44, "y": 0.78}, bold=True)
        self.sub = self._label("19sp", (0.54, 0.2), {"x": 0.44, "y": 0.57}, valign="top")
        self.person = self._label("20sp", (0.54, 0.2), {"x": 0.44, "y": 0.36}, valign="top")
        self.detail = self._label("16sp", (0.54, 0.06), {"x": 0.44, "y": 0.3})
        self.progress = ProgressBar(
            max=1.0, size_hint=(0.38, 0.04), pos_hint={"x": 0.03, "y": 0.24}
        )
        self.add_widget(self.progress)
        self.badge = self._label("18sp", (0.3, 0.06), {"x": 0.02, "top": 0.99})
        self.badge.color = (1, 0.85, 0.3, 1)
        self.buttons, self.lang_button = bottom_bar(self, self.toggle_language)
        self.bind(pos=self._layout, size=self._layout)
        self._render()

    def show(self, view: Any, frame: Any = None, online: bool = True) -> None:
        """Render a ``DeskView``; ``frame`` is the desk camera image (BGR) or None."""
        self.view, self.online = view, online
        if frame is not None:
            self.preview.set_frame(frame, None)
        self._render()

    def _render(self) -> None:
        v = self.view
        step = v.step if v is not None else "idle"
        message = v.message if v is not None else "desk_idle"
        self._bg_colour.rgb = BACKGROUND[TONE.get(step, "normal")]
        patron = v.patron_id if v is not None else ""
        self.title.text = text(message, self.lang, patron=patron)
        self.sub.text = subtitle(message, self.lang)
        lines = []
        if v is not None:
            for key, vi, en in PERSON_FIELDS:
                if v.person.get(key):
                    lines.append(f"{vi if self.lang == 'vi' else en}: {v.person[key]}")
            if v.score is not None and v.threshold is not None:
                lines.append(
                    text("score", self.lang, score=f"{v.score:.3f}", threshold=f"{v.threshold:.2f}")
                )
        self.person.text = "\n".join(lines)
        self.detail.text = v.detail[:120] if v is not None and step in DETAILED else ""
        self.progress.opacity = 1 if v is not None and v.progress is not None else 0
        self.progress.value = v.progress if v is not None and v.progress is not None else 0
        badge = []
        if v is not None and v.pending_cards:
            badge.append(text("pending_cards", self.lang, n=str(v.pending_cards)))
        if not self.online:
            badge.append(text("offline", self.lang))
        self.badge.text = "  ·  ".join(badge)
        self.lang_button.text = text("language", self.lang)
        actions = v.actions if v is not None else ()
        if actions != self._shown:
            self._shown = actions
            self.buttons.clear_widgets()
            for action in actions:
                self.buttons.add_widget(
                    action_button(
                        text(f"action_{action}", self.lang),
                        action in PRIMARY,
                        partial(self._pressed, action),
                    )
                )

    def _pressed(self, action: str) -> None:
        if self.on_action is not None:
            self.on_action(action)

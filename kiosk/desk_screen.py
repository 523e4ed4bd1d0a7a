"""The card desk screen (Kivy): what the librarian and the reader both look at.

Left, the desk camera with the reader's face; right, the step in big type, what it means, the
person read from the chip (ID number masked), the read progress or the face match score, and
at the bottom one large button per action the flow offers (at most three). The screen renders
``DeskView`` snapshots and reports button presses through ``on_action``; it never touches the
flow or the drivers. Vietnamese by default, English on a tap.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

from kivy.uix.progressbar import ProgressBar

from biblioedge.kiosk.i18n import Lang, subtitle, text
from biblioedge.kiosk.widgets import (
    BACKGROUND,
    DEFAULT_LIBRARY,
    MIN_SP,
    Badge,
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
PRIMARY = {"next", "retry", "confirm_identity", "override", "confirm"}
#: answers to a free choice: the same colour and size, neither nudged (issue 26)
CHOICES = {"consent_yes", "consent_no"}
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
        self,
        lang: Lang = "vi",
        on_action: Callable[[str], None] | None = None,
        library_name: str = DEFAULT_LIBRARY,
        logo: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(lang, on_action, library_name, logo, **kw)
        self.preview = CameraPreview(size_hint=(0.40, 0.56), pos_hint={"x": 0.02, "y": 0.3})
        self.add_widget(self.preview)
        sp = f"{MIN_SP}sp"
        self.title = self._label("34sp", (0.54, 0.12), {"x": 0.44, "y": 0.8}, bold=True)
        self.sub = self._label(sp, (0.54, 0.3), {"x": 0.44, "y": 0.5}, valign="top")
        self.person = self._label(sp, (0.54, 0.19), {"x": 0.44, "y": 0.3}, valign="top")
        self.detail = self._label(sp, (0.54, 0.06), {"x": 0.44, "y": 0.23})
        self.progress = ProgressBar(
            max=1.0, size_hint=(0.38, 0.04), pos_hint={"x": 0.03, "y": 0.24}
        )
        self.add_widget(self.progress)
        self.badge = Badge(size_hint=(0.4, 0.06), pos_hint={"right": 0.98, "top": 0.99})
        self.add_widget(self.badge)
        self.buttons, self.lang_button = bottom_bar(self, self.toggle_language)
        self.bind(pos=self._layout, size=self._layout)
        self._render()

    def show(self, view: Any, frame: Any = None, online: bool = True) -> None:
        """Render a ``DeskView``; ``frame`` is the desk camera image (BGR) or None."""
        self.view, self.online = view, online
        if view is not None and view.step == "issued" and view.link:
            frame = phone_card_frame(view.link)  # her card's link, for her phone's camera
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
        if v is not None and step == "issued" and v.link:
            self.detail.text = text("phone_card", self.lang)
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
                        None if action in CHOICES else action in PRIMARY,
                        partial(self._pressed, action),
                    )
                )

    def _pressed(self, action: str) -> None:
        if self.on_action is not None:
            self.on_action(action)


@lru_cache(maxsize=2)
def phone_card_frame(link: str, size: int = 480) -> Any:
    """The phone-card link as a QR image (BGR, black on white) for the camera preview; made
    once per card, not per camera frame."""
    import numpy as np
    import segno

    matrix = np.array(segno.make(link, error="m").matrix, dtype=bool)
    matrix = np.pad(matrix, 4, constant_values=False)
    scale = max(1, size // matrix.shape[0])
    img = np.where(np.kron(matrix, np.ones((scale, scale), dtype=bool)), 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2)

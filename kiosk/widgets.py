"""Widgets the kiosk screens share: a wrapping text label, a big action button, the camera
preview, the library's name and logo, the offline badge, and the frame of the screens that
walk a reader through steps (desk, self-check).

Readable from a step away (issue 26): no text under 24 sp (``MIN_SP``), and every colour pair
here keeps a contrast of at least 4.5:1 (WCAG 2 AA), which tests/test_kiosk_contrast.py
measures on the screenshots of every state. Choices a reader makes freely (consent) get
buttons of equal weight: the same colour and size, neither nudged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from kivy.graphics import Color, Line, Rectangle
from kivy.graphics.texture import Texture
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.image import Image
from kivy.uix.label import Label

from biblioedge.kiosk.i18n import Lang

#: the smallest text on any kiosk screen
MIN_SP = 24
PRIMARY_COLOUR = (0.08, 0.45, 0.2, 1)  # white on it: 6.0:1
SECONDARY_COLOUR = (0.35, 0.35, 0.38, 1)  # white on it: 7.3:1
#: both answers to a free choice (consent): one colour, neither the "expected" one
CHOICE_COLOUR = (0.12, 0.32, 0.62, 1)  # white on it: 7.8:1
#: the offline badge: dark text on amber, visible on every background
BADGE_COLOUR = (0.98, 0.8, 0.25, 1)
BADGE_TEXT = (0.1, 0.1, 0.1, 1)
#: background of a step screen by the tone of its step (white text on each: ≥ 4.6:1)
BACKGROUND: dict[str, tuple[float, float, float]] = {
    "normal": (0.07, 0.18, 0.33),
    "warning": (0.62, 0.42, 0.05),
    "alarm": (0.62, 0.12, 0.12),
    "done": (0.04, 0.36, 0.18),
}
DEFAULT_LIBRARY = "Thư viện tỉnh"


def text_label(
    parent: Any, size: str, hint: tuple[float, float], pos: dict[str, float], **kw: Any
) -> Label:
    """A left-aligned label that wraps inside its box, added to ``parent``."""
    label = Label(
        font_size=size,
        halign="left",
        valign=kw.pop("valign", "middle"),
        size_hint=hint,
        pos_hint=pos,
        **kw,
    )
    label.bind(size=lambda w, s: setattr(w, "text_size", s))
    parent.add_widget(label)
    return label


def action_button(
    text: str,
    primary: bool | None,
    on_press: Callable[[], None],
    font_size: str = f"{MIN_SP}sp",
) -> Button:
    """One large, flat button: green for what the step expects, grey for the others, and
    ``primary=None`` for an answer to a free choice (all such answers look alike)."""
    button = Button(text=text, font_size=font_size, bold=True, halign="center", valign="middle")
    button.bind(size=lambda w, s: setattr(w, "text_size", (s[0] - 12, s[1])))
    button.background_normal = ""
    button.background_color = (
        CHOICE_COLOUR if primary is None else PRIMARY_COLOUR if primary else SECONDARY_COLOUR
    )
    with button.canvas.after:  # a light edge: a green button stays a button on a green screen
        Color(1, 1, 1, 0.85)
        edge = Line(rectangle=(0, 0, 0, 0), width=1.5)
    button.bind(
        pos=lambda b, _v: setattr(edge, "rectangle", (b.x + 1, b.y + 1, b.width - 2, b.height - 2)),
        size=lambda b, _v: setattr(
            edge, "rectangle", (b.x + 1, b.y + 1, b.width - 2, b.height - 2)
        ),
    )
    button.bind(on_release=lambda _b: on_press())
    return button


def flat_button(text: str = "", **kw: Any) -> Button:
    """A plain grey button (language, PIN keys): flat, so its contrast is what it says."""
    button = Button(text=text, bold=True, **kw)
    button.background_normal = ""
    button.background_color = SECONDARY_COLOUR
    return button


def bottom_bar(parent: Any, on_language: Callable[[], None]) -> tuple[BoxLayout, Button]:
    """The row of action buttons along the bottom and the language button beside it."""
    buttons = BoxLayout(spacing=16, size_hint=(0.74, 0.14), pos_hint={"x": 0.02, "y": 0.04})
    parent.add_widget(buttons)
    language = flat_button(
        font_size=f"{MIN_SP}sp", size_hint=(0.18, 0.1), pos_hint={"right": 0.98, "y": 0.06}
    )
    language.bind(on_release=lambda *_: on_language())
    parent.add_widget(language)
    return buttons, language


class Badge(Label):  # type: ignore[misc]  # kivy ships no types
    """A label on its own amber box (the offline badge): seen on any background, and empty
    (nothing drawn) when it has nothing to say. Its text is centred in the widget."""

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("font_size", f"{MIN_SP}sp")
        kw.setdefault("bold", True)
        super().__init__(color=BADGE_TEXT, halign="center", valign="middle", **kw)
        with self.canvas.before:
            self._colour = Color(*BADGE_COLOUR)
            self._box = Rectangle(pos=self.pos, size=(0, 0))
        self.bind(pos=self._draw, size=self._draw, texture_size=self._draw, text=self._draw)

    def _draw(self, *_: Any) -> None:
        if not self.text:
            self._box.size = (0, 0)
            return
        w = min(self.width, self.texture_size[0] + 28)
        h = min(self.height, self.texture_size[1] + 12)
        # the text is drawn centred in the widget (no text_size): so is its box
        self._box.pos = (self.center_x - w / 2, self.center_y - h / 2)
        self._box.size = (w, h)


def library_header(parent: Any, name: str, logo: str | None) -> Label:
    """The library's name (and logo, when configured and readable) at the top left."""
    row = BoxLayout(spacing=10, size_hint=(0.5, 0.07), pos_hint={"x": 0.02, "top": 0.99})
    if logo:
        image = Image(source=logo, size_hint=(None, 1), width=56, fit_mode="contain")
        if image.texture is not None:
            row.add_widget(image)
    label = Label(text=name, font_size=f"{MIN_SP}sp", bold=True, halign="left", valign="middle")
    label.bind(size=lambda w, s: setattr(w, "text_size", s))
    row.add_widget(label)
    parent.add_widget(row)
    return label


class StepScreen(FloatLayout):  # type: ignore[misc]  # kivy ships no types
    """The frame of the desk and self-check screens: a background coloured by the tone of
    the step, wrapping labels, and the language toggle (Vietnamese first). A subclass lays
    out its widgets, renders the view in ``_render`` and caches what it built in ``_shown``
    (forgotten when the language changes)."""

    def __init__(
        self,
        lang: Lang = "vi",
        on_action: Callable[[str], None] | None = None,
        library_name: str = DEFAULT_LIBRARY,
        logo: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.lang: Lang = lang
        self.on_action = on_action
        self.view: Any = None
        self.online = True
        self._shown: tuple[Any, ...] | None = None
        with self.canvas.before:
            self._bg_colour = Color(*BACKGROUND["normal"])
            self._bg = Rectangle(pos=self.pos, size=self.size)
        self.header = library_header(self, library_name, logo)

    def _label(
        self, size: str, hint: tuple[float, float], pos: dict[str, float], **kw: Any
    ) -> Label:
        return text_label(self, size, hint, pos, **kw)

    def _layout(self, *_: Any) -> None:
        self._bg.pos, self._bg.size = self.pos, self.size

    def toggle_language(self) -> None:
        self.lang = "en" if self.lang == "vi" else "vi"
        self._shown = None
        self._render()

    def _render(self) -> None:
        raise NotImplementedError


class CameraPreview(FloatLayout):  # type: ignore[misc]  # kivy ships no types
    """The camera image with the detected face outlined (the gate's and the desk's)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._texture: Texture | None = None
        self._img_size = (16, 9)
        self._box: tuple[float, float, float, float] | None = None
        self.bind(pos=self._draw, size=self._draw)

    def set_frame(self, frame: np.ndarray, box: tuple[float, float, float, float] | None) -> None:
        h, w = frame.shape[:2]
        if self._texture is None or self._texture.size != (w, h):
            self._texture = Texture.create(size=(w, h), colorfmt="bgr")
            self._texture.flip_vertical()
        self._texture.blit_buffer(
            np.ascontiguousarray(frame).tobytes(), colorfmt="bgr", bufferfmt="ubyte"
        )
        self._img_size = (w, h)
        self._box = box
        self._draw()

    def _draw(self, *_: Any) -> None:
        self.canvas.clear()
        w, h = self._img_size
        scale = min(self.width / w, self.height / h)
        dw, dh = w * scale, h * scale
        x0, y0 = self.x + (self.width - dw) / 2, self.y + (self.height - dh) / 2
        with self.canvas:
            Color(0, 0, 0, 1)
            Rectangle(pos=(x0, y0), size=(dw, dh))
            if self._texture is not None:
                Color(1, 1, 1, 1)
                Rectangle(texture=self._texture, pos=(x0, y0), size=(dw, dh))
            if self._box is not None:
                bx1, by1, bx2, by2 = self._box
                Color(0.2, 1, 0.4, 1)
                Line(
                    rectangle=(
                        x0 + bx1 * scale,
                        y0 + (h - by2) * scale,
                        (bx2 - bx1) * scale,
                        (by2 - by1) * scale,
                    ),
                    width=2,
                )

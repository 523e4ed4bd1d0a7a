"""Widgets the kiosk screens share: a wrapping text label and a big action button."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label

PRIMARY_COLOUR = (0.1, 0.55, 0.25, 1)
SECONDARY_COLOUR = (0.35, 0.35, 0.38, 1)


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
    text: str, primary: bool, on_press: Callable[[], None], font_size: str = "24sp"
) -> Button:
    """One large, flat button of the bottom bar; green for what the step expects."""
    button = Button(text=text, font_size=font_size, bold=True)
    button.background_normal = ""
    button.background_color = PRIMARY_COLOUR if primary else SECONDARY_COLOUR
    button.bind(on_release=lambda _b: on_press())
    return button


def bottom_bar(parent: Any, on_language: Callable[[], None]) -> tuple[BoxLayout, Button]:
    """The row of action buttons along the bottom and the language button beside it."""
    buttons = BoxLayout(spacing=16, size_hint=(0.74, 0.14), pos_hint={"x": 0.02, "y": 0.04})
    parent.add_widget(buttons)
    language = Button(font_size="18sp", size_hint=(0.18, 0.1), pos_hint={"right": 0.98, "y": 0.06})
    language.bind(on_release=lambda *_: on_language())
    parent.add_widget(language)
    return buttons, language

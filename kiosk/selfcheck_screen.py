"""The self-check screen (Kivy): what a reader borrowing or returning books looks at.

Top, the step in big type and what to do; under it who is borrowing (name, unpaid fees,
blocks); the middle, one row per item: a green tick or a red cross, the title, the due date
or the problem in plain words (a charge to accept, a set with a part missing, a book lifted
too soon); the PIN pad when a patron barcode was scanned; the receipt as a QR when there is no
printer. Bottom, one large button per action. An offline badge says when the library system
is away (loans go on, within limits). The screen renders ``SelfcheckView`` snapshots and
reports presses through ``on_action`` / ``on_pin``; it never touches the flow or the drivers.
Vietnamese by default, English on a tap.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from kivy.graphics.texture import Texture
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.image import Image as KivyImage
from kivy.uix.label import Label

from biblioedge.kiosk.i18n import Lang, subtitle, text
from biblioedge.kiosk.widgets import BACKGROUND, StepScreen, action_button, bottom_bar

TONE = {"refused": "alarm", "out_of_service": "alarm", "receipt": "done", "returned": "done"}
PRIMARY = {"finish", "fee_yes", "return", "ok"}
MAX_ROWS = 8
OK_COLOUR = (0.55, 0.95, 0.6, 1)
PROBLEM_COLOUR = (1.0, 0.72, 0.6, 1)


def _qr_texture(payload: str, size: int = 300) -> Texture:
    import numpy as np
    import segno

    qr = segno.make(payload, error="m")
    matrix = np.array(list(qr.matrix_iter(border=2)), dtype=np.uint8)
    scale = max(1, size // matrix.shape[0])
    img = np.where(np.kron(matrix, np.ones((scale, scale), np.uint8)) > 0, 0, 255).astype(np.uint8)
    rgb = np.ascontiguousarray(np.flipud(np.stack([img] * 3, axis=2)))
    tex = Texture.create(size=(rgb.shape[1], rgb.shape[0]), colorfmt="rgb")
    tex.blit_buffer(rgb.tobytes(), colorfmt="rgb", bufferfmt="ubyte")
    return tex


def _money(amount: str) -> str:
    """5000 → 5.000 (Vietnamese thousands separator); anything else as it came."""
    digits = amount.split(".", maxsplit=1)[0]
    return f"{int(digits):,}".replace(",", ".") if digits.isdigit() else amount


class SelfcheckScreen(StepScreen):
    def __init__(
        self,
        lang: Lang = "vi",
        on_action: Callable[[str], None] | None = None,
        on_pin: Callable[[str], None] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(lang, on_action, **kw)
        self.on_pin = on_pin
        self.typed = ""
        self.title = self._label("34sp", (0.7, 0.12), {"x": 0.03, "y": 0.84}, bold=True)
        self.sub = self._label("19sp", (0.7, 0.08), {"x": 0.03, "y": 0.76})
        self.who = self._label("18sp", (0.7, 0.06), {"x": 0.03, "y": 0.70})
        self.rows = GridLayout(
            cols=1,
            spacing=4,
            size_hint=(0.7, 0.5),
            pos_hint={"x": 0.03, "y": 0.19},
            row_default_height=44,
            row_force_default=True,
        )
        self.add_widget(self.rows)
        self.pad = GridLayout(
            cols=3, spacing=8, size_hint=(0.34, 0.5), pos_hint={"x": 0.05, "y": 0.19}
        )
        self.keys: dict[str, Button] = {}
        for key in ("1", "2", "3", "4", "5", "6", "7", "8", "9", "del", "0", "ok"):
            b = Button(text=key, font_size="28sp", bold=True)
            b.bind(on_release=lambda _b, k=key: self._key(k))
            self.pad.add_widget(b)
            self.keys[key] = b
        self.add_widget(self.pad)
        self.typed_label = self._label("30sp", (0.3, 0.08), {"x": 0.42, "y": 0.55}, bold=True)
        self.qr = KivyImage(size_hint=(0.26, 0.42), pos_hint={"right": 0.97, "y": 0.3})
        self.add_widget(self.qr)
        self.badge = self._label("18sp", (0.4, 0.05), {"right": 0.98, "top": 0.99})
        self.badge.halign = "right"
        self.badge.color = (1, 0.85, 0.3, 1)
        self.buttons, self.lang_button = bottom_bar(self, self.toggle_language)
        self.bind(pos=self._layout, size=self._layout)
        self._render()

    def show(self, view: Any, frame: Any = None, online: bool = True) -> None:
        """Render a ``SelfcheckView`` (``frame`` is ignored: the pad has no camera view)."""
        if view is not None and (self.view is None or view.step != self.view.step):
            self.typed = ""
        self.view, self.online = view, online
        self._render()

    # -- the PIN pad -------------------------------------------------------------------

    def _key(self, key: str) -> None:
        if key == "del":
            self.typed = self.typed[:-1]
        elif key == "ok":
            if self.typed and self.on_pin is not None:
                self.on_pin(self.typed)
            self.typed = ""
        elif len(self.typed) < 12:
            self.typed += key
        self._render()

    # -- rendering ---------------------------------------------------------------------

    def _item_line(self, r: Any) -> tuple[str, tuple[float, ...]]:
        name = (r.title or r.item_id)[:48]
        if r.problem:
            fields = {"message": r.message[:80], "fee": _money(r.fee)}
            return (
                f"!  {name} — {text('problem_' + r.problem, self.lang, **fields)}",
                PROBLEM_COLOUR,
            )
        extra = []
        if r.due:
            due = r.due
            if len(due) == 10:
                due = f"{due[8:10]}/{due[5:7]}/{due[:4]}"
            extra.append(text("due", self.lang, due=due))
        if r.sort_bin:
            extra.append(text("sort_bin", self.lang, bin=r.sort_bin))
        if r.message == "hold":
            extra.append(text("hold", self.lang))
        elif r.message:
            extra.append(r.message[:60])
        return f"•  {name}" + (f" — {' · '.join(extra)}" if extra else ""), OK_COLOUR

    def _render(self) -> None:
        v = self.view
        step = v.step if v is not None else "starting"
        message = v.message if v is not None else "selfcheck_starting"
        self._bg_colour.rgb = BACKGROUND[TONE.get(step, "normal")]
        name = v.name if v is not None else ""
        self.title.text = text(message, self.lang, name=name or "")
        sub = subtitle(message, self.lang)
        if v is not None and v.detail and step in ("refused", "out_of_service"):
            sub = (sub + "\n" if sub else "") + v.detail[:120]
        self.sub.text = sub
        who = []
        if v is not None and v.fees and v.fees not in ("0", "0.00"):
            who.append(text("fees", self.lang, fees=_money(v.fees)))
        self.who.text = "  ·  ".join(who)
        pin = step == "pin"
        self.pad.opacity, self.pad.disabled = (1, False) if pin else (0, True)
        self.keys["del"].text = text("key_delete", self.lang)
        self.keys["ok"].text = text("action_ok", self.lang)
        self.typed_label.text = "•" * len(self.typed) if pin else ""
        badge = []
        if v is not None and v.pending:
            badge.append(text("pending_offline", self.lang, n=str(v.pending)))
        if (v is not None and v.offline) or not self.online:
            badge.append(text("offline", self.lang))
        self.badge.text = "  ·  ".join(badge)
        self.lang_button.text = text("language", self.lang)
        items = tuple(v.items) if v is not None and not pin else ()
        actions = v.actions if v is not None else ()
        receipt = v.receipt if v is not None and step == "receipt" else ""
        shown = (items, actions, receipt, self.lang)
        if shown == self._shown:
            return
        self._shown = shown
        self.rows.clear_widgets()
        for r in items[:MAX_ROWS]:
            line, colour = self._item_line(r)
            label = Label(text=line, font_size="19sp", halign="left", valign="middle", color=colour)
            label.bind(size=lambda w, s: setattr(w, "text_size", s))
            self.rows.add_widget(label)
        if receipt:
            self.qr.texture = _qr_texture(receipt)
            self.qr.opacity = 1
        else:
            self.qr.opacity = 0
        self.buttons.clear_widgets()
        for action in actions:
            key = action.split(":", 1)[0]
            label = text(f"action_{key}", self.lang)
            if key == "fee_yes":
                item = next((r for r in items if r.item_id == action[8:]), None)
                if item is not None:
                    label += f" ({(item.title or item.item_id)[:18]})"
            self.buttons.add_widget(
                action_button(
                    label, key in PRIMARY, partial(self._pressed, action), font_size="22sp"
                )
            )

    def _pressed(self, action: str) -> None:
        if self.on_action is not None:
            self.on_action(action)

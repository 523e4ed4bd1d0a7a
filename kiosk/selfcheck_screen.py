"""The self-check screen (Kivy): what a reader borrowing or returning books looks at.

Top, the step in big type and what to do; under it who is borrowing (name, unpaid fees,
blocks); the middle, one row per item: a green tick or a red cross, the title, the due date
or the problem in plain words (a charge to accept, a set with a part missing, a book lifted
too soon); the PIN pad when a patron barcode was scanned; the receipt as a QR when there is no
printer; "my account" (loans with due dates, each with its renew button, holds waiting, fees,
or what it cannot know offline). Bottom, one large button per action. An offline badge says
when the library system is away (loans go on, within limits). The screen renders
``SelfcheckView`` snapshots and reports presses through ``on_action`` / ``on_pin``; it never
touches the flow or the drivers.
Vietnamese by default, English on a tap.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from kivy.graphics.texture import Texture
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.image import Image as KivyImage
from kivy.uix.label import Label

from biblioedge.kiosk.i18n import Lang, subtitle, text
from biblioedge.kiosk.widgets import (
    BACKGROUND,
    MIN_SP,
    Badge,
    StepScreen,
    action_button,
    bottom_bar,
    flat_button,
)

TONE = {"refused": "alarm", "out_of_service": "alarm", "receipt": "done", "returned": "done"}
PRIMARY = {"finish", "fee_yes", "return", "ok"}
MAX_ROWS = 6
ROW_HEIGHT = 56
OK_COLOUR = (0.55, 0.95, 0.6, 1)
PROBLEM_COLOUR = (1.0, 0.72, 0.6, 1)
PIN_LENGTH = 4  # the places shown before any digit (dashes); longer PINs add dots


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
        self.title = self._label("34sp", (0.7, 0.1), {"x": 0.03, "y": 0.82}, bold=True)
        self.sub = self._label(f"{MIN_SP}sp", (0.94, 0.09), {"x": 0.03, "y": 0.73})
        self.who = self._label(f"{MIN_SP}sp", (0.7, 0.06), {"x": 0.03, "y": 0.67})
        self.rows = GridLayout(
            cols=1,
            spacing=4,
            size_hint=(0.7, 0.44),
            pos_hint={"x": 0.03, "y": 0.22},
            row_default_height=ROW_HEIGHT,
            row_force_default=True,
        )
        self.add_widget(self.rows)
        self.pad = GridLayout(
            cols=3, spacing=10, size_hint=(0.34, 0.44), pos_hint={"x": 0.05, "y": 0.22}
        )
        self.keys: dict[str, Button] = {}
        for key in ("1", "2", "3", "4", "5", "6", "7", "8", "9", "del", "0", "ok"):
            b = flat_button(key, font_size="30sp")
            b.bind(on_release=lambda _b, k=key: self._key(k))
            self.pad.add_widget(b)
            self.keys[key] = b
        self.add_widget(self.pad)
        # the PIN as dots for the digits typed and dashes for those still to come
        self.typed_label = self._label("44sp", (0.3, 0.1), {"x": 0.44, "y": 0.5}, bold=True)
        self.qr = KivyImage(size_hint=(0.26, 0.42), pos_hint={"right": 0.97, "y": 0.25})
        self.add_widget(self.qr)
        self.badge = Badge(size_hint=(0.44, 0.06), pos_hint={"right": 0.98, "top": 0.99})
        self.add_widget(self.badge)
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
        dots = "•" * len(self.typed) + "–" * max(0, PIN_LENGTH - len(self.typed))
        self.typed_label.text = " ".join(dots) if pin else ""
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
        account = v.account if v is not None and step in ("account", "working") else None
        if account is not None:
            self.who.text = self._account_summary(account)
        shown = (items, actions, receipt, account, self.lang)
        if shown == self._shown:
            return
        self._shown = shown
        self.rows.clear_widgets()
        if account is not None:
            self._account_rows(account, renew=step == "account")
        for r in items[: MAX_ROWS if account is None else 0]:
            line, colour = self._item_line(r)
            self.rows.add_widget(_row_label(line, colour))
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
                action_button(label, key in PRIMARY, partial(self._pressed, action))
            )

    def _pressed(self, action: str) -> None:
        if self.on_action is not None:
            self.on_action(action)

    # -- "my account" ------------------------------------------------------------------

    def _account_summary(self, a: Any) -> str:
        """Fees and holds ready, the line above the loans."""
        parts = []
        if not a.offline:
            fees = a.fees not in ("", "0", "0.00")
            parts.append(
                text("fees", self.lang, fees=_money(a.fees))
                if fees
                else text("account_no_fees", self.lang)
            )
        if a.holds:
            titles = ", ".join((h.title or h.item_id)[:30] for h in a.holds[:3])
            parts.append(text("account_holds", self.lang, titles=titles))
        return "  ·  ".join(parts)

    def _account_rows(self, a: Any, renew: bool) -> None:
        note = ""
        if a.note:
            note = text(f"account_{a.note}", self.lang)
        elif not a.offline and not a.listed:
            note = (
                text("account_not_listed_count", self.lang, n=str(a.charged))
                if a.charged
                else text("account_not_listed", self.lang)
            )
        elif a.listed and not a.loans:
            note = text("account_no_loans", self.lang)
        rows = MAX_ROWS
        if note:
            self.rows.add_widget(_row_label(note, (1, 1, 1, 1)))
            rows -= 1
        for line in a.loans[:rows]:
            self.rows.add_widget(self._loan_row(line, renew and a.can_renew))
        for line in a.fine_lines[: max(0, rows - len(a.loans))]:
            self.rows.add_widget(_row_label(f"!  {line[:70]}", PROBLEM_COLOUR))

    def _loan_row(self, line: Any, renew: bool) -> Any:
        due = f"{line.due[8:10]}/{line.due[5:7]}/{line.due[:4]}" if line.due else ""
        extra = []
        if due:
            key = "account_overdue" if line.overdue else "due"
            extra.append(text(key, self.lang, due=due))
        if line.outcome:
            extra.append(text(f"account_{line.outcome}", self.lang))
        name = (line.title or line.item_id)[:40]
        colour = PROBLEM_COLOUR if line.overdue or line.outcome == "not_renewed" else OK_COLOUR
        row = BoxLayout(spacing=10)
        row.add_widget(
            _row_label(f"•  {name}" + (f" — {' · '.join(extra)}" if extra else ""), colour)
        )
        if renew and line.outcome != "renewed":
            button = action_button(
                text("action_renew", self.lang),
                False,
                partial(self._pressed, f"renew:{line.item_id}"),
            )
            button.size_hint_x = None
            button.width = 170
            row.add_widget(button)
        return row


def _row_label(line: str, colour: tuple[float, ...]) -> Label:
    label = Label(
        text=line,
        font_size=f"{MIN_SP}sp",
        halign="left",
        valign="middle",
        color=colour,
        shorten=True,
        shorten_from="right",
    )
    label.bind(size=lambda w, s: setattr(w, "text_size", s))
    return label

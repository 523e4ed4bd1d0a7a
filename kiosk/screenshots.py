"""Render the gate, desk, self-check and exit-gate screens in each of their states to PNG files, off
screen.

Used by the screenshot tests and by anyone reviewing the UI without a kiosk at hand:
``biblioedge kiosk screenshot gate --out shots/`` (or ``desk``, ``selfcheck``, ``exitgate``).
Beside each ``<state>.png`` a ``<state>.texts.json`` lists every text shown: its box in the
PNG's pixels, its colour and size, so a test can measure the contrast of each text against
what is really drawn around it (tests/test_kiosk_contrast.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from biblioedge.agent.desk.flow import DeskView
from biblioedge.agent.exitgate.flow import AlarmItem, ExitView
from biblioedge.agent.gate.flow import GateView
from biblioedge.agent.selfcheck.account import AccountInfo, AccountLine
from biblioedge.agent.selfcheck.flow import ItemResult
from biblioedge.agent.selfcheck.station import ACTIONS, SelfcheckView

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
_CHILD = {
    "name": "Nguyễn Thị Mai",
    "id": "001••••••876",
    "date_of_birth": "01/09/2014",
    "age": "12",
}
GUARDIAN_STATES: dict[str, tuple[DeskView, bool]] = {
    "desk_guardian_needed": (
        DeskView("guardian_card", "guardian_needed", person=_CHILD, actions=("cancel",)),
        True,
    ),
    "desk_guardian_expired": (
        DeskView(
            "guardian_refused",
            "guardian_expired",
            detail="expired on 10/01/2025",
            person=_CHILD,
            actions=("retry", "cancel"),
        ),
        True,
    ),
    "desk_guardian_consent": (
        DeskView(
            "guardian_consent",
            "guardian_consent_text",
            person={**_CHILD, "guardian": "Nguyễn Văn Ba"},
            actions=("guardian_yes", "guardian_no", "cancel"),
        ),
        True,
    ),
}
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
    # registered from home (agent/desk/prereg.py): her choices confirmed; her phone's card link
    "desk_prereg_confirm": (
        DeskView(
            "prereg_confirm",
            "prereg_confirm_face",
            person=_FULL,
            score=0.981,
            threshold=0.93,
            actions=("confirm", "cancel"),
        ),
        True,
    ),
    "desk_issued_phone": (
        DeskView(
            "issued",
            "card_issued",
            person=_FULL,
            patron_id="BE0000042",
            actions=("print", "next"),
            link="https://central.example.vn/the/card/AbCdEfGhIjKlMnOp/" + "k" * 43,
        ),
        False,
    ),
}
DESK_STATES.update(GUARDIAN_STATES)  # a minor's screens (kiosk/i18n_guardian.py)


_LENT = (
    ItemResult("30000001", True, "Truyện Kiều — Nguyễn Du", due="2026-12-16"),
    ItemResult("30000002", True, "Dế Mèn phiêu lưu ký — Tô Hoài", due="2026-12-16"),
)
_PROBLEMS = (
    ItemResult("30000007", False, "Lịch sử Tây Ninh", problem="fee_required", fee="5000"),
    ItemResult("30000004", False, "Tắt đèn — Ngô Tất Tố", problem="tag_lifted"),
    ItemResult("30000011", False, "Tuyển tập Nam Cao", problem="incomplete_set", message="1/2"),
)
_BINA = "Kho mở tầng 1"


def _sc(step: str, message: str, **kw: Any) -> SelfcheckView:
    kw.setdefault("actions", ACTIONS.get(step, ()))  # type: ignore[call-overload]
    return SelfcheckView(step, message, **kw)  # type: ignore[arg-type]


SELFCHECK_STATES: dict[str, tuple[SelfcheckView, bool]] = {
    "sc_idle": (_sc("idle", "selfcheck_idle"), True),
    "sc_pin": (_sc("pin", "selfcheck_pin"), True),
    "sc_ready": (_sc("ready", "selfcheck_place_books", name="Trần Thị Bình", fees="25000"), True),
    "sc_results": (
        _sc(
            "results",
            "selfcheck_results",
            name="Trần Thị Bình",
            items=_LENT + _PROBLEMS,
            actions=("fee_yes:30000007", "finish"),
        ),
        True,
    ),
    "sc_offline": (
        _sc(
            "results",
            "selfcheck_results",
            items=tuple(
                ItemResult(r.item_id, True, r.title, due=r.due, offline=True) for r in _LENT
            )
            + (ItemResult("30000010", False, "Vợ nhặt — Kim Lân", problem="not_while_offline"),),
            offline=True,
            pending=2,
        ),
        True,
    ),
    "sc_receipt": (
        _sc(
            "receipt",
            "selfcheck_receipt_qr",
            items=_LENT,
            receipt="Thư viện tỉnh\nPhiếu mượn 02/12/2026 10:15\n"
            "- Truyện Kiều — hạn trả 16/12/2026",
        ),
        True,
    ),
    "sc_returned": (
        _sc(
            "returned",
            "selfcheck_returned",
            items=(
                ItemResult("30000001", True, "Truyện Kiều — Nguyễn Du", sort_bin="A1"),
                ItemResult("30000008", True, "Từ điển Tiếng Việt", sort_bin="B2", message="hold"),
            ),
        ),
        True,
    ),
    "sc_refused": (_sc("refused", "selfcheck_refused_reader_blocked"), True),
    "sc_account": (
        _sc(
            "account",
            "selfcheck_account",
            name="Trần Thị Bình",
            account=AccountInfo(
                loans=(
                    AccountLine(
                        "30000001", "Truyện Kiều — Nguyễn Du", "2026-12-30", False, "renewed"
                    ),
                    AccountLine("30000002", "Dế Mèn phiêu lưu ký — Tô Hoài", "2026-12-16"),
                    AccountLine("30000005", "Nỗi buồn chiến tranh — Bảo Ninh", "2026-11-28", True),
                ),
                holds=(AccountLine("30000008", "Từ điển Tiếng Việt"),),
                fees="25000",
                charged=3,
            ),
        ),
        True,
    ),
    "sc_account_offline": (
        _sc(
            "account",
            "selfcheck_account_offline",
            account=AccountInfo(
                loans=(AccountLine("30000004", "Tắt đèn — Ngô Tất Tố", "2026-12-16"),),
                offline=True,
                listed=False,
                holds_listed=False,
            ),
            actions=("back", "finish"),
            offline=True,
        ),
        True,
    ),
    "sc_account_not_listed": (
        _sc(
            "account",
            "selfcheck_account",
            account=AccountInfo(listed=False, holds_listed=False, charged=2),
        ),
        True,
    ),
    "sc_out_of_service": (
        _sc("out_of_service", "selfcheck_reader_problem", detail="the RFID reader did not answer"),
        False,
    ),
}


EXIT_STATES: dict[str, tuple[ExitView, bool]] = {
    "exit_idle": (ExitView("idle", "exit_idle", passages_in=412, passages_out=398), True),
    "exit_alarm": (
        ExitView(
            "alarm",
            "exit_alarm",
            items=(
                AlarmItem("30000001", "Truyện Kiều — Nguyễn Du"),
                AlarmItem("30000007", "Lịch sử Tây Ninh", reason="not_on_loan"),
            ),
        ),
        True,
    ),
    "exit_alarm_offline": (
        ExitView("alarm", "exit_alarm", items=(AlarmItem("UID E004A1B2C3D4E5F6"),), offline=True),
        True,
    ),
    "exit_out_of_service": (
        ExitView("out_of_service", "exit_out_of_service", counter_ok=False),
        True,
    ),
}


#: what a state does to the screen after it is shown (a PIN being typed is the screen's own)
def _type_pin(screen: Any) -> None:
    for key in "123":
        screen._key(key)


AFTER: dict[str, Callable[[Any], None]] = {"sc_pin_typed": _type_pin}
SELFCHECK_STATES["sc_pin_typed"] = SELFCHECK_STATES["sc_pin"]


def render_exitgate(
    out: Path,
    size: tuple[int, int] = (1024, 600),
    frame: np.ndarray | None = None,
    brand: dict[str, Any] | None = None,
) -> list[Path]:
    from biblioedge.kiosk.exitgate_screen import ExitgateScreen

    states = list(EXIT_STATES.items())
    states.append(("exit_alarm_english", EXIT_STATES["exit_alarm"]))
    return _render(out, size, frame, ExitgateScreen, states, "exit_alarm_english", brand)


def render_selfcheck(
    out: Path,
    size: tuple[int, int] = (1280, 800),
    frame: np.ndarray | None = None,
    brand: dict[str, Any] | None = None,
) -> list[Path]:
    from biblioedge.kiosk.selfcheck_screen import SelfcheckScreen

    states = list(SELFCHECK_STATES.items())
    states.append(("sc_results_english", SELFCHECK_STATES["sc_results"]))
    states.append(("sc_account_english", SELFCHECK_STATES["sc_account"]))
    return _render(out, size, frame, SelfcheckScreen, states, "sc_results_english", brand)


def render_desk(
    out: Path,
    size: tuple[int, int] = (1280, 800),
    frame: np.ndarray | None = None,
    brand: dict[str, Any] | None = None,
) -> list[Path]:
    from biblioedge.kiosk.desk_screen import DeskScreen

    states = list(DESK_STATES.items())
    states.append(("desk_consent_english", DESK_STATES["desk_consent"]))
    return _render(out, size, frame, DeskScreen, states, "desk_consent_english", brand)


def render_gate(
    out: Path,
    size: tuple[int, int] = (1024, 600),
    frame: np.ndarray | None = None,
    brand: dict[str, Any] | None = None,
) -> list[Path]:
    from biblioedge.kiosk.gate_screen import GateScreen

    states = list(STATES.items()) + [
        ("english", (GateView("granted", "welcome_name", name="Nguyễn Văn An"), True))
    ]
    return _render(out, size, frame, GateScreen, states, "english", brand)


def texts(screen: Any) -> list[dict[str, Any]]:
    """Every text the screen shows now: box (PNG pixels, top-left origin), colour, size in sp."""
    from kivy.metrics import sp
    from kivy.uix.label import Label

    height = screen.height
    found = []
    for w in screen.walk(restrict=True):
        if not isinstance(w, Label) or not w.text.strip() or w.width < 2 or w.height < 2:
            continue
        node, visible = w, True
        while node is not None and node is not screen.parent:
            if node.opacity == 0:
                visible = False
            node = node.parent
        if not visible:
            continue
        x, y = w.to_window(w.x, w.y)
        found.append(
            {
                "text": w.text,
                "box": [round(x), round(height - y - w.height), round(w.width), round(w.height)],
                "colour": [round(c * 255) for c in w.color[:3]],
                "sp": round(float(w.font_size) / sp(1), 1),
            }
        )
    return found


def _render(
    out: Path,
    size: tuple[int, int],
    frame: np.ndarray | None,
    make: Any,
    states: list[tuple[str, tuple[Any, bool]]],
    english: str,
    brand: dict[str, Any] | None = None,
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
            self.screen = make(**(brand or {}))
            self.todo = list(states)
            Clock.schedule_once(self.next, 0.2)
            return self.screen

        def next(self, *_: object) -> None:
            if not self.todo:
                self.stop()
                return
            name, (view, online) = self.todo.pop(0)
            want = "en" if name == english or name.endswith("english") else "vi"
            if self.screen.lang != want:
                self.screen.toggle_language()
            self.screen.show(view, camera, online=online)
            if name in AFTER:
                AFTER[name](self.screen)
            Clock.schedule_once(lambda *_: self.capture(name), 0.1)

        def capture(self, name: str) -> None:
            path = out / f"{name}.png"
            self.screen.export_to_png(str(path))
            shown = json.dumps(texts(self.screen), ensure_ascii=False, indent=1)
            (out / f"{name}.texts.json").write_text(shown, encoding="utf-8")
            written.append(path)
            Clock.schedule_once(self.next, 0)

    Shots().run()
    return written

"""Simulated kiosks: realistic events of each role at a configurable rate, no hardware needed.

The demo fleet and the integration tests run agents with this component instead of drivers,
so everything downstream (outbox, sync, central, API) sees the same traffic a real kiosk makes.
Payloads follow the real flows' event schemas and carry no personal data beyond patron ids.
"""

from __future__ import annotations

import asyncio
import random
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.store import NotRecorded
from biblioedge.agent.supervisor import Context
from biblioedge.protocol import Role

Emit = Callable[[str, dict[str, Any]], Awaitable[object]]

_TITLES = [
    "Dế Mèn phiêu lưu ký",
    "Số đỏ",
    "Truyện Kiều",
    "Tắt đèn",
    "Nỗi buồn chiến tranh",
    "Cho tôi xin một vé đi tuổi thơ",
    "Lịch sử Việt Nam",
    "Giáo trình Tin học cơ sở",
]


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


class RoleSimulator:
    """Draws one plausible event of the device's role at a time."""

    def __init__(self, role: Role, site: str, seed: int | None = None) -> None:
        self.role = role
        self.site = site
        self.rng = random.Random(seed)
        self.on_loan: list[tuple[str, str]] = []
        self.next_patron = 1000

    def patron(self) -> str:
        return f"P{self.rng.randint(1, 5000):06d}"

    def next_event(self) -> tuple[str, dict[str, Any]]:
        match self.role:
            case "gate":
                return self._gate()
            case "selfcheck":
                return self._selfcheck()
            case "desk":
                return self._desk()
            case "exitgate":
                return self._exitgate()
        raise AssertionError(self.role)

    def _gate(self) -> tuple[str, dict[str, Any]]:
        r = self.rng
        method = r.choices(["face", "card_qr", "barcode"], weights=[70, 25, 5])[0]
        granted = r.random() < 0.93
        payload: dict[str, Any] = {
            "method": method,
            "decision": "grant" if granted else "deny",
            "latency_ms": round(r.uniform(90, 280), 1),
            "direction": "in",
        }
        if method == "face":
            payload["score"] = round(r.uniform(0.55, 0.92) if granted else r.uniform(0.2, 0.5), 4)
            payload["margin"] = round(r.uniform(0.08, 0.4), 4)
        if granted or r.random() < 0.5:
            payload["patron_id"] = self.patron()
        if not granted:
            payload["reason"] = r.choice(
                ["unknown_face", "low_quality", "blocked", "passback", "card_expired"]
            )
        return "gate.decision", payload

    def _selfcheck(self) -> tuple[str, dict[str, Any]]:
        r = self.rng
        if self.on_loan and r.random() < 0.45:
            patron, item = self.on_loan.pop(r.randrange(len(self.on_loan)))
            return "circ.checkin", {
                "item_id": item,
                "patron_id": patron,
                "ils_ok": True,
                "security": "on",
                "identified_by": r.choice(["rfid", "barcode"]),
            }
        patron = self.patron()
        item = f"30000{r.randint(0, 99999):05d}"
        self.on_loan.append((patron, item))
        if len(self.on_loan) > 500:
            self.on_loan.pop(0)
        due = datetime.now(UTC).date() + timedelta(days=14)
        return "circ.checkout", {
            "patron_id": patron,
            "item_id": item,
            "title": _nfc(r.choice(_TITLES)),
            "due_date": due.isoformat(),
            "ils_ok": True,
            "security": "off",
            "identified_by": r.choice(["card_qr", "cccd_qr", "face"]),
        }

    def _desk(self) -> tuple[str, dict[str, Any]]:
        r = self.rng
        step = self.next_patron % 3
        patron = f"P{self.next_patron // 3 + 100000:06d}"
        self.next_patron += 1
        if step == 0:
            return "reader.registered", {
                "patron_id": patron,
                "source": r.choice(["chip", "chip", "qr"]),
                "birth_year": r.randint(1950, 2012),
                "face_match_score": round(r.uniform(0.6, 0.9), 4),
                "passive_auth": "ok",
            }
        if step == 1:
            return "consent.recorded", {
                "patron_id": patron,
                "purpose": "face_gate",
                "text_version": "vi-2026-01",
                "granted": r.random() < 0.9,
                "librarian": "lib01",
            }
        return "card.issued", {
            "patron_id": patron,
            "card_no": f"{self.site.upper()}-{patron}",
            "expires": (datetime.now(UTC).date() + timedelta(days=365 * 4)).isoformat(),
        }

    def _exitgate(self) -> tuple[str, dict[str, Any]]:
        r = self.rng
        if r.random() < 0.03:
            return "exit.alarm", {
                "reason": "afi_secured",
                "items": [{"item_id": f"30000{r.randint(0, 99999):05d}", "afi": 0x07}],
                "offline": False,
                "read_to_alarm_ms": round(r.uniform(15, 60), 1),
            }
        minute = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
        return "exit.passages", {
            "minute": minute,
            "in": r.randint(0, 6),
            "out": r.randint(0, 6),
            "counter": "ok",
        }


class Simulator:
    """The component: emits the role's events while ``simulator.enabled`` is on."""

    name = "simulator"

    def __init__(self, config_ref: Callable[[], AgentConfig], emit: Emit) -> None:
        self._cfg = config_ref
        self._emit = emit
        cfg = config_ref()
        self.sim = RoleSimulator(cfg.role, cfg.site, cfg.simulator.seed)

    async def run(self, ctx: Context) -> None:
        loop = asyncio.get_running_loop()
        next_at: float | None = None
        while True:
            ctx.heartbeat()
            cfg = self._cfg().simulator
            if not cfg.enabled or cfg.rate_per_s <= 0:
                next_at = None
                await asyncio.sleep(0.5)
                continue
            if next_at is None:
                next_at = loop.time()
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(min(delay, 1.0))
                continue
            # Poisson arrivals, like people at a gate; never build up more than 1 s of debt.
            next_at = max(next_at, loop.time() - 1.0) + self.sim.rng.expovariate(cfg.rate_per_s)
            try:
                await self._emit(*self.sim.next_event())
            except NotRecorded:
                await asyncio.sleep(1.0)  # counted and logged by emit; keep the kiosk alive

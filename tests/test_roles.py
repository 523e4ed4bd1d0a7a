"""The kiosk roles behind one interface: the runtime runs the configured role and no other,
says why an unbuilt role fails the self-test, and takes the simulators only from the tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from biblioedge.agent.config import validate_config
from biblioedge.agent.runtime import AgentRuntime
from biblioedge.agent.selftest import kiosk_checks
from biblioedge.sim.kiosk import kiosk_actors

SECTIONS: dict[str, dict[str, Any]] = {
    "gate": {"enabled": True, "camera": "sim", "relay": "sim"},
    "desk": {"enabled": True, "demo_librarian": True},
    "selfcheck": {"enabled": True, "ils": "sip2://kiosk@127.0.0.1:1", "rfid": "sim"},
    "exitgate": {"enabled": True, "rfid": "sim"},
}


def runtime(tmp: Path, role: str, enabled: bool = True) -> AgentRuntime:
    doc: dict[str, Any] = {
        "role": role,
        "site": "tv-tinh",
        "device_id": f"{role}-01",
        "data_dir": str(tmp),
        "metrics": {"enabled": False},
        "security": {"require": False},
    }
    if enabled:
        doc[role] = SECTIONS[role]
    return AgentRuntime(validate_config(doc))


@pytest.mark.parametrize("role", sorted(SECTIONS))
def test_the_runtime_runs_the_configured_role_and_no_other(role: str, tmp_path: Path) -> None:
    rt = runtime(tmp_path / "on", role)
    assert [r.name for r in rt.roles] == [role]
    assert rt.roles[0].flow is None  # built only when its component starts
    assert not rt.busy()
    rt.store.close()
    off = runtime(tmp_path / "off", role, enabled=False)  # a simulated kiosk: no hardware
    assert off.roles == []
    off.store.close()


async def test_an_unbuilt_role_fails_the_self_test_and_says_why(tmp_path: Path) -> None:
    rt = runtime(tmp_path, "gate")
    health: dict[str, str] = {}
    checks = kiosk_checks(rt.store, lambda: True, lambda: health, lambda: rt.roles)
    assert await checks["store"]() is None
    assert await checks["broker"]() is None
    assert await checks["role"]() == "gate is not started"
    health["gate"] = "up"
    assert await checks["role"]() == "gate drivers are not up yet"
    assert await checks["face engine"]() == "face engine not loaded"
    rt.store.close()


def test_the_simulators_come_from_the_tools_never_from_the_agent(tmp_path: Path) -> None:
    code = (
        "import sys, biblioedge.agent.runtime\n"
        "print(sorted(m for m in sys.modules if m.startswith('biblioedge.sim')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    rt = runtime(tmp_path, "desk")
    actors = kiosk_actors(lambda: rt.config, rt.emit, rt.roles)
    assert [a.name for a in actors] == ["simulator", "demo-librarian"]
    rt.store.close()

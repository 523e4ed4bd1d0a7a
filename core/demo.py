"""``biblioedge demo``: a whole fleet on one machine, no hardware.

A broker, central with SQLite, and one simulated kiosk of each role, each a real process.
"""

from __future__ import annotations

import logging
import secrets
import signal
import sys
import threading
from pathlib import Path

from biblioedge.launch import AgentProcess, CentralProcess, agent_config, wait_until
from biblioedge.procs import free_port
from biblioedge.provisioning.broker import BrokerProcess

log = logging.getLogger("biblioedge.demo")

SITE = "tv-tinh"  # the provincial library's main building
DEVICES = (("gate-01", "gate"), ("selfcheck-01", "selfcheck"), ("desk-01", "desk"))


def run_demo(
    data: Path, *, rate: float = 0.5, port: int = 8080, duration: float | None = None
) -> int:
    data = data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    token_file = data / "admin-token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(24))
        token_file.chmod(0o600)
    token = token_file.read_text().strip()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    broker = BrokerProcess(data / "broker")
    central = CentralProcess(data / "central", broker.url, token, port=port or free_port())
    agents = [
        AgentProcess(
            data / "agents" / device_id,
            agent_config(
                data / "agents" / device_id,
                device_id,
                role,
                SITE,
                broker.url,
                simulator={"enabled": True, "rate_per_s": rate},
            ),
        )
        for device_id, role in DEVICES
    ]
    started: list[object] = []
    try:
        broker.start()
        started.append(broker)
        central.start()
        started.append(central)
        for agent in agents:
            agent.start()
            started.append(agent)
        with central.client() as api:
            wait_until(
                lambda: (
                    all(d["online"] for d in api.get("/devices").json())
                    and len(api.get("/devices").json()) == len(agents)
                ),
                timeout=30,
                what="all demo kiosks online",
            )
        api_url = central.url + "/api/v1"
        sys.stdout.write(
            "\n".join(
                [
                    "",
                    "biblioedge demo is running",
                    f"  broker   {broker.kind} at {broker.url}",
                    f"  API      {api_url}   (OpenAPI docs: {central.url}/docs)",
                    f"  token    {token}   (also in {token_file})",
                    f"  kiosks   {', '.join(a.device_id for a in agents)} at site {SITE}",
                    f"  data     {data}",
                    "",
                    f'  curl -H "Authorization: Bearer {token}" {api_url}/events?limit=5',
                    "",
                    "Ctrl-C stops everything.",
                    "",
                ]
            )
        )
        sys.stdout.flush()
        stop.wait(timeout=duration)
    except (TimeoutError, OSError) as exc:
        log.error("demo could not start: %s", exc)
        for child in (central, *agents):
            if child.log_tail():
                log.error("%s log:\n%s", child.name, child.log_tail(15))
        return 1
    finally:
        log.info("stopping the demo fleet")
        for agent in agents:
            agent.stop()
        central.stop()
        broker.stop()
    sys.stdout.write("demo stopped\n")
    return 0

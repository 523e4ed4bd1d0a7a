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


#: Demo readers: who the sample people are at the library (names are invented).
DEMO_READERS = {
    "t1-0": ("P000101", "Nguyễn Văn An"),
    "t1-2": ("P000102", "Trần Thị Bình"),
    "t1-4": ("P000103", "Lê Hoàng Cường"),
    "tom": ("P000104", "Phạm Minh Đức"),
}


def prepare_gate(agent_dir: Path) -> Path | None:
    """Enroll the demo readers into the gate's gallery and film the camera's loop: enrolled
    readers and strangers walking up one after another. None when no sample faces exist."""
    import unicodedata

    import cv2
    import numpy as np

    from biblioedge.agent.gallery_store import GalleryStore, load_or_create_key
    from biblioedge.agent.store import Patron, Store
    from biblioedge.models.engine import FaceEngine
    from biblioedge.samples import people_in_samples, portrait, scene_frame

    people = [p for p in people_in_samples() if not p[0].startswith("astronaut")]
    if not people:
        log.warning("no sample faces installed: the demo gate only simulates its events")
        return None
    engine = FaceEngine()
    store = Store(agent_dir / "agent.sqlite3")
    templates = GalleryStore(store, load_or_create_key(agent_dir / "keys" / "template.key"))
    camera = agent_dir / "camera"
    camera.mkdir(parents=True, exist_ok=True)
    for old in camera.glob("*.jpg"):
        old.unlink()
    rng = np.random.default_rng(2026)
    blank = np.full((720, 1280, 3), 110, np.uint8)
    n = 0
    try:
        for name, image, det in people:
            if name in DEMO_READERS:
                pid, display = DEMO_READERS[name]
                vec = engine.embed_detections(image, [det])
                templates.put(pid, vec, engine.embedder.name)
                store.upsert_patrons(
                    [
                        Patron(
                            pid, pid, unicodedata.normalize("NFC", display), "active", "2099-12-31"
                        )
                    ]
                )
            face = portrait(image, det.box, 170)
            for frame in [scene_frame(face, rng) for _ in range(10)] + [blank] * 8:
                cv2.imwrite(str(camera / f"{n:05d}.jpg"), frame)
                n += 1
    finally:
        store.close()
    return camera


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
    agents = []
    for device_id, role in DEVICES:
        agent_dir = data / "agents" / device_id
        sections: dict[str, dict[str, object]] = {
            "simulator": {"enabled": True, "rate_per_s": rate}
        }
        if role == "gate":
            camera = prepare_gate(agent_dir)
            if camera is not None:  # the real gate flow on a simulated camera and turnstile
                sections = {
                    "simulator": {"enabled": False},
                    "gate": {
                        "enabled": True,
                        "camera": f"sim:{camera}",
                        "camera_fps": 10.0,
                        "relay": "sim",
                        "passback_s": 60.0,
                        "pulse_ms": 800,
                    },
                }
        agents.append(
            AgentProcess(
                agent_dir, agent_config(agent_dir, device_id, role, SITE, broker.url, **sections)
            )
        )
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

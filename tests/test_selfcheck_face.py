"""Face identification at the self-check: the real dlib engine on the simulated camera, only
readers in the kiosk's gallery (those who consented to face_selfcheck) are recognised."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
from samples import astronaut

from biblioedge.agent.selfcheck.face import FaceWatch
from biblioedge.agent.supervisor import Context
from biblioedge.drivers.camera import SimulatedCamera
from biblioedge.models.engine import AsyncFaceEngine, FaceEngine
from biblioedge.models.gallery import Gallery


@dataclass
class View:
    step: str = "idle"


@dataclass
class Station:
    view: View = field(default_factory=View)
    faces: list[str] = field(default_factory=list)

    def face(self, patron_id: str) -> None:
        self.faces.append(patron_id)
        self.view = View("ready")


async def test_a_consented_reader_starts_a_session_and_no_one_else_does() -> None:
    face = await AsyncFaceEngine.load(FaceEngine)
    try:
        image = astronaut()
        _, vec = face.engine.embed_largest(image)
        gallery = Gallery(face.engine.dim)
        other = np.random.default_rng(3).standard_normal(face.engine.dim).astype(np.float32)
        gallery.add("P9", other / np.linalg.norm(other))
        station = Station()
        watch = FaceWatch(SimulatedCamera([image], fps=10), face, gallery, lambda: station)
        task = asyncio.create_task(watch.run(Context("selfcheck-face", 30)))
        await asyncio.sleep(1.5)
        assert station.faces == []  # her face is not in this kiosk's gallery: no session
        gallery.add("P1", vec)  # she consents to face_selfcheck: the next delta brings it
        for _ in range(60):
            if station.faces:
                break
            await asyncio.sleep(0.1)
        assert station.faces == ["P1"]
        station.view = View("idle")  # she ended her session and is still standing there
        await asyncio.sleep(1.0)
        assert station.faces == ["P1"]  # not started again at once
        task.cancel()
        assert await watch.look(np.full((480, 640, 3), 120, np.uint8)) is None  # nobody
    finally:
        face.close()

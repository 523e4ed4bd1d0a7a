"""Face identification at the self-check: the kiosk's camera, 1:N against the readers of the
site who consented to being recognised *here* (purpose ``face_selfcheck``; the gallery sync
keeps no one else's templates on a self-check).

The same pipeline as the gate, minus the turnstile: the newest frame, the largest face, the
quality gate, liveness when configured, one embedding, threshold and margin. A match starts a
session only when the station is idle, and the same reader is not started again for a few
seconds (they are still standing there after ending their session). Nothing is kept: no
image, no embedding; the session's event says ``identified_by: face``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from biblioedge.agent.supervisor import Context
from biblioedge.drivers.camera import Camera
from biblioedge.models.errors import FaceEngineError
from biblioedge.models.gallery import Gallery
from biblioedge.models.liveness import Liveness
from biblioedge.models.pipeline import FaceService
from biblioedge.models.quality import QualityConfig

log = logging.getLogger("biblioedge.agent.selfcheck")


class FaceWatch:
    name = "selfcheck-face"

    def __init__(
        self,
        camera: Camera,
        face: FaceService,
        gallery: Gallery,
        station: Callable[[], Any],
        *,
        quality: QualityConfig | None = None,
        liveness: Liveness | None = None,
        threshold: float | None = None,
        again_after_s: float = 8.0,
    ) -> None:
        self.camera = camera
        self.face = face
        self.gallery = gallery
        self.station = station
        self.quality = quality or QualityConfig()
        self.liveness = liveness
        self.threshold = threshold
        self.again_after_s = again_after_s
        self._last: tuple[str, float] = ("", 0.0)
        self.recognised = 0

    async def look(self, image: Any) -> str | None:
        """The consented reader in this frame, if one is recognised with confidence."""
        try:
            found = await self.face.analyze(  # liveness: embedded with its deciding frame
                image,
                quality=self.quality,
                embed=self.liveness is None or self.liveness.decides_next(),
            )
        except FaceEngineError as exc:  # worker restarting, bad frame, engine error
            log.debug("no face look at this frame: %s", exc)
            return None
        det = found.detection
        if det is None:
            if self.liveness is not None:
                self.liveness.reset()
            return None
        if found.quality is not None and not found.quality.ok:
            return None
        vector = found.vector
        if self.liveness is not None and not self.liveness.check(image, det).live:
            return None
        if vector is None:
            return None
        decision = self.gallery.decide(
            vector, self.threshold or self.face.threshold, self.face.margin
        )
        return decision.patron_id if decision.accepted else None

    async def run(self, ctx: Context) -> None:
        self.camera.start()
        last_seq = -1
        try:
            while True:
                ctx.heartbeat()
                frame = await asyncio.to_thread(self.camera.latest, last_seq, 0.5)
                station = self.station()
                if frame is None or station is None:
                    continue
                last_seq = frame.seq
                if station.view.step != "idle" or not len(self.gallery):
                    continue
                patron = await self.look(frame.image)
                if patron is None:
                    continue
                who, when = self._last
                if who == patron and time.monotonic() - when < self.again_after_s:
                    continue
                self._last = (patron, time.monotonic())
                self.recognised += 1
                log.info("reader recognised by face at the self-check")
                station.face(patron)
        finally:
            self.camera.stop()

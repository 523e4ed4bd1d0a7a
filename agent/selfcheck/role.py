"""The self-check as a role of the runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from biblioedge.agent.role import (
    Closable,
    GalleryNeeds,
    Health,
    RoleHost,
    close_all,
    swap_templates,
    view_busy,
)
from biblioedge.agent.supervisor import Context

if TYPE_CHECKING:
    import numpy as np

    from biblioedge.agent.selfcheck.station import SelfcheckStation
    from biblioedge.protocol import GalleryDelta


class SelfcheckRole:
    """The self-check station, built inside its component: it opens the RFID reader and the
    library system's connection, which may take a while or fail and be retried. The camera,
    where there is one, watches beside the station under the same supervision."""

    name = "selfcheck"
    gallery_needs = GalleryNeeds("face_selfcheck", keep_citizen_ref=True, keep_name=False)

    def __init__(self, host: RoleHost) -> None:
        self.host = host
        self._flow: SelfcheckStation | None = None
        self._closables: list[Closable] = []

    @property
    def flow(self) -> SelfcheckStation | None:
        return self._flow

    async def run(self, ctx: Context) -> None:
        if self._flow is None:
            # RFID, SIP2 and (with a camera) the face engine load only on a self-check
            from biblioedge.agent.selfcheck.build import build_selfcheck

            flow, closables = await build_selfcheck(
                self.host.config, self.host.emit, self.host.gallery(), self.host.can_record
            )
            self._closables.extend(closables)
            self._flow = flow
        if self._flow.face_watch is None:
            await self._flow.run(ctx)
        else:
            await asyncio.gather(self._flow.run(ctx), self._flow.face_watch.run(ctx))

    def stop(self) -> None:
        close_all(self._closables)

    def health(self) -> Health:
        return {"role": "selfcheck drivers are not up yet"} if self._flow is None else {}

    def busy(self) -> bool:
        view = self._flow.view if self._flow is not None else None
        return view_busy(view, view.step if view is not None else None)

    def apply_gallery(self, delta: GalleryDelta, accepted: Mapping[str, np.ndarray]) -> None:
        watch = self._flow.face_watch if self._flow is not None else None
        if watch is not None:  # card keys and revocations are read from the store per scan
            swap_templates(watch.gallery, watch.face.embedder_name, delta, accepted)

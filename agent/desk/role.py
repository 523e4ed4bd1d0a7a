"""The card desk as a role of the runtime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from biblioedge.agent.role import Closable, Health, RoleHost, close_all, view_busy
from biblioedge.agent.supervisor import Context

if TYPE_CHECKING:
    import numpy as np

    from biblioedge.agent.desk.flow import DeskFlow
    from biblioedge.protocol import GalleryDelta


class DeskRole:
    """The desk flow, built inside its component like the gate (the face engine loads). It
    keeps no gallery: central answers each registration in the ack."""

    name = "desk"
    gallery_needs = None

    def __init__(self, host: RoleHost) -> None:
        self.host = host
        self._flow: DeskFlow | None = None
        self._closables: list[Closable] = []

    @property
    def flow(self) -> DeskFlow | None:
        return self._flow

    async def run(self, ctx: Context) -> None:
        if self._flow is None:
            # the face engine, camera and chip reader load only on a desk
            from biblioedge.agent.desk.build import build_desk

            flow, closables = await build_desk(
                self.host.config(), self.host.store, self.host.emit, self.host.registry
            )
            flow.can_record = self.host.can_record
            self._closables.extend(closables)
            self.host.answer_listeners.append(flow.answers_arrived)
            self._flow = flow
        await self._flow.run(ctx)

    def stop(self) -> None:
        close_all(self._closables)

    def health(self) -> Health:
        return {"role": "desk drivers are not up yet"} if self._flow is None else {}

    def busy(self) -> bool:
        view = self._flow.view if self._flow is not None else None
        return view_busy(view, view.step if view is not None else None)

    def apply_gallery(self, delta: GalleryDelta, accepted: Mapping[str, np.ndarray]) -> None:
        return None  # no gallery at the desk

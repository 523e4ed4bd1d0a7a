"""The entry gate as a role of the runtime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from biblioedge.agent.role import (
    Closable,
    GalleryNeeds,
    Health,
    RoleHost,
    close_all,
    swap_templates,
    update_verifier,
    view_busy,
)
from biblioedge.agent.supervisor import Context

if TYPE_CHECKING:
    import numpy as np

    from biblioedge.agent.gate.flow import GateFlow
    from biblioedge.protocol import GalleryDelta


class GateRole:
    """Builds the gate flow inside its own component: loading the face engine and gallery
    takes seconds, and the agent should be connected and syncing meanwhile."""

    name = "gate"
    gallery_needs = GalleryNeeds("face_gate", keep_citizen_ref=False, keep_name=True)

    def __init__(self, host: RoleHost) -> None:
        self.host = host
        self._flow: GateFlow | None = None
        self._closables: list[Closable] = []

    @property
    def flow(self) -> GateFlow | None:
        return self._flow

    async def run(self, ctx: Context) -> None:
        if self._flow is None:
            # the face engine and camera load only on a gate (numpy, onnxruntime, cv2)
            from biblioedge.agent.gate.build import build_gate

            synced = self.host.gallery()
            assert synced is not None, "the runtime opens the gallery of gallery_needs"
            store = self.host.store
            flow, closables = await build_gate(
                self.host.config(), store.store, synced, self.host.emit, self.host.registry
            )
            flow.can_record = self.host.can_record
            self._closables.extend(closables)
            self._flow = flow
        await self._flow.run(ctx)

    def stop(self) -> None:
        close_all(self._closables)

    def health(self) -> Health:
        if self._flow is None:
            return {"role": "gate drivers are not up yet", "face engine": "face engine not loaded"}
        return {}

    def busy(self) -> bool:
        view = self._flow.view if self._flow is not None else None
        return view_busy(view, view.mode if view is not None else None)

    def apply_gallery(self, delta: GalleryDelta, accepted: Mapping[str, np.ndarray]) -> None:
        if self._flow is None:
            return  # the flow loads the stored gallery when it is built
        swap_templates(self._flow.gallery, self._flow.face.embedder_name, delta, accepted)
        update_verifier(self._flow.verifier, delta)

"""The exit security gate as a role of the runtime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from biblioedge.agent.role import Closable, Health, RoleHost, close_all, view_busy
from biblioedge.agent.supervisor import Context

if TYPE_CHECKING:
    import numpy as np

    from biblioedge.agent.exitgate.flow import ExitGate
    from biblioedge.protocol import GalleryDelta


class ExitgateRole:
    """The exit gate, built inside its component: it opens the reader, the relay, the
    passage counter and the library system's connection. No gallery: no reader is
    identified here."""

    name = "exitgate"
    gallery_needs = None

    def __init__(self, host: RoleHost) -> None:
        self.host = host
        self._flow: ExitGate | None = None
        self._closables: list[Closable] = []

    @property
    def flow(self) -> ExitGate | None:
        return self._flow

    async def run(self, ctx: Context) -> None:
        if self._flow is None:
            # serial drivers and the SIP2 client load only on an exit gate
            from biblioedge.agent.exitgate.build import build_exitgate, settings_of

            flow, closables = await build_exitgate(
                self.host.config(), self.host.emit, self.host.registry
            )
            flow.settings_source = lambda: settings_of(self.host.config())  # desired state
            self._closables.extend(closables)
            self._flow = flow
        await self._flow.run(ctx)

    def stop(self) -> None:
        close_all(self._closables)

    def health(self) -> Health:
        return {"role": "exitgate drivers are not up yet"} if self._flow is None else {}

    def busy(self) -> bool:
        view = self._flow.view if self._flow is not None else None
        return view_busy(view, view.mode if view is not None else None)

    def apply_gallery(self, delta: GalleryDelta, accepted: Mapping[str, np.ndarray]) -> None:
        return None  # no gallery at the exit

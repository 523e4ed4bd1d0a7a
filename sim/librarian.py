"""The demo's librarian at the card desk (``desk.demo_librarian``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from biblioedge.agent.supervisor import Context

if TYPE_CHECKING:  # the desk flow loads cv2 and numpy: only on a desk
    from biblioedge.agent.desk.flow import DeskFlow, DeskView

log = logging.getLogger("biblioedge.agent.desk")


class DemoLibrarian:
    """The demo's librarian (``desk.demo_librarian``): answers each screen after a pause as a
    reader who agrees would; cancels on warnings and never overrides a forgery."""

    name = "demo-librarian"
    ANSWERS = {
        "consent": "consent_yes",
        "confirm_identity": "confirm_identity",
        "issued": "next",
        "pending": "next",
        "refused": "next",
        "face_failed": "retry",
        "forgery": "cancel",
        "check_card": "cancel",
        "reader_problem": "cancel",
        # a minor (docs/children.md): the demo has no guardian's card to scan, so it cancels
        # there; with one on the reader, it answers as a consenting parent and child would
        "guardian_card": "cancel",
        "guardian_refused": "cancel",
        "relationship": "rel_parent",
        "child_consent": "child_yes",
        "guardian_consent": "guardian_yes",
    }

    def __init__(self, flow: Callable[[], DeskFlow | None], pause_s: float = 1.5) -> None:
        self.flow = flow
        self.pause_s = pause_s

    async def run(self, ctx: Context) -> None:
        answered: DeskView | None = None
        while True:
            ctx.heartbeat()
            await asyncio.sleep(self.pause_s)
            flow = self.flow()
            if flow is None or flow.view is answered:
                continue
            action = self.ANSWERS.get(flow.view.step)
            if action is not None and action in flow.view.actions:
                answered = flow.view
                log.info("demo librarian taps %s on %s", action, flow.view.step)
                flow.tap(action)

"""What the tools hand a kiosk's runtime beside its roles: the event simulator (idle until
``simulator.enabled``) and the demo's actors where the configuration asks for them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.desk.role import DeskRole
from biblioedge.agent.role import Emit, Role
from biblioedge.agent.selfcheck.role import SelfcheckRole
from biblioedge.agent.supervisor import Component
from biblioedge.sim.librarian import DemoLibrarian
from biblioedge.sim.roles import Simulator
from biblioedge.sim.selfcheck_reader import DemoReader

if TYPE_CHECKING:
    from biblioedge.agent.desk.flow import DeskFlow
    from biblioedge.agent.selfcheck.station import SelfcheckStation


def kiosk_actors(
    config: Callable[[], AgentConfig], emit: Emit, roles: list[Role]
) -> list[Component]:
    """The simulator, the demo reader at a self-check (``selfcheck.demo_reader``) and the
    demo librarian at a desk (``desk.demo_librarian``)."""
    actors: list[Component] = [Simulator(config, emit)]
    cfg = config()
    for role in roles:
        if isinstance(role, SelfcheckRole) and cfg.selfcheck.demo_reader:
            actors.append(DemoReader(_station_of(role)))
        if isinstance(role, DeskRole) and cfg.desk.demo_librarian:
            actors.append(DemoLibrarian(_desk_of(role)))
    return actors


def _station_of(role: SelfcheckRole) -> Callable[[], SelfcheckStation | None]:
    return lambda: role.flow


def _desk_of(role: DeskRole) -> Callable[[], DeskFlow | None]:
    return lambda: role.flow

"""Which roles a kiosk runs: the configured role, when its section is enabled.

The only place that maps a role's name to its package; the runtime sees :class:`Role`s.
"""

from __future__ import annotations

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.desk.role import DeskRole
from biblioedge.agent.exitgate.role import ExitgateRole
from biblioedge.agent.gate.role import GateRole
from biblioedge.agent.role import Role, RoleHost
from biblioedge.agent.selfcheck.role import SelfcheckRole


def roles_for(config: AgentConfig, host: RoleHost) -> list[Role]:
    """The kiosk's roles; none when its section is off (a simulated kiosk has no hardware)."""
    enabled = {
        "gate": config.gate.enabled,
        "selfcheck": config.selfcheck.enabled,
        "desk": config.desk.enabled,
        "exitgate": config.exitgate.enabled,
    }
    makers: dict[str, type[GateRole | SelfcheckRole | DeskRole | ExitgateRole]] = {
        "gate": GateRole,
        "selfcheck": SelfcheckRole,
        "desk": DeskRole,
        "exitgate": ExitgateRole,
    }
    if not enabled[config.role]:
        return []
    return [makers[config.role](host)]

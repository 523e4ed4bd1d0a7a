"""The face models a kiosk reports: the store's active ones, and dlib where the store has
none for a task (the engine falls back to it, models/engine.py), so IT sees on the
dashboard what each kiosk recognises faces with instead of an empty column."""

from __future__ import annotations

from biblioedge.agent.config import AgentConfig

#: what models/engine.py runs when the store has no active model of a task
BUILTIN = {"detect": "dlib-hog@1", "embed": "dlib-resnet@1"}


def uses_faces(cfg: AgentConfig) -> bool:
    if cfg.role in ("gate", "desk"):
        return True
    return cfg.role == "selfcheck" and cfg.selfcheck.camera != "none"


def reported_models(cfg: AgentConfig, active: dict[str, str]) -> dict[str, str]:
    """``active`` (task -> name@version) with the built-in model of each task it lacks, for
    a kiosk that runs the face engine; as it is otherwise."""
    if not uses_faces(cfg):
        return active
    return {**BUILTIN, **active}

"""Health (open: load balancers and the demo poll it) and the fleet's counts."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from biblioedge import __version__
from biblioedge.fleet.backup import last_status
from biblioedge.fleet.backup.journal import shipping_problems
from biblioedge.fleet.bridge import Bridge
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.routers.common import AUTHENTICATED


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: bool
    broker: bool = Field(description="Connected, and publishing (acks, desired state) works")
    problems: list[str] = Field(default_factory=list, description="Why it is degraded")
    backup_age_h: float | None = Field(
        default=None, description="Age of the last backup; null when none is recorded"
    )
    replica: str | None = Field(
        default=None, description="This central replica's id; null: central is one process"
    )
    leads: bool | None = Field(
        default=None, description="Whether this replica leads (runs what must run once)"
    )


class Stats(BaseModel):
    events: int
    devices: int
    quarantined: int


def router(
    repo: Repo, bridge: Bridge | None, cfg: CentralConfig | None = None
) -> tuple[APIRouter, APIRouter]:
    """(the open health route, the authenticated stats route).

    A stale backup degrades the status but not the HTTP code: central still serves, and a
    load balancer must not take it out of rotation for it (503 is for what stops serving)."""
    open_api = APIRouter(prefix="/api/v1", tags=["health"])
    api = APIRouter(prefix="/api/v1", tags=["health"], responses=AUTHENTICATED)

    @open_api.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "degraded: see problems"}},
    )
    def health(response: Response) -> Health:
        problems: list[str] = []
        db_ok = True
        try:
            repo.stats()
        except Exception as exc:  # any failure means the database cannot serve
            db_ok = False
            problems.append(f"database: {type(exc).__name__}")
        broker = ["no bridge"] if bridge is None else bridge.problems()
        problems += [f"broker: {p}" for p in broker]
        if problems:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        backup = last_status(cfg) if cfg is not None else None
        if cfg is not None and cfg.backup.public_key is not None:
            if backup is None:
                problems.append("backup: none made yet")
            elif backup["stale"]:
                problems.append(f"backup: the last one is {backup['age_h']:.0f} h old")
            problems += [f"journal: {p}" for p in shipping_problems(cfg, places=False)]
        return Health(
            status="degraded" if problems else "ok",
            version=__version__,
            database=db_ok,
            broker=not broker,
            problems=problems,
            backup_age_h=backup["age_h"] if backup else None,
            replica=cfg.replica.id if cfg is not None and cfg.replica is not None else None,
            leads=None if bridge is None or bridge.leading is None else bridge.leading.is_set(),
        )

    @api.get("/stats", response_model=Stats)
    def stats() -> Stats:
        return Stats(**repo.stats())

    return open_api, api

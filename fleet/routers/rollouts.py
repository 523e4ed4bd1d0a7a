"""Rollouts: a release to a selection of kiosks in waves, with pause, resume and abort."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from biblioedge.fleet.auth import ADMIN, ANY, Principal
from biblioedge.fleet.rollouts import RolloutError, RolloutPlan, Rollouts, Selector
from biblioedge.fleet.routers.common import AUTHENTICATED, ApiIn, Responses, error
from biblioedge.releases import RELEASE_PATTERN


class RolloutIn(ApiIn):
    kind: Literal["software", "model", "config"] = "software"
    release: str = Field(
        pattern=RELEASE_PATTERN,
        max_length=129,
        description="A signed, published release: a software version; name@version for a "
        "face model or a configuration document",
    )
    selector: Selector = Field(
        default_factory=Selector, description="Sites, roles, devices, labels: all must match"
    )
    plan: RolloutPlan = Field(default_factory=RolloutPlan)


class WaveOut(BaseModel):
    wave: int
    size: int
    states: dict[str, int] = Field(description="pending, updating, committed, failed, …")


class TargetOut(BaseModel):
    device_id: str
    site: str
    wave: int
    state: str
    previous: str | None
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None


class RolloutOut(BaseModel):
    rollout_id: str
    kind: str
    release: str
    selector: dict[str, Any]
    plan: dict[str, Any]
    state: str = Field(description="running, paused, halted, aborted or done")
    wave: int = Field(description="The wave in progress (0 is the canary)")
    halt_reason: str | None
    history: list[dict[str, Any]]
    created_by: str
    created_at: datetime
    updated_at: datetime
    waves: list[WaveOut]
    targets_total: int
    targets: list[TargetOut] | None = None


RolloutId = Annotated[str, PathParam(pattern=r"^[a-z0-9]{1,32}$")]

_REFUSED: Responses = {
    404: error("no such rollout or release, or the selection matches no kiosk"),
    409: error("a kiosk is in another active rollout, or the state forbids it"),
}


def _raise(exc: RolloutError) -> HTTPException:
    return HTTPException(exc.status, exc.detail)


def router(rollouts: Rollouts) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["rollouts"], responses=AUTHENTICATED)

    @api.post("/rollouts", response_model=RolloutOut, status_code=201, responses=_REFUSED)
    async def create(body: RolloutIn, who: Annotated[Principal, ADMIN]) -> dict[str, Any]:
        """Start rolling a release out (admin). The first wave starts within a second."""
        try:
            return await run_in_threadpool(
                rollouts.create, body.kind, body.release, body.selector, body.plan, who.name
            )
        except RolloutError as exc:
            raise _raise(exc) from exc

    @api.get("/rollouts", response_model=list[RolloutOut])
    async def list_rollouts(
        _: Annotated[Principal, ANY], limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[dict[str, Any]]:
        """Newest first, with each wave's progress."""
        return await run_in_threadpool(rollouts.list_all, limit)

    @api.get("/rollouts/{rollout_id}", response_model=RolloutOut, responses=_REFUSED)
    async def get_rollout(
        rollout_id: RolloutId,
        _: Annotated[Principal, ANY],
    ) -> dict[str, Any]:
        """One rollout with every kiosk's state in it."""
        got = await run_in_threadpool(rollouts.get, rollout_id)
        if got is None:
            raise HTTPException(404, "no such rollout")
        return got

    for action in ("pause", "resume", "abort"):

        def make(action: str) -> Any:
            async def act(
                rollout_id: RolloutId, who: Annotated[Principal, ADMIN]
            ) -> dict[str, Any]:
                try:
                    return await run_in_threadpool(rollouts.control, rollout_id, action, who.name)
                except RolloutError as exc:
                    raise _raise(exc) from exc

            act.__doc__ = {
                "pause": "Start no more kiosks; those updating finish (admin).",
                "resume": "Go on with a paused rollout (admin).",
                "abort": "Stop for good; kiosks keep what they run now (admin).",
            }[action]
            return act

        api.add_api_route(
            f"/rollouts/{{rollout_id}}/{action}",
            make(action),
            methods=["POST"],
            response_model=RolloutOut,
            responses=_REFUSED,
            name=f"{action}_rollout",
        )

    return api

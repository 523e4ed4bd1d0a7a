"""The library system as central sees it: the queue of pushes, a resync, and the hook a
library system (a Koha plugin, a cron job) calls when it changed a reader.

The hook carries no state: central asks the library system itself about the reader and
mirrors what it answers, so a forged or replayed call can do no more than an early poll."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from biblioedge.fleet.auth import STAFF, Principal
from biblioedge.fleet.ils.connector import IlsError
from biblioedge.fleet.ils.worker import IlsWorker
from biblioedge.fleet.routers.common import AUTHENTICATED, ApiIn, PatronId, error


class WaitingOut(BaseModel):
    id: int
    patron_id: str
    op: str
    state: str = Field(description="pending (retrying) or held (a person must act)")
    attempts: int
    reason: str | None
    detail: str | None
    next_at: str


class IlsStatusOut(BaseModel):
    pending: int
    held: int
    done: int
    linked: int = Field(description="Readers the library system holds")
    oldest_waiting: str | None
    waiting: list[WaitingOut]


class ResyncIn(ApiIn):
    patron_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")


class ResyncOut(BaseModel):
    queued_updates: int


class ChangedOut(BaseModel):
    patron_id: str
    ils_status: str = Field(description="active, blocked, expired or deleted")


def router(worker: IlsWorker, changed: Callable[[str], Awaitable[None]]) -> APIRouter:
    api = APIRouter(prefix="/api/v1/ils", tags=["library system"], responses=AUTHENTICATED)

    @api.get("/status", response_model=IlsStatusOut)
    async def status(_: Annotated[Principal, STAFF]) -> dict[str, Any]:
        """The queue of pushes to the library system: what waits, and why."""
        summary: dict[str, Any] = await run_in_threadpool(worker.queue.summary)
        return summary

    @api.post("/resync", response_model=ResyncOut)
    async def resync(body: ResyncIn, _: Annotated[Principal, STAFF]) -> ResyncOut:
        """Release held pushes and push every reader (or one) again."""
        n = await run_in_threadpool(worker.queue.resync, body.patron_id)
        return ResyncOut(queued_updates=n)

    @api.post(
        "/patrons/{patron_id}/changed",
        response_model=ChangedOut,
        responses={
            404: error("central has not linked this reader to the library system"),
            502: error("the library system did not answer usably"),
        },
    )
    async def patron_changed(patron_id: PatronId, _: Annotated[Principal, STAFF]) -> ChangedOut:
        """The library system changed this reader: central asks it now (status back without
        waiting for the poll) and the reader's gates hear of a block at once."""
        try:
            found = await run_in_threadpool(worker.check_one, patron_id)
        except IlsError as exc:
            raise HTTPException(502, f"{exc.reason}: {exc.detail}") from exc
        if found is None:
            raise HTTPException(404, "not linked to the library system")
        state, site = found
        if site:
            await changed(site)
        return ChangedOut(patron_id=patron_id, ils_status=state)

    return api

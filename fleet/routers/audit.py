"""The audit trail: who changed what through the API, and when (admins read it)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from biblioedge.fleet.auth import ADMIN, Audit, Principal
from biblioedge.fleet.routers.common import AUTHENTICATED


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    method: str
    path: str
    status: int


def router(audit: Audit) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["audit"], responses=AUTHENTICATED)

    @api.get("/audit", response_model=list[AuditOut])
    def list_audit(
        _: Annotated[Principal, ADMIN],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before: Annotated[
            int | None, Query(ge=1, le=2**62, description="id of the last row seen")
        ] = None,
    ) -> list[dict[str, Any]]:
        """Newest first."""
        return audit.list(limit, before)

    return api

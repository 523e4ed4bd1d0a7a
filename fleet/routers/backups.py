"""Central's continuity as the dashboard shows it: the last backup, its copies, the last
restore drill (``fleet.backup.status``). Admins read it: paths and stores say where the
library's backups are kept."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from biblioedge.fleet.auth import ADMIN, Principal
from biblioedge.fleet.backup.status import continuity_status
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.routers.common import AUTHENTICATED


class Place(BaseModel):
    kind: str = Field(description="dir (a directory, another disk or a mount) or s3")
    where: str = Field(description="The directory, or the store's URL, bucket and prefix")


class Copy(Place):
    ok: bool
    state: str | None = Field(default=None, description="ok, or failed: the reason")
    attempts: int = Field(default=1, description="Tries it took (a copy is retried)")


class LastBackup(BaseModel):
    backup_id: str | None = None
    created: str
    age_h: float
    stale: bool = Field(description="Older than backup.stale_after_h")
    bytes: int | None = None
    files: int | None = None
    events: int | None = None
    path: str | None = None
    copies: list[Copy]


class Drill(BaseModel):
    at: str | None = None
    age_h: float | None = None
    ok: bool = False
    error: str | None = None
    backup: str | None = None
    backup_id: str | None = None
    created: str | None = Field(default=None, description="When the drilled backup was made")
    events: int | None = None
    files: int | None = None


class Restore(BaseModel):
    restored_at: str | None = None
    backup_id: str | None = None
    created: str | None = None
    events: int | None = None
    from_: str | None = Field(default=None, alias="from")
    journal: dict[str, Any] | None = Field(
        default=None, description="Central's changes after the backup: replayed, to_seq, read"
    )


class JournalPlace(Place):
    ok: bool
    state: str | None = Field(default=None, description="ok, or failed: the reason")


class Journal(BaseModel):
    at: str | None = Field(
        default=None,
        description="When the shipper's last round began: what central committed before it "
        "is in every place unless pending says otherwise",
    )
    shipped_to: int | None = Field(
        default=None, description="The last change record in every place (its number)"
    )
    pending: int = Field(default=0, description="Change records not yet in every place")
    oldest_pending_s: float | None = Field(
        default=None, description="How long the oldest of them has waited"
    )
    places: list[JournalPlace] = []


class BackupStatus(BaseModel):
    configured: bool = Field(description="backup.public_key is set: central makes backups")
    every_h: float = Field(description="Central's own schedule (0: cron or `backup run`)")
    stale_after_h: float
    places: list[Place] = Field(description="Where backups are written and copied")
    last: LastBackup | None
    last_drill: Drill | None = Field(description="The last `central backup verify --config`")
    last_restore: Restore | None
    journal: Journal | None = Field(
        default=None,
        description="Changes made at central after the last backup, shipped to every place "
        "within about backup.journal_ship_s (replayed by `central restore`)",
    )
    problems: list[str] = Field(description="What IT should act on, in plain words")


def router(cfg: CentralConfig) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["backups"], responses=AUTHENTICATED)

    @api.get("/backups/status", response_model=BackupStatus, response_model_by_alias=True)
    def backup_status(_: Annotated[Principal, ADMIN]) -> dict[str, Any]:
        """The last backup (age, size, copies and whether each made it), the last restore
        drill and the last restore."""
        return continuity_status(cfg)

    return api

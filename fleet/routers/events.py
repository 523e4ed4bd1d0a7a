"""Events the kiosks sent, paged by cursor, and the quarantine of those central refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from biblioedge.fleet.auth import ANY, Principal
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.routers.common import AUTHENTICATED, IsoDateTime, unprocessable
from biblioedge.protocol import ID_PATTERN, MAX_INT, YEARS


class EventOut(BaseModel):
    event_id: str
    device_id: str
    site: str
    type: str
    seq: int
    occurred_at: datetime
    received_at: datetime
    payload: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null at end")


class QuarantinedOut(BaseModel):
    id: int
    device_id: str
    site: str
    event_id: str | None
    reason: str
    detail: str
    raw: str = Field(
        description="The message as received (JSON text); admins only, since a refused "
        'message may carry anything a device sent, personal data included (others get "")'
    )
    received_at: datetime


def _window(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None] | None:
    """(since, until) in UTC, or None when no event can fall between them. A bound outside
    the years events can carry is no bound (since 1900 is "from the start"), so no valid
    timestamp is refused and none overflows on conversion."""
    lo, hi = YEARS
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise unprocessable(name, f"{name} needs a timezone, e.g. 2026-11-21T00:00:00Z")
    if (since is not None and since.year > hi) or (until is not None and until.year < lo):
        return None
    return (
        since.astimezone(UTC) if since is not None and since.year >= lo else None,
        until.astimezone(UTC) if until is not None and until.year <= hi else None,
    )


#: Event types about one reader: a viewer sees which reader and which registration, not how
#: the reader was checked, what was consented, nor whether face templates were taken
READER_EVENTS = frozenset(
    {"desk.registration", "reader.registered", "consent.recorded", "card.issued"}
)
_VIEWER_KEYS = ("registration_id", "patron_id", "status")


def _for_viewer(row: dict[str, Any]) -> dict[str, Any]:
    if row.get("type") not in READER_EVENTS or not isinstance(row.get("payload"), dict):
        return row
    payload = row["payload"]
    return {**row, "payload": {k: payload[k] for k in _VIEWER_KEYS if k in payload}}


def router(repo: Repo) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["events"], responses=AUTHENTICATED)

    @api.get("/events", response_model=EventPage)
    def list_events(
        who: Annotated[Principal, ANY],
        device_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        site: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        type: Annotated[
            str | None,
            Query(pattern=r"^[a-z0-9_.]{1,64}$", description="Event type, e.g. gate.decision"),
        ] = None,
        since: Annotated[IsoDateTime | None, Query(description="occurred_at >= since")] = None,
        until: Annotated[IsoDateTime | None, Query(description="occurred_at < until")] = None,
        cursor: Annotated[
            str | None,
            Query(pattern=r"^[0-9]{1,19}$", description="next_cursor of the previous page"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        order: Literal["newest", "oldest"] = "newest",
    ) -> EventPage:
        cur = int(cursor) if cursor is not None else None
        if cur is not None and cur > MAX_INT:
            raise unprocessable("cursor", "cursor is not one this API returned")
        window = _window(since, until)
        if window is None:
            return EventPage(items=[], next_cursor=None)
        lo, hi = window
        rows, nxt = repo.list_events(
            device_id=device_id,
            site=site,
            type_=type,
            since=lo,
            until=hi,
            cursor=cur,
            limit=limit,
            newest_first=order == "newest",
        )
        if who.role == "viewer":
            rows = [_for_viewer(r) for r in rows]
        return EventPage(
            items=[EventOut.model_validate(r) for r in rows],
            next_cursor=str(nxt) if nxt is not None else None,
        )

    @api.get("/quarantine", response_model=list[QuarantinedOut])
    def list_quarantine(
        who: Annotated[Principal, ANY], limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        """Events central refused to store as normal events, with the reason."""
        rows = repo.list_quarantine(limit)
        if who.role != "admin":
            rows = [{**r, "raw": ""} for r in rows]
        return rows

    return api

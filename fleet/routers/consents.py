"""Consent to biometric processing: recorded with the text version shown, withdrawn on request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from biblioedge.fleet.auth import ANY, STAFF, Principal
from biblioedge.fleet.cards import CardError, Cards
from biblioedge.fleet.readers import Readers, UnknownReader
from biblioedge.fleet.routers.common import AUTHENTICATED, ApiIn, PatronId, Responses, error
from biblioedge.protocol import ID_PATTERN, FacePurpose

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class ConsentIn(ApiIn):
    purpose: FacePurpose = "face_gate"
    text_version: str = Field(
        min_length=1, max_length=32, pattern=_PRINTABLE, description="Version of the text shown"
    )
    granted: bool
    librarian: str = Field(min_length=1, max_length=64, pattern=_PRINTABLE)
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[\x21-\x7e]+$",
        description="Printable ASCII; the same key for the same reader returns the first record",
    )
    sites: list[Annotated[str, Field(pattern=ID_PATTERN)]] | None = Field(
        default=None,
        max_length=64,
        description="The branches whose kiosks may use the face for this purpose; "
        "empty or absent: every branch of the library",
    )


class ConsentOut(BaseModel):
    id: int
    patron_id: str
    purpose: str
    text_version: str
    granted: bool
    librarian: str
    idempotency_key: str | None
    recorded_at: datetime
    withdrawn_at: datetime | None
    sites: list[str] | None = Field(description="Branches it covers; null: every branch")


class WithdrawnOut(BaseModel):
    withdrawn: int = Field(description="Consent records withdrawn")


_NOT_FOUND: Responses = {404: error("no such reader")}


def router(crd: Cards, rdr: Readers, changed: Callable[[str], Awaitable[None]]) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["consent"], responses=AUTHENTICATED)

    @api.post(
        "/readers/{patron_id}/consents",
        status_code=201,
        response_model=ConsentOut,
        responses={**_NOT_FOUND, 409: error("the idempotency key was used for another reader")},
    )
    async def record_consent(
        patron_id: PatronId, body: ConsentIn, _: Annotated[Principal, STAFF]
    ) -> dict[str, Any]:
        """Record consent; the same idempotency key returns the first record. A face consent
        reaches the kiosks of the branches it names (every branch when it names none) at
        once; each kiosk uses faces only for its own purpose."""
        try:
            record: dict[str, Any] = await run_in_threadpool(
                crd.record_consent, patron_id, **body.model_dump()
            )
            site = str(rdr.get(patron_id)["site"])
        except UnknownReader as exc:
            raise HTTPException(404, f"no reader {patron_id}") from exc
        except CardError as exc:
            raise HTTPException(409, str(exc)) from exc
        await changed(site)
        return record

    @api.get("/readers/{patron_id}/consents", response_model=list[ConsentOut])
    def list_consents(patron_id: PatronId, who: Annotated[Principal, ANY]) -> list[dict[str, Any]]:
        """A viewer sees which purposes were granted and when, not which librarian recorded
        them (staff names are for staff)."""
        rows = crd.consents_of(patron_id)
        if who.role == "viewer":
            rows = [{**r, "librarian": ""} for r in rows]
        return rows

    @api.post(
        "/readers/{patron_id}/consents/withdraw", response_model=WithdrawnOut, responses=_NOT_FOUND
    )
    async def withdraw_consent(
        patron_id: PatronId,
        _: Annotated[Principal, STAFF],
        purpose: Annotated[
            FacePurpose, Query(description="face_gate (default) or face_selfcheck")
        ] = "face_gate",
    ) -> WithdrawnOut:
        """Withdraw one face consent: the site's kiosks drop the templates for that purpose at
        the next sync; with no face purpose left, templates are erased here too."""
        try:
            n = await run_in_threadpool(crd.withdraw, patron_id, purpose)
            site = str(rdr.get(patron_id)["site"])
        except UnknownReader as exc:
            raise HTTPException(404, f"no reader {patron_id}") from exc
        await changed(site)
        return WithdrawnOut(withdrawn=n)

    return api

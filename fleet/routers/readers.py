"""Readers, their face templates and card revocations; every change reaches the site's gates.

What a caller sees of a reader depends on its role: librarians and admins get the name (opened
from its seal), the greeting gates show, the barcode and how many templates are held; a viewer
gets the pseudonymous record only (patron id, site, status, dates), since patron numbers are
sequential and anyone with a viewer token could otherwise read the names of them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from biblioedge.fleet.auth import ANY, STAFF, Principal
from biblioedge.fleet.cards import CardError
from biblioedge.fleet.lifecycle import Lifecycle
from biblioedge.fleet.readers import (
    MAX_TEMPLATES,
    BarcodeTaken,
    ReaderError,
    Readers,
    UnknownReader,
    WrongLength,
)
from biblioedge.fleet.routers.cards import CardOut
from biblioedge.fleet.routers.common import (
    AUTHENTICATED,
    NAME_PATTERN,
    ApiIn,
    PatronId,
    Responses,
    SiteId,
    error,
    unprocessable,
)
from biblioedge.protocol import ID_PATTERN

Changed = Callable[[str], Awaitable[None]]


class ReaderIn(ApiIn):
    site: str = Field(pattern=ID_PATTERN)
    display_name: str = Field(
        min_length=1,
        max_length=200,
        pattern=NAME_PATTERN,
        description="The reader's name, family name first; normalized to NFC, stored sealed",
    )
    status: Literal["active", "blocked", "expired"] = "active"
    expires_at: date | None = Field(default=None, description="Card expiry")
    barcode: str | None = Field(default=None, max_length=64, pattern=r"^[\x21-\x7e]*$")


class ReaderOut(BaseModel):
    """A reader as librarians and admins see it."""

    patron_id: str
    site: str
    display_name: str = Field(description="The reader's name")
    greeting: str = Field(description="What gates show: the given name (the name's last word)")
    status: str
    expires_at: str
    barcode: str | None
    templates: dict[str, int] = Field(description="Templates held per model (never the values)")
    updated_at: datetime


class ReaderSummaryOut(BaseModel):
    """A reader as a viewer sees it: no name, no barcode, nothing about the face."""

    model_config = ConfigDict(extra="forbid")

    patron_id: str
    site: str
    status: str
    expires_at: str
    updated_at: datetime


def reader_for(who: Principal, doc: dict[str, Any]) -> ReaderOut | ReaderSummaryOut:
    """What ``who``'s role may see of the reader ``doc`` (Readers.get)."""
    if who.role in ("admin", "librarian"):
        return ReaderOut.model_validate(doc)
    return ReaderSummaryOut.model_validate({k: doc[k] for k in ReaderSummaryOut.model_fields})


#: One embedding. ``not all zeros`` is in the schema too; the values are normalized here.
Template = Annotated[
    list[Annotated[float, Field(ge=-1e6, le=1e6)]],
    Field(
        min_length=16,
        max_length=4096,
        json_schema_extra={"not": {"items": {"const": 0}}},
    ),
]


class TemplatesIn(ApiIn):
    model: str = Field(
        min_length=1, max_length=80, pattern=r"^[\x21-\x7e]+$", description="name@version"
    )
    templates: list[Template] = Field(
        min_length=1,
        max_length=MAX_TEMPLATES,
        description="Embeddings of one model, all of its length (409 if not)",
    )


class TemplatesOut(BaseModel):
    patron_id: str
    model: str
    templates: int


class RevokeIn(ApiIn):
    jti: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")


class RevokedOut(BaseModel):
    revoked: str


class RenewIn(ApiIn):
    valid_days: int = Field(
        default=365 * 4, ge=1, le=3650, description="The new expiry: this many days from today"
    )


class ReplaceIn(ApiIn):
    barcode: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[\x21-\x7e]+$",
        description="The new card's barcode; the lost card's barcode stops working either way",
    )
    valid_days: int = Field(default=365 * 4, ge=1, le=3650)


class LifeOut(BaseModel):
    """What a renewal or replacement did: the new card (shown once: central keeps no token)
    and the cards revoked, which every kiosk refuses from its next sync."""

    patron_id: str
    site: str = Field(description="The reader's home branch")
    expires_at: str
    card: CardOut | None
    revoked: list[str] = Field(description="Card ids revoked")


class SiteGalleryOut(BaseModel):
    site: str
    version: int


_NOT_FOUND: Responses = {404: error("no such reader")}


def router(reg: Readers, changed: Changed, life: Lifecycle | None = None) -> APIRouter:
    """``changed(site)`` brings the kiosks up to date (every branch's: readers are the
    library's); ``life`` (with cards) adds renewal and replacement, and makes erasure
    revoke the cards and reach the library system."""
    api = APIRouter(prefix="/api/v1", tags=["readers"], responses=AUTHENTICATED)

    def site_of(patron_id: str) -> str:
        try:
            return str(reg.get(patron_id)["site"])
        except UnknownReader as exc:
            raise HTTPException(404, f"no reader {patron_id}") from exc

    @api.put(
        "/readers/{patron_id}",
        response_model=ReaderOut,
        responses={409: error("the barcode is another reader's")},
    )
    async def put_reader(
        patron_id: PatronId, body: ReaderIn, _: Annotated[Principal, STAFF]
    ) -> dict[str, Any]:
        try:
            fields = body.model_dump()
            fields["expires_at"] = body.expires_at.isoformat() if body.expires_at else ""
            doc = await run_in_threadpool(lambda: reg.upsert(patron_id, **fields))
        except BarcodeTaken as exc:
            raise HTTPException(409, str(exc)) from exc
        except ReaderError as exc:
            raise unprocessable("body", str(exc), "body") from exc
        await changed(body.site)
        return doc

    @api.get(
        "/readers/{patron_id}",
        response_model=ReaderOut | ReaderSummaryOut,
        responses=_NOT_FOUND,
    )
    def get_reader(
        patron_id: PatronId, who: Annotated[Principal, ANY]
    ) -> ReaderOut | ReaderSummaryOut:
        """Librarians and admins: the reader, its name and how many templates per model
        (never the templates). Viewers: patron id, site, status and dates only."""
        try:
            return reader_for(who, reg.get(patron_id))
        except UnknownReader as exc:
            raise HTTPException(404, f"no reader {patron_id}") from exc

    @api.put(
        "/readers/{patron_id}/templates",
        response_model=TemplatesOut,
        responses={**_NOT_FOUND, 409: error("the templates' length is not the model's")},
    )
    async def put_templates(
        patron_id: PatronId, body: TemplatesIn, _: Annotated[Principal, STAFF]
    ) -> TemplatesOut:
        """Replace the reader's templates of one model (lengths must match the model's)."""
        try:
            n = await run_in_threadpool(reg.put_templates, patron_id, body.model, body.templates)
        except UnknownReader as exc:
            raise HTTPException(404, f"no reader {patron_id}") from exc
        except WrongLength as exc:
            raise HTTPException(409, str(exc)) from exc
        except ReaderError as exc:
            raise unprocessable("templates", str(exc), "body") from exc
        await changed(site_of(patron_id))
        return TemplatesOut(patron_id=patron_id, model=body.model, templates=n)

    @api.delete("/readers/{patron_id}", status_code=204, responses=_NOT_FOUND)
    async def erase_reader(patron_id: PatronId, _: Annotated[Principal, STAFF]) -> Response:
        """Erase on request (a reader leaving): the reader and every template, here and at
        every branch's kiosks; her cards revoked; the library system told (where one is)."""
        site = site_of(patron_id)
        try:
            await run_in_threadpool(reg.erase if life is None else life.leave, patron_id)
        except UnknownReader as exc:
            raise HTTPException(404, f"no reader {patron_id}") from exc
        await changed(site)
        return Response(status_code=204)

    @api.post(
        "/readers/{patron_id}/revocations",
        status_code=201,
        response_model=RevokedOut,
        responses=_NOT_FOUND,
    )
    async def revoke(
        patron_id: PatronId, body: RevokeIn, _: Annotated[Principal, STAFF]
    ) -> RevokedOut:
        """Revoke one library card (lost or stolen): gates refuse its QR from the next sync."""
        site = site_of(patron_id)
        try:
            await run_in_threadpool(reg.revoke_card, body.jti, patron_id)
        except UnknownReader as exc:
            raise HTTPException(404, f"no reader {patron_id}") from exc
        await changed(site)
        return RevokedOut(revoked=body.jti)

    if life is not None:

        @api.post(
            "/readers/{patron_id}/renewal",
            response_model=LifeOut,
            responses=_NOT_FOUND,
        )
        async def renew(
            patron_id: PatronId, body: RenewIn, _: Annotated[Principal, STAFF]
        ) -> LifeOut:
            """Renew: a new expiry (pushed to the library system) and a card valid to it; an
            expired reader is active again, a blocked one stays blocked."""
            try:
                out = await run_in_threadpool(lambda: life.renew(patron_id, days=body.valid_days))
            except UnknownReader as exc:
                raise HTTPException(404, f"no reader {patron_id}") from exc
            await changed(out.site)
            return LifeOut.model_validate(out, from_attributes=True)

        @api.post(
            "/readers/{patron_id}/replacement",
            response_model=LifeOut,
            responses={**_NOT_FOUND, 409: error("the barcode is another reader's")},
        )
        async def replace(
            patron_id: PatronId, body: ReplaceIn, _: Annotated[Principal, STAFF]
        ) -> LifeOut:
            """Lost or stolen card: every live card revoked (refused at every kiosk from
            its next sync), the old barcode dropped, a new card issued."""
            try:
                out = await run_in_threadpool(
                    lambda: life.replace(patron_id, barcode=body.barcode, days=body.valid_days)
                )
            except UnknownReader as exc:
                raise HTTPException(404, f"no reader {patron_id}") from exc
            except BarcodeTaken as exc:
                raise HTTPException(409, str(exc)) from exc
            except (ReaderError, CardError) as exc:
                raise unprocessable("body", str(exc), "body") from exc
            await changed(out.site)
            return LifeOut.model_validate(out, from_attributes=True)

    @api.get("/sites/{site}/gallery", response_model=SiteGalleryOut)
    def site_gallery(site: SiteId) -> SiteGalleryOut:
        return SiteGalleryOut(site=site, version=reg.site_version(site))

    return api

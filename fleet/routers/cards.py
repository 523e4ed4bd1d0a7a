"""Library cards: the keys gates verify card QR codes with, and issuing a reader's card."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from biblioedge.fleet.auth import ADMIN, STAFF, Principal
from biblioedge.fleet.cards import CardError, Cards
from biblioedge.fleet.readers import UnknownReader
from biblioedge.fleet.routers.common import AUTHENTICATED, ApiIn, PatronId, error


class CardIn(ApiIn):
    valid_days: int = Field(default=365 * 4, ge=1, le=3650)


class CardOut(BaseModel):
    jti: str = Field(description="Card id (revoke with it)")
    token: str = Field(description="What the card's QR code holds")
    kid: str
    expires_at: datetime


class ActiveKeyOut(BaseModel):
    active: str


def router(crd: Cards, everywhere: Callable[[], Awaitable[None]]) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["cards"], responses=AUTHENTICATED)

    @api.get("/card-keys", response_model=dict[str, str])
    def list_card_keys() -> dict[str, str]:
        """Public keys gates verify card QR codes with (kid -> base64url)."""
        return crd.public_keys()

    @api.post("/card-keys/rotate", status_code=201, response_model=ActiveKeyOut)
    async def rotate_card_key(_: Annotated[Principal, ADMIN]) -> ActiveKeyOut:
        """A new signing key for new cards; cards signed before stay valid until retired."""
        kid = await run_in_threadpool(crd.rotate)
        await everywhere()
        return ActiveKeyOut(active=kid)

    @api.delete(
        "/card-keys/{kid}",
        status_code=204,
        responses={409: error("no such key, or it is the active one")},
    )
    async def retire_card_key(
        kid: Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,32}$")], _: Annotated[Principal, ADMIN]
    ) -> Response:
        """Retire a key: every card it signed stops opening gates."""
        try:
            await run_in_threadpool(crd.retire, kid)
        except CardError as exc:
            raise HTTPException(409, str(exc)) from exc
        await everywhere()
        return Response(status_code=204)

    @api.post(
        "/readers/{patron_id}/cards",
        status_code=201,
        response_model=CardOut,
        responses={404: error("no such reader")},
    )
    def issue_card(
        patron_id: PatronId, body: CardIn, _: Annotated[Principal, STAFF]
    ) -> dict[str, object]:
        """A signed library-card token for the reader's QR (verified offline at gates)."""
        try:
            return crd.issue_card(patron_id, body.valid_days)
        except UnknownReader as exc:
            raise HTTPException(404, f"no reader {patron_id}") from exc

    return api

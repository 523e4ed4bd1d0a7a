"""A card on the phone for a reader who already has one (staff): a replacement whose new card
is offered to her phone (``fleet/phonecard.py``).

The desk offers the link when it issues a card; this is for the other cases (a card printed
while the desk was offline, a reader who asks later, a phone that lost the saved image).
Central keeps no readable token, so it cannot offer the card she holds: it issues a new one
and **revokes every live card**, the printed one too, at every kiosk from its next sync (the
librarian prints the new card if she wants one on paper).

Two transactions: the replacement (``Lifecycle.replace``), then the offer. If the offer
fails, the answer is an error and asking again makes another replacement: never a card
without its revocations.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from biblioedge.fleet.auth import STAFF, Principal
from biblioedge.fleet.lifecycle import Lifecycle
from biblioedge.fleet.phonecard import PhoneCards
from biblioedge.fleet.readers import UnknownReader
from biblioedge.fleet.routers.common import AUTHENTICATED, PatronId, error


class PhoneCardOut(BaseModel):
    patron_id: str
    link: str = Field(description="Her phone opens it (show it as a QR); it holds the key")
    jti: str = Field(description="The new card's id")
    expires_at: str
    revoked: list[str] = Field(description="Card ids revoked, the printed one included")


def router(
    life: Lifecycle, phone: PhoneCards, changed: Callable[[str], Awaitable[None]]
) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["readers"], responses=AUTHENTICATED)

    @api.post(
        "/readers/{patron_id}/phone-card",
        status_code=201,
        response_model=PhoneCardOut,
        responses={404: error("no such reader")},
    )
    async def phone_card(patron_id: PatronId, _: Annotated[Principal, STAFF]) -> dict[str, Any]:
        """A new card for her phone: every live card revoked, the new one's link returned
        once (central cannot read it back)."""

        def made() -> dict[str, Any]:
            out = life.replace(patron_id)
            card = out.card or {}
            with life.readers.begin() as conn:
                name = life.readers.name_of(conn, patron_id)
                link = phone.offer_in(conn, patron_id, name, card)
            return {
                "patron_id": patron_id,
                "site": out.site,
                "link": link,
                "jti": card["jti"],
                "expires_at": str(card["expires_at"])[:10],
                "revoked": out.revoked,
            }

        try:
            doc = await run_in_threadpool(made)
        except UnknownReader as exc:
            raise HTTPException(404, f"no reader {patron_id}") from exc
        await changed(str(doc.pop("site")))
        return doc

    return api

"""The public pages (no account, no sign-in): register from home (``/register``) and the card
on the phone (``/the/card/<pickup>/<key>``).

``POST /register`` is central's first public write endpoint, so it is bounded every way:

- **size**: a body over ``MAX_FORM_BYTES`` (4 KiB) is refused 413 before it is read further;
  only ``application/x-www-form-urlencoded`` is read, at most ten fields;
- **rate**: every submission (accepted or not) counts against the client's address (an IPv6
  client by its /64, ``fleet.throttle``): ``per_address`` an hour, then 429 with
  ``Retry-After``; a flood from many addresses meets ``max_waiting`` (503) and never pushes
  out a reader's pre-registration that waits;
- **nothing readable afterwards**: the answer is her QR, once; no route reads a
  pre-registration back, and the code names nothing personal.

A refused form is shown again with the reason in her language (Vietnamese first), with what
she typed (escaped), status 422. The phone card's link carries the key that opens it
(``fleet/phonecard.py``); a wrong or expired link gets one answer (404), and an address that
keeps trying wrong links is throttled like wrong API tokens.
"""

from __future__ import annotations

import base64
import urllib.parse
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import segno
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from biblioedge.fleet.phonecard import PATH as CARD_PATH
from biblioedge.fleet.phonecard import PhoneCards
from biblioedge.fleet.prereg import FormError, Preregistrations, check_form
from biblioedge.fleet.prereg_text import Lang, catalogue
from biblioedge.fleet.throttle import FailureThrottle, client_key
from biblioedge.fleet.walletpass import WalletSigner

MAX_FORM_BYTES = 4096
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _env() -> jinja2.Environment:
    folder = Path(str(resources.files("biblioedge.fleet").joinpath("templates")))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder), autoescape=True, trim_blocks=True
    )


def _lang(request: Request, fields: dict[str, list[str]] | None = None) -> Lang:
    wanted = request.query_params.get("lang") or (fields or {}).get("lang", [""])[0]
    return "en" if wanted == "en" else "vi"


async def _read_bounded(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is over ``limit`` bytes (stops reading there)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


def router(
    prereg: Preregistrations,
    phone: PhoneCards,
    *,
    per_address: int,
    max_waiting: int,
    expire_days: int,
    wallet: WalletSigner | None = None,
) -> APIRouter:
    ui = APIRouter(include_in_schema=False)
    env = _env()
    submissions = FailureThrottle(per_address, 3600.0, 3600.0, 24 * 3600.0, hold_s=0.0)
    wrong_links = FailureThrottle(20, 600.0, 600.0, 24 * 3600.0)

    def page(name: str, lang: Lang, status: int = 200, **values: Any) -> HTMLResponse:
        t = catalogue(lang)
        html = env.get_template(name).render(t=t, lang=lang, days=expire_days, **values)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def form(lang: Lang, status: int = 200, reason: str = "", **values: Any) -> HTMLResponse:
        message = catalogue(lang).get(reason, "").format(**values) if reason else ""
        return page("prereg.html", lang, status, reason=message, **values)

    @ui.get("/register/style.css")
    def style() -> Response:
        data = resources.files("biblioedge.fleet").joinpath("static", "prereg.css").read_bytes()
        return Response(data, media_type="text/css", headers={"Cache-Control": "max-age=300"})

    @ui.get("/register", response_class=HTMLResponse)
    def register_page(request: Request) -> HTMLResponse:
        return form(_lang(request), entered={})

    @ui.post("/register", response_class=HTMLResponse)
    async def register(request: Request) -> HTMLResponse:
        address = client_key(request.client.host if request.client else None)
        wait = submissions.retry_after(address)
        if wait is not None:
            response = form(_lang(request), 429, "too_many", entered={}, wait=-(-wait // 60))
            response.headers["Retry-After"] = str(wait)
            return response
        submissions.failed(address)  # every submission counts, accepted or not
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await _read_bounded(request, MAX_FORM_BYTES)
        if body is None:
            return form(_lang(request), 413, "form_size", entered={})
        try:
            if kind != "application/x-www-form-urlencoded":
                raise ValueError(kind)
            fields = urllib.parse.parse_qs(
                body.decode("utf-8"), keep_blank_values=True, max_num_fields=10
            )
        except (UnicodeDecodeError, ValueError):
            return form(_lang(request), 422, "form_fields", entered={})
        lang = _lang(request, fields)
        entered = {k: v[0][:120] for k, v in fields.items() if k in ("name", "phone", "email")}
        try:
            checked = check_form(fields)
            issued = await run_in_threadpool(prereg.create, checked, max_waiting)
        except FormError as exc:
            status = 503 if exc.reason == "full" else 422
            return form(lang, status, exc.reason, entered=entered, field=exc.field)
        qr = segno.make(issued.token, error="m")
        png = qr.png_data_uri(scale=8, border=4)
        date = issued.expires_at.strftime("%d/%m/%Y" if lang == "vi" else "%Y-%m-%d")
        return page(
            "prereg_done.html",
            lang,
            201,
            svg=qr.svg_inline(scale=6, border=4),
            png=png,
            token=issued.token,
            date=date,
        )

    @ui.get(CARD_PATH + "/{pickup_id}/{secret}", response_class=HTMLResponse)
    async def phone_card(request: Request, pickup_id: str, secret: str) -> HTMLResponse:
        address = client_key(request.client.host if request.client else None)
        lang = _lang(request)
        wait = wrong_links.retry_after(address)
        if wait is not None:
            response = page("phone_card.html", lang, 429, card=None)
            response.headers["Retry-After"] = str(wait)
            return response
        card = await run_in_threadpool(phone.open, pickup_id, secret)
        if card is None:
            wrong_links.failed(address)
            return page("phone_card.html", lang, 404, card=None)
        png = "data:image/png;base64," + base64.b64encode(card.qr_png()).decode()
        expires = card.expires_at
        if lang == "vi" and len(expires) == 10:
            expires = f"{expires[8:10]}/{expires[5:7]}/{expires[0:4]}"
        return page(
            "phone_card.html",
            lang,
            card=card,
            svg=card.qr_svg(),
            png=png,
            exp=expires,
            wallet=wallet is not None,
            card_path=f"{CARD_PATH}/{pickup_id}/{secret}",
        )

    @ui.get(CARD_PATH + "/{pickup_id}/{secret}/card.pkpass")
    async def wallet_pass(request: Request, pickup_id: str, secret: str) -> Response:
        """The card as an Apple Wallet pass, where the library configured its certificate."""
        address = client_key(request.client.host if request.client else None)
        wait = wrong_links.retry_after(address)
        if wait is not None:
            return Response(status_code=429, headers={"Retry-After": str(wait), **_HEADERS})
        card = await run_in_threadpool(phone.open, pickup_id, secret)
        if card is None or wallet is None:
            if card is None:
                wrong_links.failed(address)
            return Response(status_code=404, headers=_HEADERS)
        data = await run_in_threadpool(wallet.make, card, _lang(request))
        return Response(
            data,
            media_type="application/vnd.apple.pkpass",
            headers={
                **_HEADERS,
                "Content-Disposition": f'attachment; filename="the-{card.patron_id}.pkpass"',
            },
        )

    return ui

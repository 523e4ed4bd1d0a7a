"""The librarian's pages (``/dashboard/readers``, ``/dashboard/cases``): find one reader, see
her card and consents, withdraw a consent, print her card again or replace a lost one, and
mark the staff cases kiosks send as handled, with who did.

Librarians and admins only (a viewer sees the fleet, not readers). A reader is found by one
exact key posted in a form (a scanned CCCD's ID number never goes into a URL or a log); the
pages never list readers. Every action carries the session's form token and lands in the
audit trail. The messages a page shows after an action are keys of its own catalogue, so a
crafted ``?done=`` shows nothing.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from biblioedge.fleet.auth import Audit, Principal
from biblioedge.fleet.dashboard import Sessions
from biblioedge.fleet.dashboard_text import Lang
from biblioedge.fleet.dashboard_text import catalogue as dashboard_words
from biblioedge.fleet.librarian import LibrarianDesk, NotFound
from biblioedge.fleet.librarian_text import catalogue
from biblioedge.fleet.readers import UnknownReader
from biblioedge.fleet.routers.reports_page import _env
from biblioedge.protocol import FACE_PURPOSES, PATRON_PATTERN

COOKIE = "be_session"
LANG_COOKIE = "be_lang"
STAFF_ROLES = ("admin", "librarian")
DONE = ("withdrawn", "handled", "already")
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_PATRON = re.compile(PATRON_PATTERN)
_EVENT = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


async def _form(request: Request, limit: int = 4096) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, "form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, "not a form") from exc
    return {k: v[0] for k, v in fields.items() if v}


def router(sessions: Sessions, desk: LibrarianDesk, audit: Audit) -> APIRouter:
    ui = APIRouter(prefix="/dashboard", include_in_schema=False)
    env = _env()

    def lang_of(request: Request) -> Lang:
        wanted = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
        return "en" if wanted == "en" else "vi"

    def page(
        request: Request, name: str, who: Principal, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        lang = lang_of(request)
        html = env.get_template(name).render(
            lang=lang,
            t=dashboard_words(lang),
            w=catalogue(lang),
            who=who,
            csrf=sessions.csrf(request.cookies.get(COOKIE, "")),
            **ctx,
        )
        resp = HTMLResponse(html, status_code=status, headers=_HEADERS)
        if request.query_params.get("lang") in ("vi", "en"):
            resp.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict")
        return resp

    def staff(request: Request) -> Principal | Response:
        """The signed-in librarian or admin; else the sign-in page or a refusal page."""
        who = sessions.check(request.cookies.get(COOKIE))
        if who is None:
            return RedirectResponse("/dashboard/login", status_code=303)
        if who.role not in STAFF_ROLES:
            return page(request, "librarian_refused.html", who, status=403)
        return who

    async def acting(request: Request) -> tuple[Principal, dict[str, str]]:
        who = sessions.check(request.cookies.get(COOKIE))
        if who is None:
            raise HTTPException(401, "sign in first")
        form = await _form(request)
        if form.get("csrf") != sessions.csrf(request.cookies.get(COOKIE, "")):
            raise HTTPException(403, "the form is not from this session")
        if who.role not in STAFF_ROLES:
            await run_in_threadpool(audit.record, who, "POST", request.url.path, 403)
            raise HTTPException(403, "librarians and admins only")
        return who, form

    async def done(who: Principal, request: Request, to: str) -> RedirectResponse:
        await run_in_threadpool(audit.record, who, "POST", request.url.path, 303)
        return RedirectResponse(to, status_code=303)

    def done_key(request: Request) -> str | None:
        got = request.query_params.get("done")
        return got if got in DONE else None

    @ui.get("/readers", response_model=None)
    async def readers_page(request: Request) -> Response:
        who = staff(request)
        if isinstance(who, Response):
            return who
        reprint = await run_in_threadpool(desk.to_reprint)
        return page(request, "librarian_find.html", who, reprint=reprint, keep="")

    @ui.post("/readers/find", response_model=None)
    async def find(request: Request) -> Response:
        who, form = await acting(request)
        try:
            pid = await run_in_threadpool(desk.find, form.get("key", ""))
        except NotFound as exc:
            await run_in_threadpool(audit.record, who, "POST", request.url.path, 404)
            reprint = await run_in_threadpool(desk.to_reprint)
            return page(
                request,
                "librarian_find.html",
                who,
                status=404,
                error=str(exc),
                reprint=reprint,
                keep="",
            )
        return await done(who, request, f"/dashboard/readers/{pid}")

    def patron(pid: str) -> str:
        if not _PATRON.fullmatch(pid):
            raise HTTPException(404, "no such reader")
        return pid

    @ui.get("/readers/{pid}", response_model=None)
    async def reader_page(pid: str, request: Request) -> Response:
        who = staff(request)
        if isinstance(who, Response):
            return who
        try:
            reader = await run_in_threadpool(desk.reader, patron(pid))
        except UnknownReader as exc:
            raise HTTPException(404, "no such reader") from exc
        return page(
            request,
            "librarian_reader.html",
            who,
            reader=reader,
            done=done_key(request),
            keep="",
        )

    @ui.post("/readers/{pid}/withdraw", response_model=None)
    async def withdraw(pid: str, request: Request) -> Response:
        who, form = await acting(request)
        purpose = form.get("purpose", "")
        if purpose not in FACE_PURPOSES:
            raise HTTPException(422, "no such purpose")
        try:
            await run_in_threadpool(desk.withdraw, patron(pid), purpose)
        except UnknownReader as exc:
            raise HTTPException(404, "no such reader") from exc
        return await done(who, request, f"/dashboard/readers/{pid}?done=withdrawn")

    @ui.post("/readers/{pid}/{action}", response_model=None)
    async def card(pid: str, action: str, request: Request) -> Response:
        who, _ = await acting(request)
        if action not in ("reprint", "replace"):
            raise HTTPException(404, "no such action")
        act = desk.reprint if action == "reprint" else desk.replace
        try:
            printed = await run_in_threadpool(act, patron(pid), who.name)
        except UnknownReader as exc:
            raise HTTPException(404, "no such reader") from exc
        await run_in_threadpool(audit.record, who, "POST", request.url.path, 200)
        return page(request, "librarian_card.html", who, card=printed, keep="")

    @ui.get("/readers/{pid}/{action}", response_model=None)
    def card_again(pid: str, action: str, request: Request) -> Response:
        """A printed card's page is a POST's answer: its language link (a GET) goes back to
        the reader's page in that language, never prints another card."""
        lang = "?lang=en" if request.query_params.get("lang") == "en" else ""
        return RedirectResponse(f"/dashboard/readers/{patron(pid)}{lang}", status_code=303)

    @ui.get("/cases", response_model=None)
    async def cases_page(request: Request) -> Response:
        who = staff(request)
        if isinstance(who, Response):
            return who
        cases = await run_in_threadpool(desk.cases)
        return page(
            request, "librarian_cases.html", who, cases=cases, done=done_key(request), keep=""
        )

    @ui.post("/cases/{event_id}/handled", response_model=None)
    async def handled(event_id: str, request: Request) -> Response:
        who, _ = await acting(request)
        if not _EVENT.fullmatch(event_id):
            raise HTTPException(404, "no such case")
        try:
            first = await run_in_threadpool(desk.handle, event_id, who.name)
        except NotFound as exc:
            raise HTTPException(404, "no such case") from exc
        return await done(
            who, request, f"/dashboard/cases?done={'handled' if first else 'already'}"
        )

    return ui

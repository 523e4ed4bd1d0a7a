"""The fleet dashboard: server-rendered pages at ``/dashboard`` with live sections.

Jinja2 renders every page at central; the sections (kiosks, rollouts, attention, events)
refresh through server-sent events and a twenty-line script, with no JavaScript build step.
Sign-in takes an API token of any role and sets an HTTP-only, SameSite=Strict session
cookie; ``viewer`` sees, ``admin`` acts (pause, resume, abort, start a rollout), every form
carries a token bound to the session, and every action lands in the audit trail.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from biblioedge.fleet.auth import Audit, Principal
from biblioedge.fleet.bridge import Bridge
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.dashboard import Sessions, snapshot
from biblioedge.fleet.dashboard_text import Lang, catalogue
from biblioedge.fleet.enrollments import Registry
from biblioedge.fleet.itdash import parse_waves, rollout_refusal, sayer
from biblioedge.fleet.releases import ReleaseRepo
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.rollouts import RolloutError, RolloutPlan, Rollouts, Selector
from biblioedge.fleet.routers import itdash as itdash_routes
from biblioedge.fleet.throttle import FailureThrottle, client_key
from biblioedge.releases import below_floor

COOKIE = "be_session"
LANG_COOKIE = "be_lang"
SECTIONS = ("attention", "kiosks", "rollouts", "events")
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _env() -> jinja2.Environment:
    folder = Path(str(resources.files("biblioedge.fleet").joinpath("templates")))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder), autoescape=True, trim_blocks=True
    )


async def _form(request: Request, limit: int = 4096) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, "form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=200, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, "not a form") from exc
    # a field given more than once (the sites chosen for a rollout) comes as one list;
    # a doubled csrf field then matches no token and is refused
    return {k: ",".join(v) for k, v in fields.items() if v}


class _Dashboard:
    """What every dashboard route shares: central's parts, the templates, the session."""

    def __init__(
        self,
        repo: Repo,
        sessions: Sessions,
        rollouts: Rollouts | None,
        releases: ReleaseRepo | None,
        audit: Audit,
        signins: FailureThrottle,
    ) -> None:
        self.repo = repo
        self.sessions = sessions
        self.rollouts = rollouts
        self.releases = releases
        self.audit = audit
        self.signins = signins
        self.cfg: CentralConfig | None = None
        self.env = _env()

    @staticmethod
    def lang_of(request: Request) -> Lang:
        wanted = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
        return "en" if wanted == "en" else "vi"

    @staticmethod
    def page_words(lang: Lang) -> dict[str, str]:
        return catalogue(lang)

    def page(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        lang = self.lang_of(request)
        ctx.setdefault("keep", "")
        html = self.env.get_template(name).render(
            lang=lang, t=catalogue(lang), say=sayer(lang), **ctx
        )
        resp = HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)
        if request.query_params.get("lang") in ("vi", "en"):
            resp.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict")
        return resp

    def signed_in(self, request: Request) -> tuple[Principal, str] | None:
        cookie = request.cookies.get(COOKIE)
        who = self.sessions.check(cookie)
        return None if who is None or cookie is None else (who, cookie)

    def sections(self, ctx: dict[str, Any], lang: Lang) -> dict[str, str]:
        t = catalogue(lang)
        say = sayer(lang)
        return {
            s: self.env.get_template(f"_{s}.html").render(lang=lang, t=t, say=say, **ctx)
            for s in SECTIONS
        }

    async def context(self, who: Principal, cookie: str) -> dict[str, Any]:
        ctx = await run_in_threadpool(snapshot, self.repo, self.rollouts)
        ctx["who"] = who
        ctx["csrf"] = self.sessions.csrf(cookie)
        return ctx

    async def offered(self) -> list[tuple[str, str]]:
        """(kind, release) a rollout may start with, newest first within a kind; software
        below the release floor is not offered."""
        if self.releases is None:
            return []
        listed = await run_in_threadpool(self.releases.list_targets)
        floors = self.rollouts.floor if self.rollouts is not None else None
        floor = None if floors is None else await run_in_threadpool(floors.get)
        lowest = None if floor is None else floor.get("software")
        found = set()
        for t in listed:
            kind, version = t.custom.get("kind"), t.custom.get("version")
            if kind == "software" and not below_floor(str(version), lowest):
                found.add((kind, str(version)))  # below the floor: not offered
            elif kind in ("model", "config"):
                found.add((str(kind), f"{t.custom.get('name')}@{version}"))
        order = {"software": 0, "model": 1, "config": 2}
        names = sorted(found, key=lambda n: n[1], reverse=True)
        names.sort(key=lambda n: order[n[0]])
        return names

    async def admin_form(
        self, request: Request, limit: int = 4096
    ) -> tuple[Principal, dict[str, str]]:
        got = self.signed_in(request)
        if got is None:
            raise HTTPException(401, "sign in first")
        who, cookie = got
        form = await _form(request, limit)
        if form.get("csrf") != self.sessions.csrf(cookie):
            raise HTTPException(403, "the form is not from this session")
        if who.role != "admin":
            await run_in_threadpool(self.audit.record, who, "POST", request.url.path, 403)
            raise HTTPException(403, "viewers cannot change anything")
        return who, form


def _back(refused: str | None = None) -> RedirectResponse:
    """To the page, with the code of what was refused (itdash.MESSAGES): the page says it in
    words, and shows nothing for a code it does not know."""
    query = f"?refused={quote(refused[:40])}" if refused else ""
    return RedirectResponse(f"/dashboard{query}", status_code=303)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303)


def router(
    repo: Repo,
    sessions: Sessions,
    rollouts: Rollouts | None,
    releases: ReleaseRepo | None,
    audit: Audit,
    signins: FailureThrottle | None = None,
    *,
    bridge: Bridge | None = None,
    registry: Registry | None = None,
    cfg: CentralConfig | None = None,
) -> APIRouter:
    ui = APIRouter(prefix="/dashboard", include_in_schema=False)
    if signins is None:  # (not ``or``: an empty throttle has no length, so is falsy)
        signins = FailureThrottle(5, 60.0, 30.0, 3600.0)
    d = _Dashboard(repo, sessions, rollouts, releases, audit, signins)
    d.cfg = cfg
    _sign_in_routes(ui, d)
    _page_routes(ui, d)
    _rollout_routes(ui, d)
    _static_routes(ui)
    itdash_routes.routes(ui, d, bridge, registry, cfg)
    return ui


def _sign_in_routes(ui: APIRouter, d: _Dashboard) -> None:
    @ui.get("/login")
    def login_page(request: Request) -> HTMLResponse:
        return d.page(request, "login.html", who=None)

    @ui.post("/login", response_model=None)
    async def login(request: Request) -> Response:
        address = client_key(request.client.host if request.client else None)
        wait = d.signins.retry_after(address)
        if wait is not None:  # locked out: no form parsed, no token looked up
            await d.signins.hold()
            locked = d.page(request, "login.html", status=429, who=None, locked=wait)
            locked.headers["Retry-After"] = str(wait)
            return locked
        form = await _form(request)
        opened = await run_in_threadpool(d.sessions.open, form.get("token", ""))
        if opened is None:
            wait = d.signins.failed(address)
            if wait is not None:
                locked = d.page(request, "login.html", status=429, who=None, locked=wait)
                locked.headers["Retry-After"] = str(wait)
                return locked
            return d.page(request, "login.html", status=401, who=None, error=True)
        d.signins.succeeded(address)
        who, cookie = opened
        resp = RedirectResponse("/dashboard", status_code=303)
        resp.set_cookie(
            COOKIE,
            cookie,
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="strict",
            path="/dashboard",
            max_age=12 * 3600,
        )
        await run_in_threadpool(d.audit.record, who, "POST", "/dashboard/login", 303)
        return resp

    @ui.post("/logout", response_model=None)
    async def logout(request: Request) -> Response:
        """Ends the session at central too: a copy of the cookie is refused from now on."""
        got = d.signed_in(request)
        d.sessions.close(request.cookies.get(COOKIE))
        if got is not None:
            await run_in_threadpool(d.audit.record, got[0], "POST", "/dashboard/logout", 303)
        resp = _to_login()
        resp.delete_cookie(COOKIE, path="/dashboard")
        return resp


def _page_routes(ui: APIRouter, d: _Dashboard) -> None:
    @ui.get("", response_model=None)
    async def index(request: Request) -> Response:
        got = d.signed_in(request)
        if got is None:
            return _to_login()
        who, cookie = got
        ctx = await d.context(who, cookie)
        itdash_routes.decorate(ctx, request.query_params, d.cfg)
        names = await d.offered()
        message = itdash_routes.message_of(request.query_params)
        return d.page(request, "index.html", releases=names, message=message, **ctx)

    @ui.get("/stream", response_model=None)
    async def stream(request: Request) -> Response:
        got = d.signed_in(request)
        if got is None:
            raise HTTPException(401, "sign in first")
        who, cookie = got
        lang = d.lang_of(request)

        async def events() -> AsyncIterator[bytes]:
            last = ""
            while not await request.is_disconnected():
                if d.sessions.check(cookie) is None:
                    return  # signed out or token revoked: stop sending
                ctx = await d.context(who, cookie)
                itdash_routes.decorate(ctx, request.query_params, d.cfg)
                data = json.dumps(d.sections(ctx, lang))
                if data != last:
                    last = data
                    yield f"event: sections\ndata: {data}\n\n".encode()
                else:
                    yield b": keep-alive\n\n"
                await asyncio.sleep(1.0)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )


def _rollout_routes(ui: APIRouter, d: _Dashboard) -> None:
    @ui.post("/rollouts/{rollout_id}/{action}", response_model=None)
    async def act(rollout_id: str, action: str, request: Request) -> Response:
        who, _ = await d.admin_form(request)
        if d.rollouts is None or action not in ("pause", "resume", "abort"):
            raise HTTPException(404, "no such action")
        if not re.fullmatch(r"[a-z0-9]{1,32}", rollout_id):
            raise HTTPException(404, "no such rollout")
        try:
            await run_in_threadpool(d.rollouts.control, rollout_id, action, who.name)
        except RolloutError as exc:
            await run_in_threadpool(d.audit.record, who, "POST", request.url.path, exc.status)
            return _back(rollout_refusal(exc))
        await run_in_threadpool(d.audit.record, who, "POST", request.url.path, 303)
        return _back()

    @ui.post("/rollouts", response_model=None)
    async def start(request: Request) -> Response:
        who, form = await d.admin_form(request)
        if d.rollouts is None:
            raise HTTPException(404, "no rollouts here")
        refused: str | None = None
        status = 303
        try:
            waves = parse_waves(form.get("waves", "1,10%,100%"))
            sites = [s.strip() for s in form.get("sites", "").split(",") if s.strip()]
            known = {str(k["site"]) for k in await run_in_threadpool(d.repo.list_devices)}
            kind, _, release = form.get("release", "").partition(":")
            if waves is None:
                refused, status = "bad_waves", 400
            elif not set(sites) <= known:
                refused, status = "unknown_site", 400
            elif kind not in ("software", "model", "config"):
                refused, status = "choose_release", 400
            else:
                plan, selector = RolloutPlan(waves=waves), Selector(sites=sites)
                await run_in_threadpool(d.rollouts.create, kind, release, selector, plan, who.name)
        except RolloutError as exc:
            refused, status = rollout_refusal(exc), exc.status
        except ValueError:  # what the plan's own schema refuses and the checks above let by
            refused, status = "refused", 400
        await run_in_threadpool(d.audit.record, who, "POST", "/dashboard/rollouts", status)
        return _back(refused)


def _static_routes(ui: APIRouter) -> None:
    @ui.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in ("live.js", "style.css", "kiosk.js"):
            raise HTTPException(404, "no such file")
        data = resources.files("biblioedge.fleet").joinpath("static", name).read_bytes()
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(data, media_type=kind, headers={"Cache-Control": "max-age=300"})

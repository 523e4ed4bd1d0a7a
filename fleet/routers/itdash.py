"""The dashboard's IT pages: a page per kiosk (with revoke, desired settings, quarantine and
resync), the fleet table's search, filter and sort, the view by branch, the audit trail and
the backup panel.

They hang off the dashboard's router (``routers/dashboard.py``) and share its sessions,
templates and forms: any signed-in role reads, ``admin`` acts, every form carries the
session's token and every action lands in the audit trail. A redirect after an action
carries a message *code* (``?done=saved``, ``?refused=stale``); the page shows the words
for a known code and nothing for any other text, so a crafted link cannot put words on it.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.datastructures import QueryParams

from biblioedge.fleet import itdash
from biblioedge.fleet.bridge import Bridge
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.dashboard import kiosks
from biblioedge.fleet.enrollments import Registry
from biblioedge.fleet.floor import FloorError
from biblioedge.fleet.repo import StaleVersion, UnknownDevice
from biblioedge.fleet.rollout_plan import QUARANTINE_LABEL, QUARANTINE_ON
from biblioedge.protocol import ID_PATTERN, MAX_SIGNED_BODY, dumps

if TYPE_CHECKING:
    from biblioedge.fleet.routers.dashboard import _Dashboard

ACTIONS = ("desired", "resync", "quarantine", "unquarantine", "revoke")
AUDIT_PAGE = 50
#: the settings form: its textarea holds 3,000 characters, percent-encoded in the body
FORM_LIMIT = 16_384


def decorate(ctx: dict[str, Any], query: QueryParams, cfg: CentralConfig | None) -> None:
    """The fleet page's context with the table as asked (search, filter, sort), the sites
    to choose from, the backup panel, and the query kept for the language link."""
    view = itdash.View.of(query)
    fleet = ctx["kiosks"]
    ctx["all_kiosks"] = len(fleet)
    ctx["sites"] = itdash.sites_of(fleet)
    ctx["kiosks"] = view.apply(fleet)
    ctx["view"] = view
    ctx["backup"] = itdash.backup_panel(cfg)
    b = ctx["backup"]["backup"]
    if ctx["backup"]["configured"] and (b is None or b["stale"]):  # as /health says it
        ctx["attention"].append(
            ("att_backup", "central", itdash.human_age(b["age_h"]))
            if b
            else ("att_no_backup", "central", "")
        )
    ctx["size"] = itdash.human_size
    ctx["age"] = itdash.human_age
    kept = {k: v for k, v in query.items() if k in ("q", "site", "role", "state", "sort", "desc")}
    ctx["keep"] = urlencode(kept)


def message_of(query: QueryParams) -> tuple[str, str] | None:
    """(kind, catalogue key) of a known message in the query, None otherwise."""
    for kind in ("refused", "done"):
        key = itdash.known_message(query.get(kind))
        if key is not None:
            return kind, key
    return None


def _to(path: str, **query: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?{urlencode(query)}" if query else path, status_code=303)


def routes(
    ui: APIRouter,
    d: _Dashboard,
    bridge: Bridge | None,
    registry: Registry | None,
    cfg: CentralConfig | None,
) -> None:
    @ui.get("/kiosks/{device_id}", response_model=None)
    async def kiosk_page(device_id: str, request: Request) -> Response:
        got = d.signed_in(request)
        if got is None:
            return _to("/dashboard/login")
        who, cookie = got
        if not re.fullmatch(ID_PATTERN, device_id):
            raise HTTPException(404, "no such kiosk")
        found = [k for k in await run_in_threadpool(kiosks, d.repo) if k.device_id == device_id]
        device = await run_in_threadpool(d.repo.get_device, device_id)
        if not found or device is None:
            raise HTTPException(404, "no such kiosk")
        activity = await run_in_threadpool(itdash.activity, d.repo, device_id)
        lang = d.lang_of(request)
        t = d.page_words(lang)
        chart = {
            "days": activity["days"],
            "series": [
                {"label": t[f"series_{s}"], "data": activity["series"][s]} for s in itdash.SERIES
            ],
            "locale": "vi-VN" if lang == "vi" else "en-GB",
        }
        desired = device.get("desired") or {}
        names = await d.offered()
        return d.page(
            request,
            "kiosk.html",
            who=who,
            csrf=d.sessions.csrf(cookie),
            k=found[0],
            device=device,
            reported=device.get("reported") or {},
            desired_config=json.dumps(desired.get("config") or {}, ensure_ascii=False, indent=1),
            desired_software=desired.get("software") or "",
            software_releases=[r for kind, r in names if kind == "software"],
            activity=activity,
            chart=json.dumps(chart, ensure_ascii=False).replace("<", "\\u003c"),
            series=itdash.SERIES,
            health=await run_in_threadpool(itdash.health_history, d.repo, device_id),
            events=itdash.event_lines(
                (await run_in_threadpool(d.repo.list_events, device_id=device_id, limit=30))[0]
            ),
            message=message_of(request.query_params),
            keep="",
        )

    @ui.post("/kiosks/{device_id}/{action}", response_model=None)
    async def kiosk_action(device_id: str, action: str, request: Request) -> Response:
        # settings as JSON, percent-encoded: up to three bytes a character of the textarea
        who, form = await d.admin_form(request, FORM_LIMIT)
        if action not in ACTIONS or not re.fullmatch(ID_PATTERN, device_id):
            raise HTTPException(404, "no such action")
        device = await run_in_threadpool(d.repo.get_device, device_id)
        if device is None:
            raise HTTPException(404, "no such kiosk")
        page = f"/dashboard/kiosks/{device_id}"
        outcome, code = await _act(action, device, form, request)
        status = 303 if outcome == "done" else 409
        await run_in_threadpool(d.audit.record, who, "POST", request.url.path, status)
        return _to(page, **{outcome: code})

    async def _act(
        action: str, device: dict[str, Any], form: dict[str, str], request: Request
    ) -> tuple[str, str]:
        device_id, site = str(device["device_id"]), str(device["site"])
        if action == "resync":
            sent = bridge is not None and await bridge.send_command(site, device_id, "resync")
            return ("done", "resync_sent") if sent else ("refused", "offline_cmd")
        if action in ("quarantine", "unquarantine"):
            labels = dict(device.get("labels") or {})
            labels.pop(QUARANTINE_LABEL, None)
            if action == "quarantine":
                labels[QUARANTINE_LABEL] = QUARANTINE_ON
            try:
                await run_in_threadpool(d.repo.set_labels, device_id, labels)
            except UnknownDevice:
                return "refused", "refused"
            return "done", "quarantined" if action == "quarantine" else "released"
        if action == "revoke":
            if form.get("confirm") != "yes":
                return "refused", "not_confirmed"
            n = 0 if registry is None else await run_in_threadpool(registry.revoke, device_id)
            if n == 0:
                return "refused", "no_certificate"
            hook = getattr(request.app.state, "on_revoked", None)
            if hook is not None:
                await hook(device_id)
            return "done", "revoked"
        return await _desired(device, form)

    async def _desired(device: dict[str, Any], form: dict[str, str]) -> tuple[str, str]:
        from biblioedge.fleet.routers.devices import DesiredIn

        try:
            config = json.loads(form.get("config") or "{}")
            base = int(form.get("base_version", ""))
        except ValueError:
            return "refused", "bad_json"
        if not isinstance(config, dict):
            return "refused", "bad_json"
        current = device.get("desired") or {}
        software = form.get("software") or current.get("software")
        try:
            body = DesiredIn.model_validate(
                {
                    "base_version": base,
                    "config": config,
                    "software": software,
                    "models": current.get("models") or {},
                }
            )
        except ValidationError:
            return "refused", "bad_desired"
        doc = body.model_dump(exclude={"base_version"})
        floor = d.rollouts.floor if d.rollouts is not None else None
        if floor is not None:
            try:
                await run_in_threadpool(floor.check, body.software)
                doc["software_floor"] = await run_in_threadpool(lambda: floor.software)
            except FloorError:
                return "refused", "below_floor"
        if len(dumps({**doc, "version": base + 1})) > MAX_SIGNED_BODY - 1024:
            return "refused", "too_large"
        try:
            site, desired = await run_in_threadpool(
                d.repo.put_desired, str(device["device_id"]), base, doc
            )
        except StaleVersion:
            return "refused", "stale"
        except (UnknownDevice, ValidationError):
            return "refused", "bad_desired"
        sent = bridge is not None and await bridge.publish_desired(
            site, str(device["device_id"]), desired
        )
        return "done", "saved" if sent else "broker_down"

    @ui.get("/branches", response_model=None)
    async def branches_page(request: Request) -> Response:
        got = d.signed_in(request)
        if got is None:
            return _to("/dashboard/login")
        who, cookie = got
        ctx = await d.context(who, cookie)
        rows = itdash.branches(ctx["kiosks"], ctx["attention"])
        return d.page(request, "branches.html", branches=rows, who=who, csrf=ctx["csrf"])

    @ui.get("/audit", response_model=None)
    async def audit_page(request: Request) -> Response:
        got = d.signed_in(request)
        if got is None:
            return _to("/dashboard/login")
        who, cookie = got
        rows: list[dict[str, Any]] = []
        before_s = request.query_params.get("before", "")
        before = int(before_s) if before_s.isdigit() and 0 < len(before_s) < 19 else None
        if who.role == "admin":
            rows = await run_in_threadpool(d.audit.list, AUDIT_PAGE + 1, before)
        more = len(rows) > AUDIT_PAGE
        rows = [
            {**r, "what": itdash.audit_what(r["path"]), "result": itdash.audit_result(r["status"])}
            for r in rows[:AUDIT_PAGE]
        ]
        return d.page(
            request,
            "audit.html",
            who=who,
            csrf=d.sessions.csrf(cookie),
            rows=rows,
            older=rows[-1]["id"] if more and rows else None,
        )

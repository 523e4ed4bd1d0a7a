"""The dashboard's reports page (``/dashboard/reports``): figures, charts and downloads.

Any signed-in role may read it (admin, librarian, viewer): reports name no reader and list
nothing anyone read, and small cells are already suppressed. The charts are drawn by the
vendored Chart.js from figures the page carries as a JSON block (the page's CSP allows no
inline script and no other origin); without JavaScript the table still says everything.
Bad requests (reversed, absurd or over-ten-year ranges, unknown site, language or format)
are answered 422 with the reason, on the page or as text for the downloads.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse

from biblioedge.fleet.dashboard import Sessions
from biblioedge.fleet.dashboard_text import Lang
from biblioedge.fleet.dashboard_text import catalogue as dashboard_words
from biblioedge.fleet.reportdocs import text as words
from biblioedge.fleet.reportdocs.model import DEPARTMENT_ROWS, FIGURES, Months, PeriodReport
from biblioedge.fleet.reportdocs.monthly import MonthlyReports
from biblioedge.fleet.reportdocs.sheet import daily_csv, site_name, to_json, xlsx
from biblioedge.fleet.reportdocs.source import (
    Figures,
    ReportRequestError,
    check_format,
    check_lang,
    check_request,
    parse_day,
)

COOKIE = "be_session"
LANG_COOKIE = "be_lang"
STATIC = {
    "chart.umd.min.js": "text/javascript",
    "chart.js.LICENSE.md": "text/markdown; charset=utf-8",
    "reports.js": "text/javascript",
    "reports.css": "text/css",
}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
DEFAULT_DAYS = 30
MONTHS_URL = "/dashboard/reports/months.json"


def _env() -> jinja2.Environment:
    folder = Path(str(resources.files("biblioedge.fleet").joinpath("templates")))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder), autoescape=True, trim_blocks=True
    )


def chart_data(report: PeriodReport, lang: Lang) -> dict[str, Any]:
    """What reports.js draws, with its labels in the page's language."""
    t = words.catalogue(lang)
    loans: dict[str, int] = {}
    for d in report.days:
        key = d.day.isoformat()
        loans[key] = loans.get(key, 0) + (d.counts.get("loans") or 0)
    return {
        "locale": "vi-VN" if lang == "vi" else "en-GB",
        "week": {
            "labels": [f"{h}h" for h in range(24)],
            "series": [
                {"label": t[f"weekday_{i}"], "data": list(row)}
                for i, row in enumerate(report.week_hours)
            ],
            "x": t["hour"],
        },
        "loans": {
            "labels": [
                dt.date.fromisoformat(k).strftime("%d/%m" if lang == "vi" else "%m-%d")
                for k in sorted(loans)
            ],
            "data": [loans[k] for k in sorted(loans)],
            "label": t["loans"],
            "x": t["day"],
        },
        "years": years_chart(report.months, report.end, lang) if report.months else None,
    }


def years_chart(months: Months, end: dt.date, lang: Lang) -> dict[str, Any]:
    """The months of ``end``'s year against the same months a year earlier."""
    t = words.catalogue(lang)
    return {
        "labels": [
            f"{t['month']} {m}" if lang == "vi" else calendar.month_abbr[m] for m, _, _ in months
        ],
        "this": [a for _, a, _ in months],
        "last": [b for _, _, b in months],
        "this_label": f"{t['this_year']} ({end.year})",
        "last_label": f"{t['year_before']} ({end.year - 1})",
    }


def router(
    sessions: Sessions,
    figures: Figures,
    monthly: MonthlyReports | None = None,
    library: str | None = None,
) -> APIRouter:
    ui = APIRouter(prefix="/dashboard/reports", include_in_schema=False)
    env = _env()

    def lang_of(request: Request) -> Lang:
        wanted = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
        return "en" if wanted == "en" else "vi"

    def signed_in(request: Request) -> Any:
        return sessions.check(request.cookies.get(COOKIE))

    async def asked(request: Request) -> tuple[dt.date, dt.date, str | None, list[str]]:
        q = request.query_params
        today = dt.datetime.now(dt.UTC).date()
        end = parse_day(q["to"], "to") if q.get("to") else today
        start = (
            parse_day(q["from"], "from")
            if q.get("from")
            else end - dt.timedelta(days=DEFAULT_DAYS - 1)
        )
        site = q.get("site") or None
        sites = await run_in_threadpool(figures.sites)
        check_request(start, end, site, sites, today)
        if "lang" in q:
            check_lang(q["lang"])
        return start, end, site, sites

    @ui.get("", response_model=None)
    async def page(request: Request) -> Response:
        who = signed_in(request)
        if who is None:
            return RedirectResponse("/dashboard/login", status_code=303)
        lang = lang_of(request)
        ctx: dict[str, Any] = {
            "who": who,
            "lang": lang,
            "t": dashboard_words(lang),
            "r": words.catalogue(lang),
            "csrf": sessions.csrf(request.cookies.get(COOKIE, "")),
            "kept": [] if monthly is None else await run_in_threadpool(monthly.kept),
        }
        status = 200
        try:
            start, end, site, sites = await asked(request)
            report = await run_in_threadpool(figures.period, start, end, site)
        except ReportRequestError as exc:
            status = 422
            q = request.query_params
            ctx.update(
                error=str(exc),
                start=q.get("from", "")[:10],
                end=q.get("to", "")[:10],
                site=None,
                sites=await run_in_threadpool(figures.sites),
                report=None,
            )
        else:
            rows = [
                (key, indent, report.totals.get(key), report.last_year.get(key), report.change(key))
                for key, indent in DEPARTMENT_ROWS
            ]
            keep = f"from={start}&to={end}" + (f"&site={site}" if site else "")
            rows += [
                (k, 0, report.totals.get(k), report.last_year.get(k), report.change(k))
                for k in FIGURES
                if k not in dict(DEPARTMENT_ROWS) and k in report.totals
            ]
            ctx.update(
                start=start.isoformat(),
                end=end.isoformat(),
                site=site,
                sites=sites,
                report=report,
                rows=rows,
                site_label=site_name(site, lang),
                charts=json.dumps(
                    {**chart_data(report, lang), "years_url": f"{MONTHS_URL}?{keep}&lang={lang}"},
                    ensure_ascii=False,
                ),
                query=keep,
                keep=keep,
            )
        html = env.get_template("reports.html").render(**ctx)
        resp = HTMLResponse(html, status_code=status, headers=_HEADERS)
        if request.query_params.get("lang") in ("vi", "en"):
            resp.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict")
        return resp

    @ui.get("/months.json", response_model=None)
    async def months(request: Request) -> Response:
        """The year chart's figures, asked apart: a year against the year before reads two
        years of rollups, and the page need not wait for them."""
        if signed_in(request) is None:
            raise HTTPException(401, "sign in first")
        try:
            _, end, site, _ = await asked(request)
        except ReportRequestError as exc:
            return PlainTextResponse(str(exc), status_code=422, headers=_HEADERS)
        found = await run_in_threadpool(figures.months, end, site)
        return Response(
            json.dumps(years_chart(found, end, lang_of(request)), ensure_ascii=False),
            media_type="application/json",
            headers=_HEADERS,
        )

    @ui.get("/export.{fmt}", response_model=None)
    async def export(fmt: str, request: Request) -> Response:
        """The period's report as a file: the Department's XLSX, the daily CSV or JSON."""
        if signed_in(request) is None:
            raise HTTPException(401, "sign in first")
        try:
            kind = check_format(fmt)
            start, end, site, _ = await asked(request)
        except ReportRequestError as exc:
            return PlainTextResponse(str(exc), status_code=422, headers=_HEADERS)
        lang = lang_of(request)
        report = await run_in_threadpool(figures.period, start, end, site)
        if kind == "json" and not report.months:
            months = await run_in_threadpool(figures.months, end, site)
            report = dataclasses.replace(report, months=months)
        name = f"bao-cao-{start}-{end}" + (f"-{site}" if site else "")
        if kind == "xlsx":
            body = await run_in_threadpool(xlsx, report, lang, None, library)
            media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        elif kind == "csv":
            body = daily_csv(report).encode("utf-8")
            media = "text/csv; charset=utf-8"
        else:
            body = json.dumps(to_json(report), ensure_ascii=False).encode("utf-8")
            media = "application/json"
        headers = {**_HEADERS, "Content-Disposition": f'attachment; filename="{name}.{kind}"'}
        return Response(body, media_type=media, headers=headers)

    @ui.get("/monthly/{name}", response_model=None)
    def kept(name: str, request: Request) -> Response:
        if signed_in(request) is None:
            raise HTTPException(401, "sign in first")
        path = None if monthly is None else monthly.path(name)
        if path is None:
            raise HTTPException(404, "no such monthly report")
        return FileResponse(path, filename=f"bao-cao-thang-{name}", headers=_HEADERS)

    @ui.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        data = resources.files("biblioedge.fleet").joinpath("static", name).read_bytes()
        return Response(data, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})

    return ui

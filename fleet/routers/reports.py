"""Reports: visits, loans, cards… by site, kiosk and period, from the rollups (fleet/reports).

Any role may read them (viewers included): no report names a reader or an item, and
breakdowns by age band hide small cells. A question no report answers (a reversed or absurd
range, over ten years, an unknown site, language or format) is a 422 that says why.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from biblioedge.fleet.reports import (
    METRICS,
    Report,
    ReportError,
    ReportQuery,
    Reports,
    label,
)
from biblioedge.fleet.reports.model import Granularity, Language
from biblioedge.fleet.routers.common import AUTHENTICATED, unprocessable

ReportFormat = Literal["json", "csv"]


def to_csv(report: Report) -> str:
    """The rows as CSV: period, site, kiosk, then one column per figure (labels in the
    report's language on a second header line would break spreadsheets: keys only)."""
    keys = sorted({k for row in report.rows for k in row.figures})
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["period", "site", "device_id", "may_still_grow", *keys])
    for row in report.rows:
        values = ["" if row.figures.get(k) is None else row.figures.get(k) for k in keys]
        w.writerow([row.period, row.site or "", row.device_id or "", row.may_still_grow, *values])
    return out.getvalue()


def router(reports: Reports) -> APIRouter:
    r = APIRouter(prefix="/api/v1/reports", tags=["reports"], responses=AUTHENTICATED)

    @r.get(
        "/figures",
        response_model=Report,
        responses={
            200: {"content": {"text/csv": {}}, "description": "The report (JSON, or CSV rows)"},
            422: {
                "description": "reversed or absurd range, over 10 years, unknown site, "
                "language or format"
            },
        },
    )
    def figures(
        start: Annotated[date, Query(alias="from", description="First local day (inclusive)")],
        end: Annotated[date, Query(alias="to", description="Last local day (inclusive)")],
        site: Annotated[
            list[Annotated[str, Query(max_length=64)]] | None,
            Query(description="Sites to report (repeat the parameter); all when absent"),
        ] = None,
        by: Annotated[Granularity, Query(description="Rows by this period")] = "day",
        per_site: bool = True,
        per_kiosk: bool = False,
        compare: Annotated[bool, Query(description="Also the same period a year earlier")] = True,
        lang: Annotated[Language, Query(description="Language of the labels")] = "vi",
        format: Annotated[ReportFormat, Query(description="json, or csv of the rows")] = "json",
    ) -> Report | Response:
        """Figures of a period, per site (and kiosk) and by hour, day, weekday, month,
        quarter or year, beside the same period a year earlier, with up to when each kiosk's
        events have arrived and which figures may still grow."""
        sites = tuple(dict.fromkeys(site or ()))
        if len(sites) > 100:
            raise unprocessable("site", "at most 100 sites")
        try:
            query = ReportQuery(
                start=start,
                end=end,
                sites=sites,
                by=by,
                per_site=per_site,
                per_kiosk=per_kiosk,
                compare=compare,
                lang=lang,
            )
            report = reports.report(query)
        except ReportError as exc:
            raise unprocessable(exc.field, exc.reason) from exc
        if format == "csv":
            return Response(to_csv(report), media_type="text/csv; charset=utf-8")
        return report

    @r.get("/metrics", response_model=dict[str, str])
    def metrics(lang: Annotated[Language, Query()] = "vi") -> dict[str, str]:
        """What each figure is called, in Vietnamese or English."""
        return {k: label(k, lang) for k in METRICS}

    return r

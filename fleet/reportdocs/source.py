"""Where the documents get their figures, and what a request for one may ask.

The page, ``central report`` and the monthly schedule all take a ``Figures``: the real one
reads ``fleet.reports`` (the rollups); tests give one built from a fixture. The checks of a
request (dates, site, language, format) live here once, so the page, the command and the
files refuse the same things for the same reasons.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, Protocol, TypeVar, cast, get_args

from biblioedge.fleet.dashboard_text import Lang
from biblioedge.fleet.reportdocs.model import FIGURES, Day, Kiosk, Months, PeriodReport
from biblioedge.fleet.reports import ReportQuery, Reports, Row

Format = Literal["xlsx", "csv", "json"]
FORMATS: tuple[str, ...] = get_args(Format)
LANGS: tuple[str, ...] = get_args(Lang)
MAX_YEARS = 10
T = TypeVar("T")
EARLIEST = dt.date(2000, 1, 1)  # before any kiosk of this library existed: a typo


class ReportRequestError(ValueError):
    """A request for a report that cannot be answered; the message says why (HTTP 422)."""


class Figures(Protocol):
    def sites(self) -> list[str]: ...

    def period(self, start: dt.date, end: dt.date, site: str | None) -> PeriodReport: ...

    def months(self, end: dt.date, site: str | None) -> Months: ...


def parse_day(value: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ReportRequestError(f"{what} must be a date YYYY-MM-DD, not {value[:40]!r}") from None


def check_request(
    start: dt.date,
    end: dt.date,
    site: str | None,
    sites: list[str],
    today: dt.date | None = None,
) -> None:
    """Refuse reversed, absurd or over-ten-year ranges and unknown sites."""
    today = today or dt.datetime.now(dt.UTC).date()
    if end < start:
        raise ReportRequestError(f"the range is reversed: {start} is after {end}")
    if start < EARLIEST:
        raise ReportRequestError(f"{start} is before {EARLIEST}: no figures exist then")
    if start > today + dt.timedelta(days=1):
        raise ReportRequestError(f"{start} is in the future")
    if (end - start).days > MAX_YEARS * 366:
        raise ReportRequestError(f"the range is over {MAX_YEARS} years")
    if site is not None and site not in sites:
        raise ReportRequestError(f"unknown site {site[:64]!r}")


def check_lang(value: str) -> Lang:
    if value not in LANGS:
        raise ReportRequestError(f"no report in language {value[:16]!r}: {', '.join(LANGS)}")
    return "en" if value == "en" else "vi"


def check_format(value: str) -> Format:
    if value not in FORMATS:
        raise ReportRequestError(f"no report format {value[:16]!r}: {', '.join(FORMATS)}")
    return cast(Format, value)


def last_month(today: dt.date) -> tuple[dt.date, dt.date]:
    """The calendar month before ``today``'s: what the monthly report covers."""
    end = today.replace(day=1) - dt.timedelta(days=1)
    return end.replace(day=1), end


def this_month(today: dt.date) -> tuple[dt.date, dt.date]:
    return today.replace(day=1), today


class ReportFigures:
    """``Figures`` from central's rollups (``fleet.reports``): the figures the API reports,
    laid out for the page and the files. A period takes two questions: by day and site with
    the year before, and by hour for the week's shape. The year chart (months of the year
    so far against the same months a year earlier) is a third, asked apart (``months``)
    unless the period starts at New Year, when its own days are those months. Visits add up
    over days and months: a visit is counted in the hour it began.

    Answers are kept ``ttl_s`` (a minute): the page, its language toggle and the download
    that follows ask the same, and each answer reads the period's rollups. A late event
    shows within that minute; the monthly report and ``central report`` ask fresh."""

    def __init__(self, reports: Reports, ttl_s: float = 60.0, keep: int = 32) -> None:
        self.reports = reports
        self.ttl_s = ttl_s
        self.keep = keep
        self._kept: OrderedDict[tuple[object, ...], tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def _cached(self, key: tuple[object, ...], ask: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._kept.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return cast(T, hit[1])
        answer = ask()
        with self._lock:
            self._kept[key] = (now, answer)
            self._kept.move_to_end(key)
            while len(self._kept) > self.keep:
                self._kept.popitem(last=False)
        return answer

    def sites(self) -> list[str]:
        return sorted(self.reports.sites())

    def period(self, start: dt.date, end: dt.date, site: str | None) -> PeriodReport:
        return self._cached(("period", start, end, site), lambda: self._period(start, end, site))

    def months(self, end: dt.date, site: str | None) -> Months:
        return self._cached(("months", end, site), lambda: self._months(end, site))

    def _months(self, end: dt.date, site: str | None) -> Months:
        yearly = self.reports.report(
            ReportQuery(
                start=dt.date(end.year, 1, 1),
                end=end,
                sites=(site,) if site else (),
                by="month",
                per_site=False,
            )
        )
        return _by_month(end, yearly.rows, yearly.previous_rows)

    def _period(self, start: dt.date, end: dt.date, site: str | None) -> PeriodReport:
        sites = (site,) if site else ()
        daily = self.reports.report(
            ReportQuery(start=start, end=end, sites=sites, by="day", per_site=True)
        )
        hourly = self.reports.report(
            ReportQuery(start=start, end=end, sites=sites, by="hour", per_site=False, compare=False)
        )
        week = [[0] * 24 for _ in range(7)]
        for row in hourly.rows:
            at = dt.datetime.strptime(row.period, "%Y-%m-%dT%H")
            week[at.weekday()][at.hour] += row.figures.get("visits") or 0
        new_year = start == dt.date(end.year, 1, 1)
        return PeriodReport(
            start=start,
            end=end,
            site=site,
            totals=_counts(daily.total),
            last_year=_counts(daily.previous_year or {}),
            days=tuple(
                Day(dt.date.fromisoformat(r.period), r.site or "", _counts(r.figures))
                for r in daily.rows
            ),
            week_hours=tuple(tuple(h) for h in week),
            months=_by_month(end, daily.rows, daily.previous_rows) if new_year else (),
            kiosks=tuple(Kiosk(k.device_id, k.site, k.complete_up_to) for k in daily.complete),
            may_grow=daily.may_still_grow,
            min_cell=daily.min_cell,
        )


def _by_month(end: dt.date, rows: Sequence[Row], before: Sequence[Row]) -> Months:
    """Visits per month of ``end``'s year from rows of days or months (periods start with
    YYYY-MM); months after ``end`` are None, months before it without visits 0."""
    months: dict[int, list[int | None]] = {m: [None, None] for m in range(1, 13)}
    for slot, found in enumerate((rows, before)):
        for m in range(1, end.month + 1):
            months[m][slot] = 0
        for row in found:
            have = months[int(row.period[5:7])][slot] or 0
            months[int(row.period[5:7])][slot] = have + (row.figures.get("visits") or 0)
    return tuple((m, a, b) for m, (a, b) in months.items())


def _counts(figures: Mapping[str, int | None]) -> dict[str, int | None]:
    """``fleet.reports``' metric names to the documents' figures: the age bands of visits
    are the adults and children; items served are loans and renewals."""
    out: dict[str, int | None] = {k: figures.get(k, 0) for k in FIGURES}
    out["adults"] = figures.get("visits.adult", 0)
    out["children"] = figures.get("visits.child", 0)
    loans, renewals = figures.get("loans", 0), figures.get("renewals", 0)
    out["items_served"] = None if loans is None or renewals is None else loans + renewals
    return out

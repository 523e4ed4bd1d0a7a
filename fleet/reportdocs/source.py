"""Where the documents get their figures, and what a request for one may ask.

The page, ``central report`` and the monthly schedule all take a ``Figures``: the real one
reads ``fleet.reports`` (the rollups); tests give one built from a fixture. The checks of a
request (dates, site, language, format) live here once, so the page, the command and the
files refuse the same things for the same reasons.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, Protocol, cast, get_args

from biblioedge.fleet.dashboard_text import Lang
from biblioedge.fleet.reportdocs.model import PeriodReport

Format = Literal["xlsx", "csv", "json"]
FORMATS: tuple[str, ...] = get_args(Format)
LANGS: tuple[str, ...] = get_args(Lang)
MAX_YEARS = 10
EARLIEST = dt.date(2000, 1, 1)  # before any kiosk of this library existed: a typo


class ReportRequestError(ValueError):
    """A request for a report that cannot be answered; the message says why (HTTP 422)."""


class Figures(Protocol):
    def sites(self) -> list[str]: ...

    def period(self, start: dt.date, end: dt.date, site: str | None) -> PeriodReport: ...


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

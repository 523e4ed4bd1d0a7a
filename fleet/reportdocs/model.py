"""What a person reads in a report: one period's figures, ready for the page, the spreadsheet
and the CSV.

``fleet.reports`` computes the figures (rollups kept at ingest, small-cell suppression, how
complete each kiosk's data is); this module only holds them in the shape the documents lay
out, so the page, ``central report`` and the monthly report show the same numbers. A figure
is ``None`` where the report suppressed a small cell: it is shown as "—", never as 0.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

# The daily figures, in the CSV's column order. Names are stable machine keys (the CSV is for
# spreadsheets and scripts); people read the labels in ``reportdocs.text``.
FIGURES: tuple[str, ...] = (
    "visits",
    "unique_readers",
    "adults",
    "children",
    "refusals",
    "loans",
    "returns",
    "renewals",
    "items_served",
    "items_refused",
    "offline_loans",
    "cards_new",
    "cards_renewed",
    "cards_replaced",
    "erasures",
    "preregistrations",
    "exit_alarms",
)

# The Department's periodic report: these rows, in this order, each beside the same period a
# year earlier. (key, indent): an indented row is "of which" the row above it.
DEPARTMENT_ROWS: tuple[tuple[str, int], ...] = (
    ("visits", 0),
    ("adults", 1),
    ("children", 1),
    ("unique_readers", 0),
    ("cards_new", 0),
    ("cards_renewed", 0),
    ("cards_replaced", 0),
    ("loans", 0),
    ("returns", 0),
    ("renewals", 0),
    ("items_served", 0),
    ("preregistrations", 0),
)

Counts = Mapping[str, int | None]
# (month 1-12, visits this year, visits the year before); None: not reached yet
Months = tuple[tuple[int, int | None, int | None], ...]


@dataclass(frozen=True)
class Day:
    """One site's figures for one day (a row of the CSV)."""

    day: dt.date
    site: str
    counts: Counts


@dataclass(frozen=True)
class Kiosk:
    """Up to when a kiosk's events have arrived: figures after that may still grow."""

    device_id: str
    site: str
    complete_up_to: dt.datetime | None


@dataclass(frozen=True)
class PeriodReport:
    """One period (``start`` to ``end`` inclusive) for one site or all of them."""

    start: dt.date
    end: dt.date
    site: str | None
    totals: Counts  # unique readers are unique over the period: not a sum of days
    last_year: Counts  # the same period a year earlier
    days: tuple[Day, ...] = ()
    # visits by weekday (Monday first) and hour of day, 7 x 24
    week_hours: tuple[tuple[int, ...], ...] = ()
    # visits by month of ``end``'s year and of the year before, when the period's own
    # question gave them (it starts at New Year); else ``Figures.months`` asks apart
    months: Months = ()
    kiosks: tuple[Kiosk, ...] = ()
    may_grow: bool = False
    min_cell: int = 0  # cells below this were suppressed (0: none were)

    def change(self, key: str) -> float | None:
        """Change over the same period last year, in percent; None where it has no meaning
        (a figure suppressed, or nothing a year earlier to compare with)."""
        now, before = self.totals.get(key), self.last_year.get(key)
        if now is None or before is None or before == 0:
            return None
        return round((now - before) * 100.0 / before, 1)

    def suppressed(self) -> bool:
        """Whether some figure shown was hidden as a small cell (then the report says so)."""
        shown = [self.totals, self.last_year, *(d.counts for d in self.days)]
        return bool(self.min_cell) and any(v is None for c in shown for v in c.values())

    def complete_up_to(self) -> dt.datetime | None:
        """The earliest of the kiosks' marks: every figure is complete up to then."""
        marks = [k.complete_up_to for k in self.kiosks if k.complete_up_to is not None]
        return min(marks) if marks else None

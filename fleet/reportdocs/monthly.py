"""The monthly report, made by central itself and kept in its data directory.

On or after a set day of each month, central writes the month before's report for all sites
(the Department's XLSX, the CSV of daily figures and the JSON) to ``<data>/reports/monthly``
as ``YYYY-MM.xlsx|csv|json``. Offline kiosks report late, so a report made while its figures
could still grow (the JSON says so) is made again on each later check until they cannot, and
replaced atomically: a download never gets half a file. The dashboard's reports page lists
the kept reports for download.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from biblioedge.fleet.dashboard_text import Lang
from biblioedge.fleet.reportdocs.sheet import daily_csv, to_json, xlsx
from biblioedge.fleet.reportdocs.source import Figures, last_month
from biblioedge.settings import StrictModel

log = logging.getLogger("biblioedge.fleet.reportdocs.monthly")
KEPT_NAME = re.compile(r"(\d{4})-(\d{2})\.(xlsx|csv|json)")


class ReportFilesConfig(StrictModel):
    """``[report_files]`` of central's configuration: the spreadsheet's header and the
    monthly report central keeps."""

    library: str = Field(
        default="THƯ VIỆN TỈNH",
        min_length=1,
        max_length=120,
        description="The library's name at the top of the Department's spreadsheet",
    )
    monthly: bool = Field(default=True, description="Make and keep a report of every month")
    after_day: int = Field(
        default=2,
        ge=1,
        le=28,
        description="Made on or after this day of the next month (late kiosks catch up first), "
        "and made again on later checks while its figures may still grow",
    )
    lang: Literal["vi", "en"] = Field(default="vi", description="Language of the monthly report")
    check_s: float = Field(default=3600.0, ge=60, description="How often central checks")
    dir: Path | None = Field(default=None, description="Where (default <data>/reports/monthly)")


@dataclass(frozen=True)
class Kept:
    month: str  # YYYY-MM
    files: tuple[str, ...]  # file names, xlsx first
    may_grow: bool


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # replicas: a name each
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class MonthlyReports:
    def __init__(
        self,
        folder: Path,
        figures: Figures,
        lang: Lang = "vi",
        after_day: int = 2,
        library: str | None = None,
    ) -> None:
        self.folder = folder
        self.figures = figures
        self.lang: Lang = lang
        self.after_day = after_day  # give kiosks that were offline a day or two to catch up
        self.library = library

    def _may_grow(self, month: str) -> bool | None:
        """What the kept JSON said, or None when there is no kept report for ``month``."""
        try:
            doc = json.loads((self.folder / f"{month}.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return bool(doc.get("may_grow", True))

    def make(self, today: dt.date) -> str | None:
        """Make (or remake) last month's report if it is due; returns the month made."""
        if today.day < self.after_day:
            return None
        start, end = last_month(today)
        month = f"{start:%Y-%m}"
        if self._may_grow(month) is False:
            return None  # kept, and its figures can no longer change
        report = self.figures.period(start, end, None)
        self.folder.mkdir(parents=True, exist_ok=True)
        _write(self.folder / f"{month}.xlsx", xlsx(report, self.lang, today, self.library))
        _write(self.folder / f"{month}.csv", daily_csv(report).encode("utf-8"))
        doc = json.dumps(to_json(report), ensure_ascii=False, default=str)
        _write(self.folder / f"{month}.json", doc.encode("utf-8"))  # last: marks it complete
        log.info("kept the monthly report for %s (may still grow: %s)", month, report.may_grow)
        return month

    def kept(self) -> list[Kept]:
        """The kept months, newest first."""
        months: dict[str, list[str]] = {}
        if self.folder.is_dir():
            for p in self.folder.iterdir():
                m = KEPT_NAME.fullmatch(p.name)
                if m:
                    months.setdefault(f"{m[1]}-{m[2]}", []).append(p.name)
        order = {"xlsx": 0, "csv": 1, "json": 2}
        return [
            Kept(
                month,
                tuple(sorted(names, key=lambda n: order[n.rsplit(".", 1)[1]])),
                self._may_grow(month) is not False,
            )
            for month, names in sorted(months.items(), reverse=True)
        ]

    def path(self, name: str) -> Path | None:
        """A kept file by its name; None for anything that is not one (no path games)."""
        if not KEPT_NAME.fullmatch(name):
            return None
        p = self.folder / name
        return p if p.is_file() else None

    async def run(self, every_s: float = 3600.0) -> None:
        """Check every ``every_s`` whether a monthly report is due; a failure costs that
        check, never central."""
        while True:
            try:
                await asyncio.to_thread(self.make, dt.datetime.now(dt.UTC).date())
            except Exception:
                log.exception("the monthly report could not be made")
            await asyncio.sleep(every_s)

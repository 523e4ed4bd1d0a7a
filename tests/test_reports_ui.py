"""Reports as people read them: the dashboard's reports page in a real headless Chromium
(charts drawn by the vendored Chart.js, Vietnamese first, English on a tap, viewer and
librarian), the Department's XLSX read back with openpyxl, the CSV of daily figures, the
refusals of bad requests, and the monthly report central keeps."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import html
import io
import json
import os
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import orjson
import pytest
import uvicorn
from browser import CHROMIUM, DRIVER, chromium

from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Tokens
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.repo import Incoming, Repo
from biblioedge.fleet.reportdocs import text as words
from biblioedge.fleet.reportdocs.model import FIGURES, Day, Kiosk, Months, PeriodReport
from biblioedge.fleet.reportdocs.monthly import MonthlyReports
from biblioedge.fleet.reportdocs.sheet import daily_csv, xlsx
from biblioedge.fleet.reportdocs.source import ReportFigures, last_month
from biblioedge.fleet.reports import Reports
from biblioedge.procs import free_port
from biblioedge.protocol import uuid7

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed"
)
SITES = ("tv-huyen", "tv-tinh")
BIN = Path(sys.executable).parent / "biblioedge"
SHOTS = Path(os.environ.get("BIBLIOEDGE_SHOTS", "/tmp/biblioedge-shots"))


class SampleFigures:
    """Figures shaped like ``fleet.reports``' answers, computed from a rule, so each test
    knows what every page and file must say. ``tv-huyen``'s children are a small cell."""

    def __init__(self, today: dt.date, late: set[str] | None = None) -> None:
        self.today = today
        self.late = late or set()  # kiosks whose events have not all arrived
        self.asked: list[tuple[dt.date, dt.date, str | None]] = []

    def sites(self) -> list[str]:
        return list(SITES)

    @staticmethod
    def day(d: dt.date, site: str) -> dict[str, int | None]:
        big = site == "tv-tinh"
        weekend = d.weekday() >= 5
        visits = (300 if big else 40) + d.day * 3 + (120 if weekend and big else 0)
        children = visits // 4 if big else None  # suppressed: fewer than the minimum
        loans = (90 if big else 12) + d.day
        renewals = 10 if big else 1
        counts: dict[str, int | None] = {
            "visits": visits,
            "unique_readers": visits - 20,
            "adults": visits - children if children is not None else None,
            "children": children,
            "refusals": 7,
            "loans": loans,
            "returns": loans - 5,
            "renewals": renewals,
            "items_served": loans + renewals,
            "items_refused": 2,
            "offline_loans": 1,
            "cards_new": 5 if big else 1,
            "cards_renewed": 2,
            "cards_replaced": 1 if d.day % 10 == 0 else 0,
            "erasures": 0,
            "preregistrations": 3,
            "exit_alarms": 1 if d.day % 7 == 0 else 0,
        }
        return counts

    def months(self, end: dt.date, site: str | None) -> Months:
        return tuple(
            (
                m,
                9000 + 400 * m if m <= end.month else None,
                8000 + 350 * m if m <= end.month else None,
            )
            for m in range(1, 13)
        )

    def _totals(self, start: dt.date, end: dt.date, site: str | None) -> dict[str, int | None]:
        totals: dict[str, int | None] = dict.fromkeys(FIGURES, 0)
        for s in [site] if site else SITES:
            d = start
            while d <= end:
                for k, v in self.day(d, s).items():
                    have = totals[k]
                    totals[k] = None if v is None or have is None else have + v
                d += dt.timedelta(days=1)
        if totals["unique_readers"] is not None:  # unique over the period: fewer than a sum
            totals["unique_readers"] = totals["unique_readers"] // 3
        return totals

    def period(self, start: dt.date, end: dt.date, site: str | None) -> PeriodReport:
        self.asked.append((start, end, site))
        days = []
        d = start
        while d <= end:
            days += [Day(d, s, self.day(d, s)) for s in ([site] if site else SITES)]
            d += dt.timedelta(days=1)
        ago = dt.timedelta(days=365)
        last = self._totals(start - ago, end - ago, site)
        last = {k: None if v is None else v * 9 // 10 for k, v in last.items()}  # grew 11 %
        week = tuple(
            tuple(
                0 if h < 7 or h > 20 else (30 + 6 * wd + 30 * (wd >= 5)) * (1 + (h in (9, 15)))
                for h in range(24)
            )
            for wd in range(7)
        )
        new_year = start == dt.date(end.year, 1, 1)  # as ReportFigures: else asked apart
        months = self.months(end, site) if new_year else ()
        mark = dt.datetime.combine(end, dt.time(23, 0), dt.UTC)
        kiosks = tuple(
            Kiosk(k, s, mark - dt.timedelta(days=3) if k in self.late else mark)
            for k, s in (("gate-1", "tv-tinh"), ("gate-2", "tv-huyen"), ("self-1", "tv-tinh"))
            if site in (None, s)
        )
        return PeriodReport(
            start=start,
            end=end,
            site=site,
            totals=self._totals(start, end, site),
            last_year=last,
            days=tuple(days),
            week_hours=week,
            months=months,
            kiosks=kiosks,
            may_grow=any(k.device_id in self.late for k in kiosks),
            min_cell=5,
        )


NOVEMBER = (dt.date(2026, 11, 1), dt.date(2026, 11, 30))


def test_words_are_there_in_both_languages_and_nfc() -> None:
    for lang in ("vi", "en"):
        cat = words.catalogue(lang)
        assert set(cat) == set(words.keys())
        assert all(v and unicodedata.is_normalized("NFC", v) for v in cat.values())
        assert all(words.text(k, lang) for k in FIGURES)


def test_department_spreadsheet_is_laid_out_in_vietnamese_with_last_year_and_change() -> None:
    report = SampleFigures(dt.date(2026, 12, 6)).period(*NOVEMBER, None)
    wb = openpyxl.load_workbook(io.BytesIO(xlsx(report, "vi", dt.date(2026, 12, 2))))
    assert wb.sheetnames == ["Báo cáo", "Số liệu theo ngày", "Độ đầy đủ"]
    ws = wb["Báo cáo"]
    cells = [str(c.value) for row in ws.iter_rows() for c in row if c.value is not None]
    assert all(unicodedata.is_normalized("NFC", c) for c in cells)
    assert ws["D1"].value == "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"
    assert ws["A4"].value == "BÁO CÁO THỐNG KÊ HOẠT ĐỘNG PHỤC VỤ BẠN ĐỌC"
    assert ws["A5"].value == "Kỳ báo cáo: từ ngày 01/11/2026 đến ngày 30/11/2026"
    assert ws["A6"].value == "Cơ sở: Tất cả cơ sở"
    assert [c.value for c in ws[8]] == [
        "STT", "Chỉ tiêu", "Đơn vị tính", "Kỳ này", "Cùng kỳ năm trước", "Tăng/giảm (%)"
    ]  # fmt: skip
    rows = {str(r[1].value): r for r in ws.iter_rows(min_row=9, max_row=20)}
    visits = rows["Lượt bạn đọc đến thư viện"]
    assert visits[0].value == 1 and visits[2].value == "lượt"
    assert visits[3].value == report.totals["visits"]
    assert visits[4].value == report.last_year["visits"]
    assert visits[5].value == pytest.approx(report.change("visits") / 100)  # type: ignore[operator]
    assert visits[5].number_format == "0.0%"
    assert 10.0 < report.change("visits") < 12.0  # type: ignore[operator]
    # a breakdown suppressed at one site is suppressed in the sum: shown as a dash, never 0
    children = rows["Trong đó: thiếu nhi"]
    assert children[0].value is None and children[3].value == "—"
    for label in ("Thẻ bạn đọc cấp mới", "Thẻ gia hạn", "Lượt mượn", "Lượt tài liệu phục vụ"):
        assert rows[label][3].value == report.totals[_key(label)]
    assert rows["Thẻ bạn đọc cấp mới"][2].value == "thẻ"
    assert any("—: ít hơn 5 người" in c for c in cells)
    assert "Ngày lập: 02/12/2026" in cells and "Người lập biểu" in cells and "Giám đốc" in cells
    days = wb["Số liệu theo ngày"]
    assert days["A1"].value == "Ngày" and days["C1"].value == "Lượt bạn đọc đến thư viện"
    assert days.max_row == 1 + 30 * 2
    assert days["A2"].value.date() == dt.date(2026, 11, 1) and days["B2"].value == "tv-huyen"
    # English on request, same numbers
    en = openpyxl.load_workbook(io.BytesIO(xlsx(report, "en")))["Report"]
    assert en["A4"].value == "REPORT ON READER SERVICES"
    assert en["A5"].value == "Period: 2026-11-01 to 2026-11-30"


def _key(label: str) -> str:
    return next(k for k in FIGURES if words.text(k, "vi") == label)


def test_csv_has_the_raw_daily_figures_with_a_bom_and_blank_suppressed_cells() -> None:
    report = SampleFigures(dt.date(2026, 12, 6)).period(*NOVEMBER, "tv-huyen")
    text = daily_csv(report)
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:])))
    assert len(rows) == 30 and {r["site"] for r in rows} == {"tv-huyen"}
    first = rows[0]
    assert first["date"] == "2026-11-01"
    expected = SampleFigures.day(dt.date(2026, 11, 1), "tv-huyen")
    assert int(first["visits"]) == expected["visits"]
    assert int(first["loans"]) == expected["loans"]
    assert first["children"] == ""  # suppressed: empty, not 0
    assert sum(int(r["loans"]) for r in rows) == report.totals["loans"]


def test_monthly_report_is_kept_remade_while_it_may_grow_and_then_left(tmp_path: Path) -> None:
    figures = SampleFigures(dt.date(2026, 12, 6), late={"gate-2"})
    monthly = MonthlyReports(tmp_path / "monthly", figures, after_day=2)
    assert monthly.make(dt.date(2026, 12, 1)) is None  # not due yet: late kiosks catch up
    assert monthly.kept() == []
    assert monthly.make(dt.date(2026, 12, 2)) == "2026-11"
    assert figures.asked[-1] == (*NOVEMBER, None)
    [kept] = monthly.kept()
    assert kept.month == "2026-11" and kept.may_grow
    assert kept.files == ("2026-11.xlsx", "2026-11.csv", "2026-11.json")
    ws = openpyxl.load_workbook(tmp_path / "monthly" / "2026-11.xlsx")["Báo cáo"]
    assert ws["A5"].value == "Kỳ báo cáo: từ ngày 01/11/2026 đến ngày 30/11/2026"
    # still growing: made again; once complete, left alone
    figures.late.clear()
    assert monthly.make(dt.date(2026, 12, 3)) == "2026-11"
    assert not monthly.kept()[0].may_grow
    asked = len(figures.asked)
    assert monthly.make(dt.date(2026, 12, 4)) is None
    assert len(figures.asked) == asked
    assert monthly.make(dt.date(2027, 1, 2)) == "2026-12"
    assert [k.month for k in monthly.kept()] == ["2026-12", "2026-11"]
    # only kept files by their exact names
    assert monthly.path("2026-11.xlsx") is not None
    for name in ("../2026-11.xlsx", "2026-11.xlsx/..", ".2026-11.xlsx.tmp", "2026-13.exe"):
        assert monthly.path(name) is None


async def test_central_keeps_the_monthly_report_by_itself_after_a_failed_check(
    tmp_path: Path,
) -> None:
    today = dt.datetime.now(dt.UTC).date()

    class Flaky(SampleFigures):
        def period(self, start: dt.date, end: dt.date, site: str | None) -> PeriodReport:
            if not self.asked:
                self.asked.append((start, end, site))
                raise OSError("database went away")  # costs that check, not the loop
            return super().period(start, end, site)

    figures = Flaky(today)
    monthly = MonthlyReports(tmp_path / "monthly", figures, after_day=1)
    task = asyncio.create_task(monthly.run(every_s=0.05))
    try:
        deadline = time.monotonic() + 60
        while not monthly.kept() and time.monotonic() < deadline:  # noqa: ASYNC110 - files
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    start, _ = last_month(today)
    assert [k.month for k in monthly.kept()] == [f"{start:%Y-%m}"]
    assert len(figures.asked) >= 2


@pytest.fixture
def central(tmp_path: Path) -> Iterator[dict[str, Any]]:
    cfg = CentralConfig(data_dir=tmp_path / "central")
    cfg.data_dir.mkdir(parents=True)
    repo = Repo(cfg.db_url)
    repo.migrate()
    figures = SampleFigures(dt.datetime.now(dt.UTC).date(), late={"self-1"})
    monthly = MonthlyReports(cfg.data_dir / "reports" / "monthly", figures)
    monthly.make(dt.date(2026, 12, 2))
    tokens = Tokens(repo.engine)
    _, viewer = tokens.create("watcher", "viewer")
    _, librarian = tokens.create("thu-thu", "librarian")
    app = create_app(cfg, repo, None, CentralMetrics(), figures=figures, monthly=monthly)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # noqa: ASYNC110 - a thread, not a coroutine
        time.sleep(0.02)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "viewer": viewer, "librarian": librarian}
    finally:
        server.should_exit = True
        thread.join(5)
        repo.close()


def _session(http: httpx.Client, token: str) -> None:
    r = http.post("/dashboard/login", data={"token": token})
    assert r.status_code == 303
    http.cookies.set("be_session", r.cookies["be_session"])


def test_downloads_and_refusals_of_bad_requests(central: dict[str, Any]) -> None:
    with httpx.Client(base_url=central["url"], follow_redirects=False) as http:
        assert http.get("/dashboard/reports").status_code == 303  # to the sign-in page
        assert http.get("/dashboard/reports/export.xlsx").status_code == 401
        _session(http, central["librarian"])
        q = "from=2026-11-01&to=2026-11-30&site=tv-tinh"
        r = http.get(f"/dashboard/reports/export.xlsx?{q}")
        assert r.status_code == 200
        assert (
            'filename="bao-cao-2026-11-01-2026-11-30-tv-tinh.xlsx"'
            in r.headers["content-disposition"]
        )
        ws = openpyxl.load_workbook(io.BytesIO(r.content))["Báo cáo"]
        assert ws["A6"].value == "Cơ sở: tv-tinh"
        r = http.get(f"/dashboard/reports/export.csv?{q}")
        assert r.headers["content-type"].startswith("text/csv")
        assert r.text.count("\r\n") == 31
        r = http.get(f"/dashboard/reports/export.json?{q}&lang=en")
        assert (
            r.json()["totals"]["visits"]
            == SampleFigures(dt.date.today())._totals(*NOVEMBER, "tv-tinh")["visits"]
        )
        refused = {
            "from=2026-11-30&to=2026-11-01": "reversed",
            "from=1900-01-01&to=2026-11-01": "before 2000-01-01",
            "from=2001-01-01&to=2026-01-01": "over 10 years",
            "from=2026-11-01&to=2026-11-30&site=nowhere": "unknown site 'nowhere'",
            "from=2026-02-30": "must be a date",
            "from=2026-11-01&to=2026-11-30&lang=fr": "no report in language 'fr'",
        }
        for query, reason in refused.items():
            for path in (
                "/dashboard/reports/export.xlsx",
                "/dashboard/reports",
                "/dashboard/reports/months.json",
            ):
                r = http.get(f"{path}?{query}")
                assert r.status_code == 422, (path, query)
                assert reason in html.unescape(r.text), (path, query)
        r = http.get(f"/dashboard/reports/months.json?{q}&lang=en")
        assert r.json()["labels"][:2] == ["Jan", "Feb"] and r.json()["this"][10] is not None
        r = http.get(f"/dashboard/reports/export.pdf?{q}")
        assert r.status_code == 422 and "no report format 'pdf'" in r.text
        page = http.get("/dashboard/reports?from=2026-11-01&to=2026-11-30")
        assert 'id="suppressed">—: ít hơn 5 người' in page.text  # tv-huyen's children
        r = http.get("/dashboard/reports/monthly/2026-11.xlsx")
        assert r.status_code == 200 and r.content[:2] == b"PK"
        assert http.get("/dashboard/reports/monthly/..%2Fdashboard.key").status_code == 404
        assert http.get("/dashboard/reports/static/chart.js.LICENSE.md").text.startswith(
            "The MIT License"
        )
        assert http.get("/dashboard/reports/static/../../api.py").status_code == 404


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium("--lang=vi") as driver:
        yield driver


def _wait(browser: Any, css: str, text: str = "", timeout: float = 15) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def seen(d: Any) -> str | bool:
        try:
            found = d.find_elements(By.CSS_SELECTOR, css)
            got = " ".join(e.text for e in found)
        except StaleElementReferenceException:
            return False
        return (got or True) if found and text in got else False

    return str(WebDriverWait(browser, timeout).until(seen))


def _painted(browser: Any, canvas_id: str) -> int:
    """How many pixels of a chart's canvas are not blank: drawn, not just laid out."""
    return int(
        browser.execute_script(
            "const c = document.getElementById(arguments[0]);"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;",
            canvas_id,
        )
    )


def _shoot(browser: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # the window's frame takes some of its height: measure again
        height = browser.execute_script("return document.documentElement.scrollHeight")
        inner = browser.execute_script("return window.innerHeight")
        size = browser.get_window_size()
        browser.set_window_size(1400, max(1000, size["height"] - int(inner) + int(height)))
    path = SHOTS / name
    browser.save_screenshot(str(path))
    return path


@needs_chromium
@pytest.mark.parametrize("role", ["viewer", "librarian"])
def test_reports_page_in_chromium_vietnamese_then_english(
    central: dict[str, Any], browser: Any, role: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url = central["url"]
    browser.get(url + "/dashboard/login")
    browser.find_element(By.ID, "token").send_keys(central[role])
    browser.find_element(By.ID, "sign-in").click()
    _wait(browser, "#nav-reports", "Báo cáo thống kê")
    browser.find_element(By.ID, "nav-reports").click()
    _wait(browser, "#report-form h2", "Báo cáo thống kê")
    # a period and a site, as a librarian would choose them
    for field, value in (("from", "2026-11-01"), ("to", "2026-11-30")):
        # a date input types in the browser's locale; set the value it would hold
        browser.execute_script(
            "document.getElementById(arguments[0]).value = arguments[1]", field, value
        )
    Select(browser.find_element(By.ID, "site")).select_by_value("tv-tinh")
    browser.find_element(By.ID, "show").click()
    _wait(browser, "#report-form h2", "tv-tinh")
    assert "from=2026-11-01&to=2026-11-30&site=tv-tinh" in browser.current_url
    for chart in ("chart-week", "chart-loans", "chart-years"):
        _wait(browser, f"#{chart}[data-drawn=true]")
        assert _painted(browser, chart) > 2000, chart
    report = SampleFigures(dt.date.today()).period(*NOVEMBER, "tv-tinh")
    visits = _wait(browser, "#row-visits", "Lượt bạn đọc đến thư viện")
    assert f"{report.totals['visits']:,}".replace(",", ".") in visits  # Vietnamese: 11.475
    assert f"+{report.change('visits')} %".replace(".", ",") in visits
    assert "Thiếu nhi" in _wait(browser, "#row-children")
    assert browser.find_elements(By.ID, "suppressed") == []  # nothing hidden at this site
    _wait(browser, "#may-grow", "có thể còn tăng")  # self-1 has not sent everything
    _wait(browser, "#kiosk-gate-1", "30/11/2026 23:00")
    _wait(browser, "#kiosk-self-1", "27/11/2026 23:00")
    _wait(browser, "#month-2026-11", "XLSX")
    _wait(browser, "#kept-may-grow", "có thể còn tăng")  # self-1 was late at the time
    assert browser.find_elements(By.CSS_SELECTOR, "#kiosk-gate-2") == []  # other site
    shot = _shoot(browser, f"reports-vi-{role}.png")
    assert shot.stat().st_size > 20_000
    browser.find_element(By.ID, "lang").click()
    _wait(browser, "#report-form h2", "Reports")
    _wait(browser, "#report-form h2", "tv-tinh")  # the same period and site
    assert "from=2026-11-01&to=2026-11-30&site=tv-tinh" in browser.current_url
    _wait(browser, "#row-visits", "Reader visits")
    _wait(browser, "#chart-years[data-drawn=true]")
    assert _painted(browser, "chart-years") > 2000
    if role == "viewer":
        _shoot(browser, "reports-en-viewer.png")
    # the choice is remembered on the fleet page too
    browser.find_element(By.ID, "nav-fleet").click()
    _wait(browser, "h1", "Library fleet")


class _Kiosk:
    """One kiosk's events, sent through central's real ingest as the agent sends them."""

    def __init__(self, repo: Repo, site: str, device: str) -> None:
        self.repo, self.site, self.device, self.seq = repo, site, device, 0

    def send(self, *events: tuple[dt.datetime, str, dict[str, Any]]) -> None:
        batch = []
        for at, etype, payload in events:
            self.seq += 1
            batch.append(
                {
                    "event_id": uuid7(),
                    "device_id": self.device,
                    "site": self.site,
                    "type": etype,
                    "seq": self.seq,
                    "occurred_at": at.isoformat(),
                    "payload": payload,
                }
            )
        body = {"v": 1, "batch_id": uuid7(), "device_id": self.device, "events": batch}
        msg = Incoming(self.site, self.device, "events", orjson.dumps(body))
        assert not self.repo.ingest([msg], accept_unknown=True).quarantined


# 2026-11-02 is a Monday; 09:00 in Hà Nội is 02:00 UTC
MONDAY_9 = dt.datetime(2026, 11, 2, 2, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Central's database URL: SQLite in the data directory, or the suite's PostgreSQL."""
    if request.param == "sqlite":
        yield CentralConfig(data_dir=tmp_path / "central").db_url
        return
    url = str(request.getfixturevalue("postgres_url"))
    yield url
    repo = Repo(url)
    with repo.engine.begin() as conn:  # the cluster is shared by the session: leave it clean
        conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    repo.close()


def test_central_report_command_from_real_events(tmp_path: Path, database: str) -> None:
    data = tmp_path / "central"
    data.mkdir()
    config = tmp_path / "central.toml"
    config.write_text(
        f'data_dir = "{data}"\ndatabase_url = "{database}"\n'
        '[report_files]\nlibrary = "Thư viện tỉnh Quảng Nam"\n',
        "utf-8",
    )
    repo = Repo(database)
    repo.migrate()
    gate = _Kiosk(repo, "tv-tinh", "gate-01")
    desk = _Kiosk(repo, "tv-tinh", "sc-01")
    hour = dt.timedelta(hours=1)

    def grant(at: dt.datetime, patron: str) -> tuple[dt.datetime, str, dict[str, Any]]:
        return at, "gate.decision", {"decision": "grant", "patron_id": patron}

    gate.send(
        *[grant(MONDAY_9, f"BE{i:07d}") for i in range(3)],
        grant(MONDAY_9 + 6 * hour, "BE0000009"),
        grant(MONDAY_9 + 24 * hour, "BE0000001"),
        grant(MONDAY_9 - 365 * 24 * hour, "BE0000001"),  # the same Monday a year earlier
    )
    desk.send(
        *[(MONDAY_9 + hour, "circ.checkout", {"result": "ok"}) for _ in range(4)],
        (MONDAY_9 + 25 * hour, "circ.renew", {"result": "ok"}),
    )
    # the same figures through the adapter the page and the files use
    figures = ReportFigures(Reports(repo.engine, CentralConfig(data_dir=data).reports))
    report = figures.period(*NOVEMBER, None)
    assert figures.sites() == ["tv-tinh"]
    assert report.totals["visits"] == 5 and report.last_year["visits"] == 1
    assert report.totals["unique_readers"] == 4
    assert report.totals["loans"] == 4 and report.totals["items_served"] == 5
    assert report.change("visits") == 400.0
    assert report.week_hours[0][9] == 3 and report.week_hours[0][15] == 1  # Monday, local
    assert report.week_hours[1][9] == 1  # Tuesday
    assert report.months == ()  # not the year so far: the year chart asks apart
    months = figures.months(NOVEMBER[1], None)
    assert dict((m, (a, b)) for m, a, b in months)[11] == (5, 1)
    # the year so far: its months come from its own days, the same figures
    year = figures.period(dt.date(2026, 1, 1), dt.date(2026, 11, 30), None)
    assert year.months == months
    assert year.months[0] == (1, 0, 0) and year.months[11] == (12, None, None)
    by_day = {d.day: d.counts for d in report.days}
    assert by_day[dt.date(2026, 11, 2)]["loans"] == 4
    assert by_day[dt.date(2026, 11, 3)]["items_served"] == 1
    repo.close()

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(BIN), "central", "report", "--config", str(config), *args],
            capture_output=True,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )

    got = run("--from", "2026-11-01", "--to", "2026-11-30", "--format", "json")
    assert got.returncode == 0, got.stderr
    doc = json.loads(got.stdout)
    assert doc["totals"]["visits"] == 5 and doc["change_percent"]["visits"] == 400.0
    assert doc["months"][10] == {"month": 11, "this_year": 5, "last_year": 1}
    got = run("--from", "2026-11-01", "--to", "2026-11-30", "--site", "tv-tinh", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(got.stdout.decode("utf-8-sig"))))
    assert [(r["date"], r["visits"], r["loans"]) for r in rows] == [
        ("2026-11-02", "4", "4"),
        ("2026-11-03", "1", "0"),
    ]
    got = run("--from", "2026-11-01", "--to", "2026-11-30")
    assert got.returncode == 0, got.stderr
    made = tmp_path / got.stdout.decode().strip()
    assert made.name == "bao-cao-2026-11-01-2026-11-30.xlsx"
    ws = openpyxl.load_workbook(made)["Báo cáo"]
    assert ws["A1"].value == "THƯ VIỆN TỈNH QUẢNG NAM"
    visits = next(r for r in ws.iter_rows(min_row=9) if r[1].value == "Lượt bạn đọc đến thư viện")
    assert [c.value for c in visits[3:6]] == [5, 1, 4.0]
    for args, reason in (
        (("--from", "2026-11-30", "--to", "2026-11-01"), "reversed"),
        (("--from", "2026-11-01", "--site", "nowhere"), "unknown site"),
        (("--from", "2026-11-01", "--format", "pdf"), "no report format 'pdf'"),
        (("--from", "2026-11-01", "--lang", "fr"), "no report in language 'fr'"),
        (("--from", "yesterday"), "must be a date"),
    ):
        got = run(*args)
        assert got.returncode == 2 and reason in got.stderr.decode(), (args, got.stderr)


def _library_month(gate: _Kiosk, check: _Kiosk, first: dt.date, readers: int) -> None:
    """A month of a library's events, shaped like the real ones: grants from opening to
    closing (busier at 9 and 15 and at weekends) and loans at the self-check."""
    day = first
    while day.month == first.month:
        grants, loans = [], []
        for local_hour in range(8, 20):
            at = dt.datetime.combine(day, dt.time(local_hour), dt.UTC) - dt.timedelta(hours=7)
            n = 2 + (local_hour in (9, 15)) * 3 + (day.weekday() >= 5) * 2 + day.day % 3
            for i in range(n):
                patron = f"BE{(day.day * 31 + local_hour * 7 + i) % readers:07d}"
                grants.append((at + dt.timedelta(minutes=i), "gate.decision",
                               {"decision": "grant", "patron_id": patron}))  # fmt: skip
            loans += [(at + dt.timedelta(minutes=30 + i), "circ.checkout", {"result": "ok"})
                      for i in range(n // 2)]  # fmt: skip
        gate.send(*grants)
        check.send(*loans)
        day += dt.timedelta(days=1)


@pytest.fixture
def real_central(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Central on a database filled through the real ingest, figures from its rollups."""
    cfg = CentralConfig(data_dir=tmp_path / "central")
    cfg.data_dir.mkdir(parents=True)
    repo = Repo(cfg.db_url)
    repo.migrate()
    gate, check = _Kiosk(repo, "tv-tinh", "gate-01"), _Kiosk(repo, "tv-tinh", "sc-01")
    _library_month(gate, check, dt.date(2025, 11, 1), 200)
    _library_month(gate, check, dt.date(2026, 11, 1), 260)
    figures = ReportFigures(Reports(repo.engine, cfg.reports))
    _, librarian = Tokens(repo.engine).create("thu-thu", "librarian")
    app = create_app(cfg, repo, None, CentralMetrics(), figures=figures)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        fresh = ReportFigures(Reports(repo.engine, cfg.reports), ttl_s=0)  # not the page's
        yield {"url": f"http://127.0.0.1:{port}", "librarian": librarian, "figures": fresh}
    finally:
        server.should_exit = True
        thread.join(5)
        repo.close()


@needs_chromium
def test_reports_page_from_real_rollups_in_chromium(
    real_central: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    url = real_central["url"]
    browser.get(url + "/dashboard/login")
    browser.find_element(By.ID, "token").send_keys(real_central["librarian"])
    browser.find_element(By.ID, "sign-in").click()
    _wait(browser, "#nav-reports")
    browser.get(url + "/dashboard/reports?from=2026-11-01&to=2026-11-30")
    expected = real_central["figures"].period(*NOVEMBER, None)
    visits = _wait(browser, "#row-visits", "Lượt bạn đọc đến thư viện")
    assert f"{expected.totals['visits']:,}".replace(",", ".") in visits
    assert f"{expected.last_year['visits']:,}".replace(",", ".") in visits
    loans = _wait(browser, "#row-loans", "Lượt mượn")
    assert f"{expected.totals['loans']:,}".replace(",", ".") in loans
    for chart in ("chart-week", "chart-loans", "chart-years"):
        _wait(browser, f"#{chart}[data-drawn=true]")
        assert _painted(browser, chart) > 2000, chart
    # what the charts were given is what the rollups say
    drawn = browser.execute_script(
        "return JSON.parse(document.getElementById('report-data').textContent)"
    )
    assert sum(drawn["loans"]["data"]) == expected.totals["loans"]
    assert sum(sum(s["data"]) for s in drawn["week"]["series"]) == expected.totals["visits"]
    assert drawn["years"] is None  # asked apart, drawn when it came:
    years = browser.execute_async_script(
        "fetch(arguments[0]).then(r => r.json()).then(arguments[1])", drawn["years_url"]
    )
    assert years["this"][10] == expected.totals["visits"]
    assert years["last"][10] == expected.last_year["visits"]
    assert years["this"][11] is None and years["labels"][0] == "Tháng 1"
    _wait(browser, "#kiosk-gate-01", "30/11/2026")
    assert browser.find_elements(By.ID, "suppressed") == []  # nothing was hidden
    _shoot(browser, "reports-vi-real.png")

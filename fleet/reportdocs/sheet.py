"""The Department's spreadsheet (XLSX, openpyxl) and the CSV of raw daily figures.

The XLSX is laid out as the periodic report a provincial library sends to the Department of
Culture: the administrative header, the title and period, then one row per figure with its
unit, this period, the same period a year earlier and the change in percent, then who
prepared it. Values, not formulas: a file opened where nothing recalculates (a phone, a
viewer) still shows the numbers. A second sheet holds the daily figures (the CSV's rows), a
third how complete each kiosk's data is. The CSV is UTF-8 with a byte-order mark, which is
what makes Excel read Vietnamese diacritics right.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import unicodedata

from openpyxl import Workbook
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.properties import PageSetupProperties

from biblioedge.fleet.dashboard_text import Lang
from biblioedge.fleet.reportdocs.model import DEPARTMENT_ROWS, FIGURES, PeriodReport
from biblioedge.fleet.reportdocs.text import text, unit

_THIN = Side(style="thin", color="808080")
_BOX = Border(left=_THIN, right=_THIN, top=_THIN, bottom=_THIN)
_HEAD = PatternFill("solid", fgColor="DCE6F1")
_DASH = "—"


def _date(d: dt.date, lang: Lang) -> str:
    return d.strftime("%d/%m/%Y") if lang == "vi" else d.isoformat()


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def site_name(site: str | None, lang: Lang) -> str:
    return site if site else text("all_sites", lang)


def xlsx(
    report: PeriodReport,
    lang: Lang = "vi",
    today: dt.date | None = None,
    library: str | None = None,
) -> bytes:
    """The Department's periodic report as an XLSX file, ``library`` named at its top."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None  # a new workbook has its first sheet
    ws.title = text("sheet_summary", lang)
    for letter, width in zip("ABCDEF", (6, 40, 10, 12, 14, 12), strict=True):
        ws.column_dimensions[letter].width = width
    bold = Font(bold=True)
    ws["A1"] = _nfc(library.upper()) if library else text("library", lang)
    ws.merge_cells("A1:C1")
    ws["D1"] = text("nation", lang)
    ws.merge_cells("D1:F1")
    ws["D2"] = text("motto", lang)
    ws.merge_cells("D2:F2")
    for ref in ("A1", "D1", "D2"):
        ws[ref].font = bold
        ws[ref].alignment = Alignment(horizontal="center")
    ws["A4"] = text("title", lang)
    ws.merge_cells("A4:F4")
    ws["A4"].font = Font(bold=True, size=14)
    period = text("period", lang, start=_date(report.start, lang), end=_date(report.end, lang))
    ws["A5"] = period
    ws.merge_cells("A5:F5")
    ws["A6"] = text("site_line", lang, site=site_name(report.site, lang))
    ws.merge_cells("A6:F6")
    for ref in ("A4", "A5", "A6"):
        ws[ref].alignment = Alignment(horizontal="center")

    head = ("no", "figure", "unit", "this_period", "last_year", "change")
    top = 8
    for col, key in enumerate(head, start=1):
        c = ws.cell(row=top, column=col, value=text(key, lang))
        c.font, c.fill, c.border = bold, _HEAD, _BOX
        c.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
    ws.row_dimensions[top].height = 32  # two lines: "Cùng kỳ / năm trước"
    row, number = top + 1, 0
    for key, indent in DEPARTMENT_ROWS:
        if indent == 0:
            number += 1
        label = text(key, lang)
        if indent:
            label = text("of_which", lang) + label[:1].lower() + label[1:]
        now, before = report.totals.get(key), report.last_year.get(key)
        change = report.change(key)
        values: tuple[int | float | str | None, ...] = (
            number if indent == 0 else None,
            label,
            unit(key, lang),
            _DASH if now is None else now,
            _DASH if before is None else before,
            _DASH if change is None else change / 100.0,
        )
        for col, value in enumerate(values, start=1):
            c = ws.cell(row=row, column=col, value=value)
            c.border = _BOX
            if col == 1:
                c.alignment = Alignment(horizontal="center")
            elif col == 2:
                c.alignment = Alignment(indent=2 * indent, wrap_text=True)
            elif col >= 4:
                c.alignment = Alignment(horizontal="right")
                c.number_format = "0.0%" if col == 6 else "#,##0"
        row += 1

    row += 1
    notes = [text("items_note", lang)]
    if report.suppressed():
        notes.append(text("suppressed", lang, n=report.min_cell))
    mark = report.complete_up_to()
    if mark is not None:
        notes.append(f"{text('complete', lang)}: {mark:%d/%m/%Y %H:%M} UTC")
    if report.may_grow:
        notes.append(text("may_grow", lang))
    for note in notes:
        ws.cell(row=row, column=1, value=note)
        ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=6)
        row += 1
    row += 1
    made = today or dt.datetime.now(dt.UTC).date()
    ws.cell(row=row, column=4, value=text("made_on", lang, date=_date(made, lang)))
    ws.merge_cells(start_row=row, start_column=4, end_row=row, end_column=6)
    row += 1
    for col, key in ((2, "maker"), (4, "director")):
        ws.cell(row=row, column=col, value=text(key, lang)).font = bold
        ws.cell(row=row + 1, column=col, value=text("sign", lang))
    ws.merge_cells(start_row=row, start_column=4, end_row=row, end_column=6)
    ws.merge_cells(start_row=row + 1, start_column=4, end_row=row + 1, end_column=6)
    for r in (row, row + 1):
        ws.cell(row=r, column=2).alignment = Alignment(horizontal="center")
        ws.cell(row=r, column=4).alignment = Alignment(horizontal="center")
    ws.print_options.horizontalCentered = True
    ws.page_setup.orientation = "portrait"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)  # one page wide
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0

    days = wb.create_sheet(text("sheet_days", lang))
    days.append([text("day", lang), text("site", lang), *(text(k, lang) for k in FIGURES)])
    for c in days[1]:
        c.font, c.fill = bold, _HEAD
        c.alignment = Alignment(wrap_text=True, vertical="top", horizontal="center")
    days.row_dimensions[1].height = 48  # labels wrap over up to three lines
    for d in report.days:
        counts = [d.counts.get(k, 0) for k in FIGURES]
        days.append([d.day, d.site, *(_DASH if v is None else v for v in counts)])
    for line in days.iter_rows(min_row=2, min_col=3):
        for c in line:
            if c.value == _DASH:
                c.alignment = Alignment(horizontal="right")
    for r in days.iter_rows(min_row=2, max_col=1):
        r[0].number_format = "DD/MM/YYYY" if lang == "vi" else "YYYY-MM-DD"
    days.column_dimensions["A"].width = 12
    days.column_dimensions["B"].width = 14
    for i in range(3, 3 + len(FIGURES)):
        days.column_dimensions[get_column_letter(i)].width = 13
    days.freeze_panes = "C2"

    kiosks = wb.create_sheet(text("sheet_kiosks", lang))
    kiosks.append([text("kiosk", lang), text("site", lang), text("complete", lang) + " (UTC)"])
    for c in kiosks[1]:
        c.font, c.fill = bold, _HEAD
    for k in report.kiosks:
        seen = k.complete_up_to.replace(tzinfo=None) if k.complete_up_to else None
        kiosks.append([k.device_id, k.site, seen if seen else text("no_data", lang)])
    for r in kiosks.iter_rows(min_row=2, min_col=3, max_col=3):
        r[0].number_format = "DD/MM/YYYY HH:MM"
    for letter, width in zip("ABC", (20, 14, 28), strict=True):
        kiosks.column_dimensions[letter].width = width

    wb.properties.title = _nfc(text("title", lang))
    wb.properties.creator = "biblioedge"
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def daily_csv(report: PeriodReport) -> str:
    """The raw daily figures, one row per site and day; a suppressed cell is empty."""
    out = io.StringIO()
    out.write("\ufeff")
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(["date", "site", *FIGURES])
    for d in report.days:
        counts = [d.counts.get(k) for k in FIGURES]
        w.writerow([d.day.isoformat(), d.site, *("" if v is None else v for v in counts)])
    return out.getvalue()


def to_json(report: PeriodReport) -> dict[str, object]:
    """The same figures as JSON (``central report --format json``, the page's charts)."""
    return {
        "from": report.start.isoformat(),
        "to": report.end.isoformat(),
        "site": report.site,
        "totals": dict(report.totals),
        "last_year": dict(report.last_year),
        "change_percent": {k: report.change(k) for k in FIGURES if k in report.totals},
        "days": [
            {"date": d.day.isoformat(), "site": d.site, **dict(d.counts)} for d in report.days
        ],
        "week_hours": [list(h) for h in report.week_hours],
        "months": [{"month": m, "this_year": a, "last_year": b} for m, a, b in report.months],
        "kiosks": [
            {
                "device_id": k.device_id,
                "site": k.site,
                "complete_up_to": k.complete_up_to.isoformat() if k.complete_up_to else None,
            }
            for k in report.kiosks
        ],
        "may_grow": report.may_grow,
        "min_cell": report.min_cell,
    }

"""``biblioedge central report``: a period's report from central's database, as the
Department's XLSX, the CSV of daily figures or JSON."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any


def _cmd_report(args: argparse.Namespace) -> int:
    # central's modules (SQLAlchemy, openpyxl) load when the command runs, not for every
    # `biblioedge` call that builds the parser
    from biblioedge.fleet.config import load_central_config
    from biblioedge.fleet.repo import Repo
    from biblioedge.fleet.reportdocs.sheet import daily_csv, to_json, xlsx
    from biblioedge.fleet.reportdocs.source import (
        ReportFigures,
        ReportRequestError,
        check_format,
        check_lang,
        check_request,
        parse_day,
    )
    from biblioedge.fleet.reports import ReportError, Reports

    try:
        kind = check_format(args.format)
        lang = check_lang(args.lang)
        start, end = parse_day(args.start, "--from"), parse_day(args.end, "--to")
    except ReportRequestError as exc:
        sys.stderr.write(f"biblioedge central report: {exc}\n")
        return 2
    cfg = load_central_config(args.config)
    repo = Repo(cfg.db_url)
    try:
        figures = ReportFigures(Reports(repo.engine, cfg.reports))
        check_request(start, end, args.site, figures.sites())
        report = figures.period(start, end, args.site)
        if kind == "json" and not report.months:
            report = dataclasses.replace(report, months=figures.months(end, args.site))
    except (ReportRequestError, ReportError) as exc:
        sys.stderr.write(f"biblioedge central report: {exc}\n")
        return 2
    finally:
        repo.close()
    if kind == "xlsx":
        data = xlsx(report, lang, library=cfg.report_files.library)
    elif kind == "csv":
        data = daily_csv(report).encode("utf-8")
    else:
        data = (json.dumps(to_json(report), ensure_ascii=False, indent=1) + "\n").encode()
    if args.out is None and kind != "xlsx":
        sys.stdout.buffer.write(data)
        return 0
    out: Path = args.out or Path(
        f"bao-cao-{start}-{end}" + (f"-{args.site}" if args.site else "") + ".xlsx"
    )
    out.write_bytes(data)
    sys.stdout.write(f"{out}\n")
    return 0


def register_central(sub: Any) -> None:
    """``central report`` under ``central``'s subcommands."""
    today = dt.datetime.now(dt.UTC).date()
    p = sub.add_parser(
        "report",
        help="a period's report: the Department's XLSX, daily CSV or JSON",
        description="The figures of a period (visits, readers, cards, loans, items served, "
        "adults and children, each beside the same period a year earlier) from central's "
        "database. XLSX is the Department's periodic report in Vietnamese (written to --out, "
        "by default bao-cao-FROM-TO[-SITE].xlsx); CSV holds the raw daily figures per site; "
        "JSON all of it. CSV and JSON go to standard output unless --out is given. A bad "
        "range, site, language or format exits 2 with the reason.",
    )
    p.add_argument("--config", type=Path, required=True, help="central TOML file")
    p.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="end", default=today.isoformat(), help="last day (today)")
    p.add_argument("--site", help="one site (default: all sites)")
    p.add_argument("--format", default="xlsx", help="xlsx (default), csv or json")
    p.add_argument("--lang", default="vi", help="vi (default) or en")
    p.add_argument("--out", type=Path, help="file to write")
    p.set_defaults(func=_cmd_report)

"""Reports: the figures a library lives by (visits, loans, cards…), kept at ingest.

``Reports(engine, settings).report(ReportQuery(...))`` answers from the rollups that
``Rollups.apply`` keeps in the transaction storing the events (fleet/repo.py);
``raw_report`` answers the same from the raw events. See docs/reports.md.
"""

from biblioedge.fleet.reports.model import (
    GRANULARITIES,
    LANGUAGES,
    METRICS,
    Figures,
    KioskProgress,
    Report,
    ReportError,
    ReportQuery,
    Row,
    label,
)
from biblioedge.fleet.reports.query import Reports, check
from biblioedge.fleet.reports.rollup import Rollups
from biblioedge.fleet.reports.settings import ReportsConfig

__all__ = [
    "GRANULARITIES",
    "LANGUAGES",
    "METRICS",
    "Figures",
    "KioskProgress",
    "Report",
    "ReportError",
    "ReportQuery",
    "ReportsConfig",
    "Reports",
    "Rollups",
    "Row",
    "check",
    "label",
]

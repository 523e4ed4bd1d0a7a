"""Reports: one wide row per site, hour and kiosk (``report_hours``) instead of a row per
figure, and each reader's days of a year as bits (``report_reader_years``), so that a year's
report reads ~10,000 rows and counts unique readers over ~40,000 (issue 23: a year by hour
took 1.5-2 s from ``report_rollups``); and ``report_pending``, the events stored and not yet
counted (fleet/reports/pending.py: counting left the ingest transaction). The figures
already kept are moved over as they are; a database whose events were never counted
(upgraded from before 0012) is counted here.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import HOUR_FIGURES

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_hours",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("hour", sa.Integer, primary_key=True, comment="hours since 1970-01-01T00:00Z"),
        sa.Column("device_id", sa.String(64), primary_key=True),
        *(
            sa.Column(f.replace(".", "_"), sa.BigInteger, nullable=False, server_default="0")
            for f in HOUR_FIGURES
        ),
        sa.Column(
            "breakdown", sa.Text, nullable=True, comment="JSON {figure: count} of the breakdowns"
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "report_reader_years",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("year", sa.Integer, primary_key=True),
        sa.Column("patron_id", sa.String(64), primary_key=True),
        *(sa.Column(f"d{i}", sa.BigInteger, nullable=False, server_default="0") for i in range(6)),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "report_pending",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sqlite_with_rowid=False,
    )
    from biblioedge.fleet.reports.rollup import Rollups

    conn = op.get_bind()
    rollups = Rollups()
    kept = conn.exec_driver_sql("SELECT count(*) FROM report_rollups").scalar()
    stored = conn.exec_driver_sql("SELECT count(*) FROM events").scalar()
    if not kept and stored:  # counted nowhere yet
        conn.exec_driver_sql("DELETE FROM report_readers")
        rollups.backfill(conn)
    elif kept:
        cells: Counter[tuple[str, str, int, str]] = Counter()
        for site, device, hour, metric, value in conn.exec_driver_sql(
            "SELECT site, device_id, hour, metric, value FROM report_rollups"
        ):
            cells[(site, device, hour, metric)] += value
        days = {
            (site, day, patron)
            for site, day, patron in conn.exec_driver_sql(
                "SELECT site, day, patron_id FROM report_readers"
            )
        }
        rollups.write(conn, cells, days)
    op.drop_table("report_rollups")


def downgrade() -> None:
    op.create_table(
        "report_rollups",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("hour", sa.Integer, primary_key=True),
        sa.Column("metric", sa.String(80), primary_key=True),
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    import orjson

    names = [f.replace(".", "_") for f in HOUR_FIGURES]
    rows = []
    for site, hour, device, *values, breakdown in op.get_bind().exec_driver_sql(
        f"SELECT site, hour, device_id, {', '.join(names)}, breakdown FROM report_hours"
    ):
        figures = dict(zip(HOUR_FIGURES, values, strict=True))
        figures.update(orjson.loads(breakdown) if breakdown else {})
        rows += [
            {"site": site, "hour": hour, "device_id": device, "metric": m, "value": v}
            for m, v in figures.items()
            if v
        ]
    table = sa.table(
        "report_rollups",
        *(sa.column(c) for c in ("site", "hour", "device_id", "metric", "value")),
    )
    if rows:
        op.bulk_insert(table, rows)
    op.drop_table("report_pending")
    op.drop_table("report_reader_years")
    op.drop_table("report_hours")

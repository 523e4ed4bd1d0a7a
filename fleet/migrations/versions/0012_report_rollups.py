"""Reports: figures kept at ingest (``report_rollups``), the readers of each day
(``report_readers``) and each reader's age band (``reader_bands``). The events already stored
are counted by migration 0023, which replaced ``report_rollups`` by ``report_hours``.

The backfill uses the library's default time zone and passback window (``[reports]``
defaults): a central configured otherwise rebuilds nothing, its new events use its settings.

Revision ID: 0012
Revises: 0009_registration_tokens (lane ``reports``; issue 23 puts it after 0011: the lead
chains it when the branches merge)
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_rollups",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("hour", sa.Integer, primary_key=True, comment="hours since 1970-01-01T00:00Z"),
        sa.Column("metric", sa.String(80), primary_key=True),
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "report_readers",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column(
            "day",
            sa.Integer,
            primary_key=True,
            comment="the library's local day since 1970-01-01",
        ),
        sa.Column("patron_id", sa.String(64), primary_key=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "reader_bands",
        sa.Column("patron_id", sa.String(64), primary_key=True),
        sa.Column("band", sa.String(8), nullable=False, comment="adult, child or unknown"),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    # the events already stored are counted by 0023, into the tables that replaced these


def downgrade() -> None:
    op.drop_table("reader_bands")
    op.drop_table("report_readers")
    op.drop_table("report_rollups")

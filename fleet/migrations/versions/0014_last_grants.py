"""Reports: each reader's latest gate grants per site (``report_last_grants``: those at the
latest time, the first of them and whether it is a visit), so that counting visits at ingest is
one key look-up for grants that arrive in time order (the common case) instead of a scan of
the reader's grants in the passback window; filled here from the grants already stored, so
that a missing row means "no grant yet" (fleet/reports/rollup.py ``Tail``).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_last_grants",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("patron_id", sa.String(64), primary_key=True),
        sa.Column(
            "at_us",
            sa.BigInteger,
            nullable=True,
            comment="microseconds since 1970 UTC; none: being made",
        ),
        sa.Column("event_id", sa.String(64), nullable=True, comment="the greatest id at that time"),
        sa.Column(
            "first_event_id", sa.String(64), nullable=True, comment="the first grant at that time"
        ),
        sa.Column("first_device_id", sa.String(64), nullable=True),
        sa.Column(
            "first_counted", sa.Boolean, nullable=True, comment="whether the first is a visit"
        ),
    )
    from biblioedge.fleet.reports.rollup import fill_last_grants

    fill_last_grants(op.get_bind())


def downgrade() -> None:
    op.drop_table("report_last_grants")

"""Reports: an index on the patron of each event per site and time, so that counting visits at
ingest (a grant within the passback window of an earlier one is the same visit) looks up the
reader's own grants instead of every grant of the site in the window.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

#: the same expressions as fleet/reports/rollup.py's PATRON_SQL, as they were at this revision
PATRON = {
    "sqlite": "json_extract(payload, '$.patron_id')",
    "postgresql": "(payload ->> 'patron_id')",
}

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    patron = PATRON[dialect]
    op.execute(f"CREATE INDEX ix_events_site_patron ON events (site, {patron}, occurred_at)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_events_site_patron")

"""The librarian's view (issue 26): which staff cases from kiosks were handled and by whom,
and which card number each reader's last printed card carries (a card printed before the
library system assigned her number is listed for a reprint).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import UTCDateTime

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staff_cases_handled",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("handled_by", sa.String(64), nullable=False),
        sa.Column("handled_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "card_prints",
        sa.Column("patron_id", sa.String(64), primary_key=True),
        sa.Column("card_number", sa.String(64), nullable=False, comment='"" : not yet assigned'),
        sa.Column("printed_at", UTCDateTime, nullable=False),
        sa.Column("printed_by", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("card_prints")
    op.drop_table("staff_cases_handled")

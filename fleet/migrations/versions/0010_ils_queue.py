"""The library-system queue (pushes of readers to Koha or the dummy, in order per reader) and
the links to the patrons the library system holds (issue 22).

Revision ID: 0010
Revises: 0009_registration_tokens
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import BigId, UTCDateTime

revision = "0010"
down_revision = "0009_registration_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ils_queue",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("patron_id", sa.String(64), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, comment="pending, held or done"),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", UTCDateTime, nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("done_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_ils_queue_state_next", "ils_queue", ["state", "next_at"])
    op.create_index("ix_ils_queue_patron", "ils_queue", ["patron_id", "id"])
    op.create_table(
        "ils_links",
        sa.Column("patron_id", sa.String(64), primary_key=True),
        sa.Column("ils_id", sa.String(64), nullable=False),
        sa.Column("cardnumber", sa.String(64), nullable=False),
        sa.Column("ils_status", sa.String(16), nullable=False),
        sa.Column("synced_at", UTCDateTime, nullable=False),
        sa.Column("checked_at", UTCDateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("ils_links")
    op.drop_table("ils_queue")

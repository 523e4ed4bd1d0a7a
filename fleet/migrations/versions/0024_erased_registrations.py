"""The registrations of readers erased at central (``erased_registrations``), so that a
desk's registration a kiosk sends again after a restore (its replay of what the lost central
had acknowledged) makes no reader again: an erasure made after the backup holds (issue 24).
Readers erased before this migration left no registration rows to keep.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import UTCDateTime

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erased_registrations",
        sa.Column("registration_id", sa.String(64), primary_key=True),
        sa.Column("erased_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erased_registrations")

"""Desk registrations (idempotency and their results) and sealed reader profiles.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registrations",
        sa.Column("registration_id", sa.String(64), primary_key=True),
        sa.Column("patron_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_registrations_patron_id", "registrations", ["patron_id"])
    op.create_table(
        "reader_profiles",
        sa.Column("patron_id", sa.String(64), primary_key=True),
        sa.Column("citizen_ref", sa.String(64), nullable=False, unique=True),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reader_profiles")
    op.drop_index("ix_registrations_patron_id", "registrations")
    op.drop_table("registrations")

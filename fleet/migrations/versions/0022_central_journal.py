"""The journal of changes made at central (issue 24): each committed API or CLI transaction's
statements, sealed to the backup key, chained by MAC, kept until shipped beside the backups.

Revision ID: 0022
Revises: 0020
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "central_journal",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(40), nullable=False, comment="UTC, ISO 8601"),
        sa.Column("mac", sa.String(64), nullable=False, comment="HMAC chaining this record"),
        sa.Column("record", sa.LargeBinary, nullable=False, comment="the sealed record"),
        sa.Column("shipped_at", sa.String(40), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("central_journal")

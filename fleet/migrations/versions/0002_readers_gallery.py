"""Readers, encrypted face templates, the per-site gallery change log, card revocations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import BigId, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "readers",
        sa.Column("patron_id", sa.String(64), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.String(10), nullable=False),
        sa.Column("barcode", sa.String(64), nullable=True, unique=True),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_readers_site", "readers", ["site"])
    op.create_table(
        "templates",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("patron_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(80), nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("patron_id", "model", "slot", name="uq_templates_slot"),
    )
    op.create_index("ix_templates_patron_id", "templates", ["patron_id"])
    op.create_table(
        "gallery_log",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("patron_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_gallery_log_site_seq", "gallery_log", ["site", "seq"])
    op.create_table(
        "card_revocations",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("patron_id", sa.String(64), nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("card_revocations")
    op.drop_table("gallery_log")
    op.drop_table("templates")
    op.drop_table("readers")

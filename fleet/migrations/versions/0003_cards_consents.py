"""Library-card signing keys (sealed), issued cards, biometric consent records.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import BigId, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_keys",
        sa.Column("kid", sa.String(32), primary_key=True),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("retired_at", UTCDateTime, nullable=True),
    )
    op.create_table(
        "cards",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("patron_id", sa.String(64), nullable=False),
        sa.Column("kid", sa.String(32), nullable=False),
        sa.Column("issued_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_cards_patron_id", "cards", ["patron_id"])
    op.create_table(
        "consents",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("patron_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("text_version", sa.String(32), nullable=False),
        sa.Column("granted", sa.Boolean, nullable=False),
        sa.Column("librarian", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=True, unique=True),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("withdrawn_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_consents_patron_id", "consents", ["patron_id"])


def downgrade() -> None:
    op.drop_table("consents")
    op.drop_table("cards")
    op.drop_table("card_keys")

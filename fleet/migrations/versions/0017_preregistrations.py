"""Register from home (issue 25): pre-registrations waiting for the desk, and cards offered to
the reader's phone.

``preregistrations``: what a reader typed on central's public page, sealed (name, phone or
e-mail, her consent choices), until the desk confirms it or it expires; once used only the id,
the time and the patron number stay (a second use is refused with a reason), and the row goes
at its expiry. ``phone_cards``: the card token a reader may keep on her phone, sealed under a
key that only her link holds (central cannot read it back), until the pick-up expires.

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import UTCDateTime

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "preregistrations",
        sa.Column("prereg_id", sa.String(32), primary_key=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
        sa.Column("nonce", sa.LargeBinary, nullable=True),
        sa.Column("sealed", sa.LargeBinary, nullable=True),
        sa.Column("used_at", UTCDateTime, nullable=True),
        sa.Column("patron_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "phone_cards",
        sa.Column("pickup_id", sa.String(32), primary_key=True),
        sa.Column("patron_id", sa.String(64), nullable=False, index=True),
        sa.Column("card_jti", sa.String(64), nullable=False),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("phone_cards")
    op.drop_table("preregistrations")

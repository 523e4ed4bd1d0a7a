"""Children: a minor's registration records who consented for her (issue 25 deliver 2).

One row per reader (the newest registration's): the guardian as a keyed hash of her ID
number, the relationship and how it was checked, the child's age on the day at the desk, the
child's own consent (from age 7), and the day she reaches the age of majority.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guardian_consents",
        sa.Column("patron_id", sa.String(64), primary_key=True),
        sa.Column("registration_id", sa.String(64), nullable=False),
        sa.Column("guardian_ref", sa.String(64), nullable=False),
        sa.Column("relationship", sa.String(16), nullable=False, comment="parent or guardian"),
        sa.Column("named_on_child_card", sa.Boolean(), nullable=False),
        sa.Column("passive_auth", sa.String(16), nullable=False),
        sa.Column("child_age", sa.Integer(), nullable=False, comment="on the day at the desk"),
        sa.Column(
            "child_consent", sa.Boolean(), nullable=True, comment="null: under the age asked"
        ),
        sa.Column("adult_on", sa.String(10), nullable=False, comment="YYYY-MM-DD"),
        sa.Column("librarian", sa.String(64), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_guardian_consents_guardian_ref", "guardian_consents", ["guardian_ref"])


def downgrade() -> None:
    op.drop_index("ix_guardian_consents_guardian_ref", "guardian_consents")
    op.drop_table("guardian_consents")

"""One reader, every branch: a consent says where the face may be used (``consents.sites``,
null for every branch, which is what every consent recorded before meant from now on).

Readers themselves need no column: ``readers.site`` is read as the home branch, and gallery
changes are logged for every branch (site ``*``, see fleet/readers.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consents") as batch:
        batch.add_column(
            sa.Column(
                "sites", sa.JSON(), nullable=True, comment="branches it covers; null: every branch"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("consents") as batch:
        batch.drop_column("sites")

"""Renewals: a replaced certificate's scheduled revocation, what it was renewed from, and the
re-key requests IT decides on.

Revision ID: 0007_renewals
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import UTCDateTime

revision = "0007_renewals"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "device_certs",
        sa.Column(
            "renewed_from",
            sa.String(40),
            nullable=True,
            comment="serial this renewal replaced",
        ),
    )
    op.add_column(
        "device_certs",
        sa.Column(
            "revoke_at",
            UTCDateTime,
            nullable=True,
            comment="a replaced certificate's revocation, after the renewal's grace",
        ),
    )
    op.create_table(
        "rekey_requests",
        sa.Column("request_id", sa.String(32), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column(
            "current_serial", sa.String(40), nullable=False, comment="the certificate that asked"
        ),
        sa.Column(
            "key_sha256", sa.String(64), nullable=False, comment="SHA-256 of the new key's SPKI"
        ),
        sa.Column("csr", sa.Text, nullable=False),
        sa.Column("requested_at", UTCDateTime, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, comment="pending, approved or refused"),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", UTCDateTime, nullable=True),
        sa.Column("cert_serial", sa.String(40), nullable=True, comment="issued on approval"),
    )
    op.create_index("ix_rekey_requests_device_id", "rekey_requests", ["device_id"])


def downgrade() -> None:
    op.drop_table("rekey_requests")
    op.drop_column("device_certs", "revoke_at")
    op.drop_column("device_certs", "renewed_from")

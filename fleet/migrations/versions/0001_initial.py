"""Initial schema: devices, events, quarantined events.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from biblioedge.fleet.db import BigId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("registered", sa.Boolean, nullable=False),
        sa.Column("first_seen", UTCDateTime, nullable=True),
        sa.Column("last_seen", UTCDateTime, nullable=True),
        sa.Column("online", sa.Boolean, nullable=False),
        sa.Column("reported", sa.JSON, nullable=True),
        sa.Column("reported_at", UTCDateTime, nullable=True),
        sa.Column("desired", sa.JSON, nullable=True),
        sa.Column("desired_version", sa.Integer, nullable=False),
        sa.Column("desired_updated_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_devices_site", "devices", ["site"])
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("occurred_at", UTCDateTime, nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    op.create_index("ix_events_device_seq", "events", ["device_id", "seq"])
    op.create_index("ix_events_site_occurred", "events", ["site", "occurred_at"])
    op.create_index("ix_events_type_occurred", "events", ["type", "occurred_at"])
    op.create_table(
        "quarantined_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=True, unique=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quarantined_events")
    op.drop_table("events")
    op.drop_table("devices")

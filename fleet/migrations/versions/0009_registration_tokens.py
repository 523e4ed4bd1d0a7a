"""No card bearer token kept at central: ``registrations.result`` of registrations made before
the card was delivered once (issue 19) still held each card's token; it goes, the card's id
and expiry stay. A resend is answered without the card since (docs/security.md).

Revision ID: 0009_registration_tokens
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_registration_tokens"
down_revision = "0008"
branch_labels = None
depends_on = None

_registrations = sa.table(
    "registrations",
    sa.column("registration_id", sa.String),
    sa.column("result", sa.JSON),
)


def upgrade() -> None:
    bind = op.get_bind()
    for rid, result in bind.execute(
        sa.select(_registrations.c.registration_id, _registrations.c.result)
    ).all():
        card = result.get("card") if isinstance(result, dict) else None
        if isinstance(card, dict) and "token" in card:
            kept = {**result, "card": {k: v for k, v in card.items() if k != "token"}}
            bind.execute(
                sa.update(_registrations)
                .where(_registrations.c.registration_id == rid)
                .values(result=kept)
            )


def downgrade() -> None:
    """Nothing to bring back: the tokens are gone (the desks printed them)."""

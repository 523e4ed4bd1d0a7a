"""Readers' names sealed at rest: ``readers.display_name`` (clear) becomes ``name_nonce`` and
``name_sealed`` (AES-GCM under central's template key, bound to the patron id), and the
names kept in ``registrations.result`` go (a resent registration's answer opens the name from
``readers``).

Sealing needs the key: central passes it (``Repo.migrate(template_key=...)``); a database
with readers refuses to migrate without it rather than leave names in clear.

Revision ID: 0008
Revises: 0007_renewals
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from biblioedge.fleet.readers import open_name, seal_name

revision = "0008"
down_revision = "0007_renewals"
branch_labels = None
depends_on = None

_readers = sa.table(
    "readers",
    sa.column("patron_id", sa.String),
    sa.column("display_name", sa.String),
    sa.column("name_nonce", sa.LargeBinary),
    sa.column("name_sealed", sa.LargeBinary),
)
_registrations = sa.table(
    "registrations",
    sa.column("registration_id", sa.String),
    sa.column("result", sa.JSON),
)


def _aead(rows: int) -> AESGCM | None:
    key: Any = context.config.attributes.get("template_key")
    if key is None:
        if rows:
            raise RuntimeError(
                "sealing the readers' names needs central's template key: "
                "start central (it migrates with its keys) instead of migrating bare"
            )
        return None
    return AESGCM(bytes(key))


def upgrade() -> None:
    bind = op.get_bind()
    # refuse before the first change: SQLite's DDL is not always inside the transaction
    rows = bind.execute(sa.select(_readers.c.patron_id, _readers.c.display_name)).all()
    aead = _aead(len(rows))
    with op.batch_alter_table("readers") as batch:
        batch.add_column(sa.Column("name_nonce", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("name_sealed", sa.LargeBinary, nullable=True))
    for pid, name in rows:
        assert aead is not None
        bind.execute(
            sa.update(_readers)
            .where(_readers.c.patron_id == pid)
            .values(**seal_name(aead, pid, name))
        )
    with op.batch_alter_table("readers") as batch:
        batch.alter_column("name_nonce", existing_type=sa.LargeBinary, nullable=False)
        batch.alter_column("name_sealed", existing_type=sa.LargeBinary, nullable=False)
        batch.drop_column("display_name")
    for rid, result in bind.execute(
        sa.select(_registrations.c.registration_id, _registrations.c.result)
    ).all():
        if isinstance(result, dict) and "display_name" in result:
            kept = {k: v for k, v in result.items() if k != "display_name"}
            bind.execute(
                sa.update(_registrations)
                .where(_registrations.c.registration_id == rid)
                .values(result=kept)
            )


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_readers.c.patron_id, _readers.c.name_nonce, _readers.c.name_sealed)
    ).all()
    aead = _aead(len(rows))
    with op.batch_alter_table("readers") as batch:
        batch.add_column(sa.Column("display_name", sa.String(200), nullable=True))
    for pid, nonce, sealed in rows:
        assert aead is not None
        bind.execute(
            sa.update(_readers)
            .where(_readers.c.patron_id == pid)
            .values(display_name=open_name(aead, pid, nonce, sealed))
        )
    with op.batch_alter_table("readers") as batch:
        batch.alter_column("display_name", existing_type=sa.String(200), nullable=False)
        batch.drop_column("name_sealed")
        batch.drop_column("name_nonce")

"""API tokens (stored as their SHA-256 only) and the audit trail: their tables' store.
Roles and what they may do are in ``fleet/auth.py``."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from sqlalchemy import insert, select, update

from biblioedge.fleet.db import api_tokens, audit_log
from biblioedge.fleet.store import Db, engine_of
from biblioedge.protocol import utc_now

ApiRole = Literal["admin", "librarian", "viewer"]
API_ROLES: tuple[ApiRole, ...] = ("admin", "librarian", "viewer")
_PREFIX = "bet_"


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    token_id: str
    name: str
    role: ApiRole


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    def __init__(self, db: Db) -> None:
        self.engine = engine_of(db)

    def create(self, name: str, role: str) -> tuple[str, str]:
        """(token id, the token itself: shown once, never stored)."""
        if role not in API_ROLES:
            raise TokenError(f"role must be one of {', '.join(API_ROLES)}")
        if not (1 <= len(name) <= 64) or not name.isprintable():
            raise TokenError("a token name is 1 to 64 printable characters")
        token_id = secrets.token_hex(6)
        token = f"{_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        with self.engine.begin() as conn:
            conn.execute(
                insert(api_tokens).values(
                    token_id=token_id,
                    name=name,
                    role=role,
                    token_hash=_hash(token),
                    created_at=utc_now(),
                )
            )
        return token_id, token

    def list(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    api_tokens.c.token_id,
                    api_tokens.c.name,
                    api_tokens.c.role,
                    api_tokens.c.created_at,
                    api_tokens.c.revoked_at,
                ).order_by(api_tokens.c.created_at)
            )
            return [dict(r._mapping) for r in rows]

    def revoke(self, token_id_or_name: str) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(api_tokens)
                .where(
                    (api_tokens.c.token_id == token_id_or_name)
                    | (api_tokens.c.name == token_id_or_name)
                )
                .where(api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=utc_now())
            )
            return int(res.rowcount)

    def check(self, token: str) -> Principal | None:
        if not token.startswith(_PREFIX) or len(token) > 128:
            return None
        digest = _hash(token)
        with self.engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest)).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.token_hash, digest):
            return None
        return Principal(row.token_id, row.name, row.role)

    def principal(self, token_id: str) -> Principal | None:
        """The token's holder while it is not revoked (a dashboard session asks each time)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == token_id)).first()
        if row is None or row.revoked_at is not None:
            return None
        return Principal(row.token_id, row.name, row.role)


class Audit:
    def __init__(self, db: Db) -> None:
        self.engine = engine_of(db)

    def record(self, who: Principal, method: str, path: str, status: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(audit_log).values(
                    at=utc_now(),
                    actor=who.name,
                    role=who.role,
                    method=method,
                    path=quote(path, safe="/-._~:@+,;=")[:300],  # as sent: no NUL stored
                    status=status,
                )
            )

    def list(self, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        stmt = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if before is not None:
            stmt = stmt.where(audit_log.c.id < before)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

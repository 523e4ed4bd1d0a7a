"""Named API tokens with roles, and the audit trail of every change made through the API.

Roles: ``admin`` (IT: devices, desired state, enrollments, keys, the audit trail),
``librarian`` (readers, consents, cards), ``viewer`` (reads). Tokens are random 256-bit
strings shown once; central keeps only their SHA-256 (a slow hash adds nothing for secrets
of that entropy). There is no default token: ``biblioedge central token create`` makes one.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, HTTPException, Request, status

# the tokens and the audit trail are tables: their store is in the repository layer
from biblioedge.fleet.store.tokens import API_ROLES, ApiRole, Audit, Principal, TokenError, Tokens

__all__ = [
    "ADMIN",
    "ANY",
    "API_ROLES",
    "STAFF",
    "ApiRole",
    "Audit",
    "Principal",
    "TokenError",
    "Tokens",
    "need",
    "principal_of",
]

# -- FastAPI side ----------------------------------------------------------------------------


def principal_of(request: Request) -> Principal:
    """The caller, authenticated by the middleware before the body was read."""
    who = getattr(request.state, "principal", None)
    if not isinstance(who, Principal):  # pragma: no cover - the middleware guarantees it
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token")
    return who


def need(*roles: ApiRole) -> Any:
    """A dependency admitting callers with one of ``roles`` (any role when none given)."""

    def check(request: Request) -> Principal:
        who = principal_of(request)
        if roles and who.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {' or '.join(roles)} role; token {who.name!r} is {who.role}",
            )
        return who

    return Depends(check)


ADMIN = need("admin")
STAFF = need("admin", "librarian")
ANY = need()

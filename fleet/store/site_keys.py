"""The ``site_keys`` table: each site's gallery and greeting keys, sealed at rest. The
keyring (``fleet/sitekeys.py``) makes, seals and opens them; this only stores them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, insert, select

from biblioedge.fleet.db import site_keys
from biblioedge.fleet.store import Db, engine_of


@dataclass(frozen=True)
class SealedKey:
    kid: str
    nonce: bytes
    sealed_key: bytes
    created_at: datetime


class SiteKeyStore:
    def __init__(self, db: Db) -> None:
        self.engine = engine_of(db)

    def load(
        self, site: str, kinds: Sequence[str], kept: int, make: Callable[[str], SealedKey]
    ) -> tuple[int, dict[str, list[SealedKey]]]:
        """(how many keys the site ever had, per kind its newest ``kept`` keys newest
        first), in one transaction that first stores ``make(kind)`` for a kind the site has
        no key of yet. A kind is the key id's first letter."""
        with self.engine.begin() as conn:
            made = {
                str(kind)
                for (kind,) in conn.execute(
                    select(func.substr(site_keys.c.kid, 1, 1))
                    .where(site_keys.c.site == site)
                    .distinct()
                )
            }
            for kind in kinds:
                if kind not in made:
                    _insert(conn, site, [make(kind)])
            count = int(
                conn.scalar(
                    select(func.count()).select_from(site_keys).where(site_keys.c.site == site)
                )
                or 0
            )
            out: dict[str, list[SealedKey]] = {}
            for kind in kinds:
                rows = conn.execute(
                    select(site_keys)
                    .where((site_keys.c.site == site) & site_keys.c.kid.startswith(kind))
                    .order_by(site_keys.c.created_at.desc(), site_keys.c.kid.desc())
                    .limit(kept)
                ).all()
                out[kind] = [SealedKey(r.kid, r.nonce, r.sealed_key, r.created_at) for r in rows]
        return count, out

    def add(self, site: str, keys: Sequence[SealedKey]) -> None:
        """Store new keys of the site together."""
        with self.engine.begin() as conn:
            _insert(conn, site, keys)


def _insert(conn: Connection, site: str, keys: Sequence[SealedKey]) -> None:
    for k in keys:
        conn.execute(
            insert(site_keys).values(
                kid=k.kid,
                site=site,
                nonce=k.nonce,
                sealed_key=k.sealed_key,
                created_at=k.created_at,
            )
        )

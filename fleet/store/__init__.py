"""The repository layer's stores: every SQL statement of central lives in ``fleet/repo.py``
(devices, events, quarantine, desired state, ingestion) or in a module of this package, one
per group of tables. Nothing else in fleet reaches for the engine: the rest decides (a
planner such as ``fleet/rollout_plan.py``), checks, signs or serves, and asks a store.

A store is built on the repository (``Tokens(repo)``); a bare ``Engine`` is accepted too,
for tools and tests that open a database without a ``Repo``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, TypeAlias

from sqlalchemy import Connection, Engine

if TYPE_CHECKING:  # only the type: repo.py (and what it imports) may use the stores
    from biblioedge.fleet.repo import Repo

#: what a store is built on (a string: annotations only, never evaluated at run time)
Db: TypeAlias = "Repo | Engine"


def engine_of(db: Db) -> Engine:
    """The engine of a repository (or the engine itself)."""
    return db if isinstance(db, Engine) else db.engine


class Transactions:
    """Transactions on the repository, for a module that must decide inside one (issue a
    certificate between a check and its record) and calls a store's statements on it."""

    def __init__(self, db: Db) -> None:
        self._engine = engine_of(db)

    def begin(self) -> AbstractContextManager[Connection]:
        """A transaction: committed when the block ends, rolled back when it raises."""
        return self._engine.begin()

    def connect(self) -> AbstractContextManager[Connection]:
        """A connection for reads."""
        return self._engine.connect()

"""The repository layer's stores: every SQL statement of central lives in ``fleet/repo.py``
(devices, events, quarantine, desired state, ingestion) or in a module of this package, one
per group of tables. Nothing else in fleet reaches for the engine: the rest decides (a
planner such as ``fleet/rollout_plan.py``), checks, signs or serves, and asks a store.

A store is built on the repository (``Tokens(repo)``); a bare ``Engine`` is accepted too,
for tools and tests that open a database without a ``Repo``.
"""

from __future__ import annotations

from typing import TypeAlias

from sqlalchemy import Engine

from biblioedge.fleet.repo import Repo  # repo.py imports nothing of this package

#: what a store is built on
Db: TypeAlias = Repo | Engine


def engine_of(db: Db) -> Engine:
    """The engine of a repository (or the engine itself)."""
    return db if isinstance(db, Engine) else db.engine

"""The session's PostgreSQL cluster: the product's own (``biblioedge.procs.postgres_cluster``),
skipped where no server is installed (a failure in CI)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from biblioedge import procs
from biblioedge.procs import pg_bin

__all__ = ["pg_bin", "postgres_cluster"]


@contextmanager
def postgres_cluster(base: Path) -> Iterator[str]:
    if pg_bin() is None:
        message = "PostgreSQL server not installed (scripts/setup.sh --test installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with procs.postgres_cluster(base) as url:
        yield url

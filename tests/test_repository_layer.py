"""The repository layer owns central's SQL: fleet/repo.py, fleet/db.py (the tables) and the
stores in fleet/store/. Any other fleet module asks them; it neither reaches for an engine
(``repo.engine``) nor builds SQL statements. It may hold a transaction's ``Connection`` to
pass to a store (enrollment issues a certificate inside one). Read from the source, as
test_layout.py does."""

from __future__ import annotations

import ast
from pathlib import Path

FLEET = Path(__file__).resolve().parent.parent / "fleet"
LAYER = {"repo.py", "db.py", "store"}
#: a package's own repository module, beside the layer: its tables are its alone
PACKAGE_REPOSITORIES = {
    "ils/queue.py": "the library-system queue and the links to its patrons",
    "reports/rollup.py": "the rollups: what a batch of stored events adds to the figures",
    "reports/query.py": "the report queries over the rollups (and the raw events, the check)",
    "reports/pending.py": "the events queued for counting, taken in batches by the tally",
    "alerts/store.py": "the alert conditions tracked and the messages waiting for targets",
    # the backup works on the database as a whole, below any repository: an online
    # snapshot (SQLite's backup API, pg_dump), the point it records, a restore
    "backup/make.py": "the snapshot and the point it records",
    "backup/parts.py": "the database URL of a snapshot or dump",
    "backup/restore.py": "what a restore would replace, and the schema check",
    # the journal records and replays a transaction's statements at the engine, below any
    # repository, and keeps its own table
    "backup/journal.py": "the statements of central's changes, recorded and replayed",
}
#: modules that still write SQL, and why. Shrink this list; never grow it.
NOT_YET: dict[str, str] = {}
SQL_BUILDERS = {
    "select",
    "insert",
    "update",
    "delete",
    "text",
    "func",
    "and_",
    "or_",
    "case",
    "Engine",
    "create_engine",
}


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(FLEET.rglob("*.py")):
        rel = path.relative_to(FLEET)
        if (
            rel.parts[0] in LAYER
            or rel.parts[0] == "migrations"
            or str(rel) in NOT_YET
            or rel.as_posix() in PACKAGE_REPOSITORIES
        ):
            continue
        out.append((str(rel), ast.parse(path.read_text(), str(path))))
    return out


def test_no_engine_outside_the_repository_layer() -> None:
    found = [
        f"{name}:{node.lineno}"
        for name, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "engine"
    ]
    assert found == [], f"ask a store in fleet/store/ instead of using the engine: {found}"


def test_no_sql_outside_the_repository_layer() -> None:
    found = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                used = {a.name for a in node.names} & SQL_BUILDERS
                if used or node.module != "sqlalchemy":
                    found.append(f"{name}:{node.lineno} {node.module} {sorted(used)}")
            elif isinstance(node, ast.Import) and any(
                a.name.startswith("sqlalchemy") for a in node.names
            ):
                found.append(f"{name}:{node.lineno}")
    assert found == [], f"SQL belongs in fleet/repo.py or fleet/store/: {found}"


def test_the_exceptions_are_still_exceptions() -> None:
    """An entry of NOT_YET whose module no longer writes SQL must leave the list."""
    for name in NOT_YET:
        source = (FLEET / name).read_text()
        assert "sqlalchemy" in source, f"{name} holds no SQL any more: drop it from NOT_YET"

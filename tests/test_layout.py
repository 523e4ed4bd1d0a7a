"""The house rules of docs/architecture.md, enforced: who may import whom."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "drivers": {"agent", "models", "fleet", "kiosk"},
    "models": {"agent", "drivers", "fleet", "kiosk"},
    "agent": {"kiosk", "fleet", "sim"},
    "fleet": {"agent", "models", "drivers", "kiosk"},
    "provisioning": {"agent", "models", "drivers", "kiosk", "fleet"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n.split(".")[1] for n in names if n.startswith("biblioedge.") and n.count(".") >= 1}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_dependency_direction(folder: str) -> None:
    bad = []
    for path in (ROOT / folder).rglob("*.py"):
        wrong = imported_packages(path) & FORBIDDEN[folder]
        if wrong:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(wrong)}")
    assert not bad, "\n".join(bad)

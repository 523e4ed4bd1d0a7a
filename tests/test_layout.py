"""The house rules of docs/architecture.md, enforced: who may import whom.

Every folder of the product is a tier; FORBIDDEN says, for each tier, which others it may never
import. Together the rules draw the walls: drivers and models import only the kernel; the
kernel (biblioedge's own top modules) imports no tier; fleet never imports agent; the kiosk
screens stand on the agent only; the simulators (sim/) serve only the tools and the tests; and
the tools (cli on top, then bench, then demo) are imported by nobody below them, so no import
circle can run through them.
"""

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"cli", "bench", "demo"}
TIERS = {"kernel", "drivers", "models", "agent", "kiosk", "fleet", "provisioning", "sim", *TOOLS}
# the tiers below the tools that never see the simulators either
PRODUCT = TOOLS | {"sim"}
FORBIDDEN = {
    "kernel": TIERS - {"kernel"},
    "drivers": TIERS - {"kernel", "drivers"},
    "models": TIERS - {"kernel", "models"},
    "provisioning": TIERS - {"kernel", "provisioning"},
    "fleet": {"agent", "models", "drivers", "kiosk"} | PRODUCT,
    "agent": {"kiosk", "fleet"} | PRODUCT,
    "kiosk": {"fleet", "drivers", "models", "provisioning"} | PRODUCT,
    "sim": TOOLS | {"kiosk"},
    "demo": {"cli", "bench"},
    "bench": {"cli"},
    "cli": set(),
}


def tier_of(path: Path) -> str:
    """The tier a source file belongs to, from where it lies in the checkout."""
    parts = path.relative_to(ROOT).parts
    if parts[0] != "core":
        return parts[0]
    if parts[1] == "__main__.py":  # `python -m biblioedge` is the command line's own entry
        return "cli"
    return parts[1] if len(parts) > 2 and parts[1] in TOOLS else "kernel"


def tier_of_module(name: str) -> str | None:
    """The tier of an imported module, None when it is not biblioedge's."""
    parts = name.split(".")
    if parts[0] != "biblioedge":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in TIERS else "kernel"


def imported_tiers(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import (the rules read absolute ones)"
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {t for t in map(tier_of_module, names) if t is not None}


def source_files() -> list[Path]:
    folders = {"core", *(TIERS - {"kernel"} - TOOLS)}
    return sorted(p for f in folders if (ROOT / f).is_dir() for p in (ROOT / f).rglob("*.py"))


@pytest.mark.parametrize("tier", sorted(FORBIDDEN))
def test_dependency_direction(tier: str) -> None:
    bad = []
    for path in source_files():
        if tier_of(path) != tier:
            continue
        wrong = imported_tiers(path) & FORBIDDEN[tier]
        if wrong:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(wrong)}")
    assert not bad, "\n".join(bad)


def test_every_packaged_folder_is_a_tier_with_rules() -> None:
    """A new top-level folder in pyproject gets its walls here before it ships."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    folders = {d.split("/")[0] for d in config["tool"]["setuptools"]["package-dir"].values()}
    tiers = {"kernel" if f == "core" else f for f in folders}
    assert tiers <= set(FORBIDDEN), sorted(tiers - set(FORBIDDEN))
    assert set(FORBIDDEN) == TIERS


def test_the_rules_catch_a_wrong_import(tmp_path: Path) -> None:
    """The scan sees imports inside functions too (where a circle used to hide)."""
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from biblioedge.cli import main\n    import biblioedge.sim.x\n"
    )
    assert imported_tiers(module) == {"cli", "sim"}
    assert tier_of(ROOT / "core" / "settings.py") == "kernel"
    assert tier_of(ROOT / "core" / "bench" / "sync.py") == "bench"

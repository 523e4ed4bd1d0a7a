"""Make a software release on IT's build machine: biblioedge's wheel and its locked wheels.

For each CPU architecture and kiosk role the release names the exact wheels a kiosk installs
(``release.json``, see ``biblioedge.releases``). Versions are pinned to what is installed in
the environment that runs the build, the one the tests passed in. Wheels for another
architecture come from the package index as binaries only (``pip download --platform``); a
dependency without such a wheel stops the build with its name, because the kiosk installs with
``--no-index`` and cannot build anything itself.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from biblioedge.releases import ARCHES, SoftwareRelease

Say = Callable[[str], None]
#: which extras each role installs (the desk's PC/SC library is only on desks)
ROLE_EXTRAS = {"gate": "kiosk", "selfcheck": "kiosk", "desk": "kiosk,desk", "exitgate": "kiosk"}
PLATFORMS = {
    arch: [f"manylinux_2_28_{arch}", f"manylinux_2_17_{arch}", f"manylinux2014_{arch}"]
    for arch in ("x86_64", "aarch64")
}


class BuildError(RuntimeError):
    """The release cannot be built; the message says which step and why."""


def native_arch() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine)


def pip(*args: str, timeout_s: float = 1800) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.splitlines() if not ln.startswith("WARNING: Location")]
        raise BuildError(f"pip {args[0]} failed: " + " | ".join(lines[-4:]))
    return out.stdout


def constraints() -> str:
    """Every installed distribution pinned, so a release locks what the tests ran with."""
    pins = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != "biblioedge":
            pins.add(f"{name}=={dist.version}")
    return "\n".join(sorted(pins)) + "\n"


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


_JUNK = (
    ".venv",
    ".git",
    "build",
    "*.egg-info",
    ".typecheck",
    "__pycache__",
    "*_cache",
    "demo-data",
)


def versioned_copy(
    source: Path, into: Path, version: str | None, patch: Callable[[Path], None] | None = None
) -> Path:
    """A copy of the source tree (an in-tree build would leave build/ in the checkout) whose
    package says ``version`` (pyproject and ``__version__``), optionally changed further by
    ``patch`` (the benchmark's broken release)."""
    import re

    tree = into / "src"
    shutil.copytree(source, tree, ignore=shutil.ignore_patterns(*_JUNK))
    if version is None:
        return tree
    pyproject = tree / "pyproject.toml"
    text, n = re.subn(r'(?m)^version = "[^"]*"', f'version = "{version}"', pyproject.read_text())
    init = tree / "core" / "__init__.py"
    code, m = re.subn(r'(?m)^__version__ = "[^"]*"', f'__version__ = "{version}"', init.read_text())
    if n != 1 or m != 1:
        raise BuildError(f"cannot set the version in {source}")
    pyproject.write_text(text)
    init.write_text(code)
    if patch is not None:
        patch(tree)
    return tree


def build_software(
    source: Path,
    out: Path,
    *,
    version: str | None = None,
    patch: Callable[[Path], None] | None = None,
    arches: tuple[str, ...] = ARCHES,
    roles: tuple[str, ...] = ("gate", "selfcheck"),
    with_dependencies: bool = True,
    say: Say | None = None,
) -> SoftwareRelease:
    """Write ``out/release.json`` and ``out/wheels/*.whl``; returns the release document."""
    say = say or (lambda _m: None)
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    say(f"building the biblioedge wheel from {source}")
    with tempfile.TemporaryDirectory() as tmp:
        tree = versioned_copy(source, Path(tmp), version, patch)
        pip("wheel", "--no-deps", "-q", "-w", str(Path(tmp) / "own"), str(tree))
        (own,) = (Path(tmp) / "own").glob("biblioedge-*.whl")
        shutil.move(str(own), wheels / own.name)
        own = wheels / own.name
    version = own.name.split("-")[1]
    say("fetching pip's own wheel (it installs the others on the kiosk)")
    pip("download", "--no-deps", "-q", "-d", str(wheels), f"pip=={metadata.version('pip')}")
    pip_wheel = next(w.name for w in wheels.glob("pip-*.whl"))
    lock: dict[str, dict[str, list[str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp) / "constraints.txt"
        pins.write_text(constraints())
        for arch in arches:
            lock[arch] = {}
            for role in roles:
                if not with_dependencies:
                    lock[arch][role] = [own.name]
                    continue
                say(f"locking {role} for {arch}")
                scratch = Path(tmp) / f"{arch}-{role}"
                requirement = f"{own}[{ROLE_EXTRAS[role]}]"
                if arch == native_arch():
                    pip("wheel", "-q", "-c", str(pins), "-w", str(scratch), requirement)
                else:
                    platforms = [a for p in PLATFORMS[arch] for a in ("--platform", p)]
                    args = ["--only-binary=:all:", "--implementation", "cp"]
                    args += ["--python-version", python_tag(), *platforms]
                    pip("download", "-q", *args, "-c", str(pins), "-d", str(scratch), requirement)
                files = []
                for wheel in sorted(scratch.glob("*.whl")):
                    if not (wheels / wheel.name).exists():
                        shutil.move(str(wheel), wheels / wheel.name)
                    files.append(wheel.name)
                lock[arch][role] = sorted({*files, own.name} - {pip_wheel})
    release = SoftwareRelease(version=version, python=python_tag(), pip=pip_wheel, wheels=lock)
    (out / "release.json").write_text(release.model_dump_json(indent=1))
    return release

"""Build one software release's venv in place, from verified wheels, with pip and no index.

``<prefix>/releases/<version>/`` becomes a venv (``python3 -m venv --without-pip``) into which
pip, run from its own wheel, installs exactly the release's locked wheels with ``--no-index
--no-deps``: nothing is resolved or fetched on the kiosk, and what runs is what was tested.
The directory counts only once ``.complete`` is written, last; a build cut by a power loss is
removed and started again, so no kiosk is ever left with a half-installed release.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from biblioedge.provisioning.bootguard import Layout

Say = Callable[[str], None]


class InstallError(RuntimeError):
    """The release could not be installed; ``reason`` is a short code for central."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def base_python() -> str:
    """The interpreter new venvs are made from: the system one, not this venv's."""
    return getattr(sys, "_base_executable", sys.executable)


def check_space(
    where: Path, wheels: list[Path], *, factor: float = 3.0, floor_mb: int = 64
) -> None:
    """An installed wheel takes about three times its size; keep a floor for the kiosk."""
    need = int(sum(w.stat().st_size for w in wheels) * factor) + floor_mb * 2**20
    where.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(where).free
    if free < need:
        raise InstallError(
            "disk_full",
            f"not enough space to install: {need // 2**20} MiB needed, {free // 2**20} MiB free",
        )


def build_release(
    layout: Layout,
    version: str,
    wheels: list[Path],
    pip_wheel: Path,
    *,
    python: str | None = None,
    compile_bytecode: bool = True,
    timeout_s: float = 1800,
    say: Say | None = None,
) -> Path:
    """The release's directory, complete; raises InstallError and leaves nothing behind."""
    target = layout.release_dir(version)
    if layout.complete(version):
        return target
    if target.exists():
        shutil.rmtree(target)  # an earlier build that did not finish
    check_space(layout.releases, wheels)
    (say or (lambda _m: None))(f"building release {version}: {len(wheels)} wheels")
    try:
        _run([python or base_python(), "-m", "venv", "--without-pip", str(target)], timeout_s)
        cmd = [
            str(target / "bin" / "python"),
            f"{pip_wheel}/pip",
            "install",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "-q",
        ]
        if not compile_bytecode:
            cmd.append("--no-compile")
        _run([*cmd, *map(str, wheels)], timeout_s)
    except BaseException:  # a failed or interrupted build leaves no directory behind
        shutil.rmtree(target, ignore_errors=True)
        raise
    layout.mark_complete(version, {"version": version, "wheels": sorted(w.name for w in wheels)})
    return target


def _run(cmd: list[str], timeout_s: float) -> None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InstallError("install_timeout", f"{cmd[0]} took over {timeout_s:.0f} s") from exc
    except OSError as exc:
        raise InstallError("install_failed", f"cannot run {cmd[0]}: {exc}") from exc
    if out.returncode != 0:
        text = (out.stderr or out.stdout).strip()
        tail = text.splitlines()[-3:] if text else [f"exit {out.returncode}"]
        reason = "disk_full" if "No space left" in text else "install_failed"
        raise InstallError(reason, " | ".join(tail)[:500])

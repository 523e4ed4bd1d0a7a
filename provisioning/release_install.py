"""Build one software release's venv in place, from verified wheels, with pip and no index.

``<prefix>/releases/<version>/`` becomes a venv (``python3 -m venv --without-pip``) into which
pip installs exactly the release's locked wheels with ``--no-index --no-deps``: nothing is
resolved or fetched on the kiosk, and what runs is what was tested. pip itself comes with the
release as a verified wheel, unpacked once under ``<prefix>/tools/`` and run from there by the
new venv's interpreter, so no release depends on the pip of another (and none carries one).
The directory counts only once ``.complete`` is written, last; a build cut by a power loss is
removed and started again, so no kiosk is ever left with a half-installed release.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
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
    tool = pip_tool(layout, pip_wheel)
    try:
        _run([python or base_python(), "-m", "venv", "--without-pip", str(target)], timeout_s)
        cmd = [
            str(target / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "-q",
        ]
        if not compile_bytecode:
            cmd.append("--no-compile")
        _run([*cmd, *map(str, wheels)], timeout_s, env={"PYTHONPATH": str(tool)})
    except BaseException:  # a failed or interrupted build leaves no directory behind
        shutil.rmtree(target, ignore_errors=True)
        raise
    layout.mark_complete(version, {"version": version, "wheels": sorted(w.name for w in wheels)})
    return target


def pip_tool(layout: Layout, pip_wheel: Path) -> Path:
    """pip unpacked from its wheel into ``<prefix>/tools/<wheel name>`` (once): running it
    unpacked takes a second less per install than importing it from the zip."""
    tool = layout.prefix / "tools" / pip_wheel.stem
    if (tool / "pip" / "__main__.py").exists():
        return tool
    tmp = tool.with_name(f".{tool.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(pip_wheel) as z:
            for member in z.namelist():
                if member.startswith("/") or ".." in member.split("/"):
                    raise InstallError("bad_release", f"{pip_wheel.name}: unsafe path {member!r}")
            z.extractall(tmp)
    except (OSError, zipfile.BadZipFile) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InstallError("install_failed", f"cannot unpack {pip_wheel.name}: {exc}") from exc
    shutil.rmtree(tool, ignore_errors=True)
    os.replace(tmp, tool)
    return tool


def _run(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None) -> None:
    full_env = None if env is None else {**os.environ, **env, "PIP_NO_INPUT": "1"}
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, check=False, env=full_env
        )
    except subprocess.TimeoutExpired as exc:
        raise InstallError("install_timeout", f"{cmd[0]} took over {timeout_s:.0f} s") from exc
    except OSError as exc:
        raise InstallError("install_failed", f"cannot run {cmd[0]}: {exc}") from exc
    if out.returncode != 0:
        text = (out.stderr or out.stdout).strip()
        tail = text.splitlines()[-3:] if text else [f"exit {out.returncode}"]
        reason = "disk_full" if "No space left" in text else "install_failed"
        raise InstallError(reason, " | ".join(tail)[:500])

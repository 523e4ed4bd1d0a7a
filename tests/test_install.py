"""Installing on a kiosk: real release venvs in a temporary prefix, the boot guard run the way
systemd runs it, the rendered units checked by ``systemd-analyze verify``, and the locked
dependencies resolvable for both CPU architectures."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from disk import tmpfs

from biblioedge.provisioning.bootguard import Layout, LayoutError
from biblioedge.provisioning.install import Plan, install
from biblioedge.provisioning.release_build import PLATFORMS, native_arch
from biblioedge.provisioning.release_install import InstallError, build_release
from biblioedge.releases import SoftwareRelease

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


def plan_in(tmp: Path, release: Path) -> Plan:
    return Plan(
        role="gate",
        release=release,
        prefix=tmp / "opt" / "biblioedge",
        data=tmp / "var" / "biblioedge",
        config=tmp / "etc" / "agent.toml",
        units_dir=tmp / "units",
        udev_dir=tmp / "udev",
        create_user=False,
        enable=False,
        python=SYSTEM_PYTHON if Path(SYSTEM_PYTHON).exists() else sys.executable,
    )


def version_in(prefix: Path) -> str:
    out = subprocess.run(
        [
            str(prefix / "current" / "bin" / "python"),
            "-c",
            "import biblioedge; print(biblioedge.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_install_lays_out_a_kiosk_whose_units_verify(
    tmp_path: Path, built_releases: dict[str, Path]
) -> None:
    plan = plan_in(tmp_path, built_releases["0.1.1"])
    done = install(plan, say=lambda _m: None)
    prefix = plan.prefix
    assert done["version"] == "0.1.1"
    assert os.readlink(prefix / "current") == "releases/0.1.1"
    assert version_in(prefix) == "0.1.1"  # a venv of its own, with the release's code in it
    assert (prefix / "current" / "bin" / "biblioedge").exists()
    assert not (prefix / "current" / "bin" / "pip").exists()  # pip is a tool, not a part
    assert (prefix / "tools").is_dir()
    assert Layout(prefix).state()["committed"] == "0.1.1"
    assert (prefix / "bootguard.py").read_text().startswith('"""A kiosk')
    assert oct(plan.data.stat().st_mode & 0o777) == "0o750"
    units = [Path(u) for u in done["units"]]  # type: ignore[union-attr]
    text = units[0].read_text()
    assert "@" not in re.sub(r"(?m)^#.*$", "", text)  # every placeholder filled
    assert f"ReadWritePaths={plan.data} {prefix}" in text
    assert "Type=notify" in text and "WatchdogSec=" in text and "NoNewPrivileges=yes" in text
    out = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    # verify really checks: a unit whose program is not there fails
    broken = tmp_path / "units" / "broken.service"
    broken.write_text(text.replace("/current/bin/biblioedge", "/nothere/bin/biblioedge"))
    bad = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True)
    assert bad.returncode != 0 and "nothere" in bad.stderr
    # udev rules: every rule is KEY op "value" pairs
    for line in Path(str(done["rules"])).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            for part in line.split(", "):
                assert re.fullmatch(r'[A-Z_]+(\{[^}]+\})?(==|!=|\+=|=)"[^"]*"', part), part
    # running it again changes nothing and does not fail
    assert install(plan, say=lambda _m: None)["version"] == "0.1.1"


def test_a_new_release_switches_and_rolls_back_for_real(
    tmp_path: Path, built_releases: dict[str, Path]
) -> None:
    plan = plan_in(tmp_path, built_releases["0.1.1"])
    install(plan, say=lambda _m: None)
    layout = Layout(plan.prefix)
    new = SoftwareRelease.model_validate_json(
        (built_releases["0.1.2"] / "release.json").read_text()
    )
    wheels = [built_releases["0.1.2"] / "wheels" / f for f in new.files(native_arch(), "gate")]
    build_release(layout, "0.1.2", wheels, built_releases["0.1.2"] / "wheels" / new.pip)
    assert layout.installed() == ["0.1.1", "0.1.2"]
    layout.switch("0.1.2")
    guard = [
        SYSTEM_PYTHON if Path(SYSTEM_PYTHON).exists() else sys.executable,
        str(plan.prefix / "bootguard.py"),
        str(plan.prefix),
    ]
    assert "attempt 1" in subprocess.run(guard, capture_output=True, text=True, check=True).stdout
    assert version_in(plan.prefix) == "0.1.2"
    # its self-test failed: back to the committed release, with the reason kept for central
    assert layout.roll_back("self-test: broker not connected") == "0.1.2"
    assert version_in(plan.prefix) == "0.1.1"
    outcome = layout.take_outcome()
    assert outcome is not None and outcome["result"] == "rolled_back"
    assert outcome["reason"] == "self-test: broker not connected"
    assert layout.take_outcome() is None  # reported once
    # tried again and committed: the old one stays as "previous"
    layout.switch("0.1.2")
    assert layout.commit("0.1.2")
    state = layout.state()
    assert (state["committed"], state["previous"], state["pending"]) == ("0.1.2", "0.1.1", None)


def fake_release(layout: Layout, version: str, exit_code: int) -> None:
    """A release whose program exits with ``exit_code`` (1: it dies at import)."""
    bin_dir = layout.release_dir(version) / "bin"
    bin_dir.mkdir(parents=True)
    program = bin_dir / "biblioedge"
    program.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    program.chmod(0o755)
    layout.mark_complete(version, {"version": version})


def systemd_start(layout: Layout, guard: Path) -> tuple[str, int]:
    """What systemd does for one start: ExecStartPre (the guard), then ExecStart."""
    pre = subprocess.run(
        [sys.executable, str(guard), str(layout.prefix), "--max-attempts", "3"],
        capture_output=True,
        text=True,
        check=True,
    )
    run = subprocess.run([str(layout.current / "bin" / "biblioedge")], check=False)
    return pre.stdout.strip(), run.returncode


def test_a_release_that_dies_at_import_is_rolled_back_by_the_boot_guard(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "prefix", max_attempts=3)
    guard = Path(__file__).resolve().parent.parent / "provisioning" / "bootguard.py"
    fake_release(layout, "1.0", 0)
    fake_release(layout, "2.0", 1)
    layout.adopt("1.0")
    layout.switch("2.0")
    said = []
    for _ in range(6):  # Restart=always: systemd keeps starting it
        message, code = systemd_start(layout, guard)
        said.append(message)
        if code == 0:
            break
    assert [s.split(",")[0] for s in said[:3]] == ["starting release 2.0 on trial"] * 3
    assert said[3].startswith("rolled back release 2.0")
    assert layout.current_version() == "1.0" and code == 0
    outcome = layout.take_outcome()
    assert outcome is not None and "after 3 starts" in outcome["reason"]
    assert layout.state()["pending"] is None


def test_layout_refuses_what_would_leave_a_kiosk_half_updated(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "prefix")
    fake_release(layout, "1.0", 0)
    layout.adopt("1.0")
    (layout.releases / "2.0").mkdir()  # a build cut by a power loss: no .complete
    with pytest.raises(LayoutError, match="not completely installed"):
        layout.switch("2.0")
    with pytest.raises(LayoutError, match="not a release version"):
        layout.release_dir("../../etc")
    fake_release(layout, "3.0", 0)
    fake_release(layout, "4.0", 0)
    layout.switch("3.0")
    with pytest.raises(LayoutError, match="still on trial"):
        layout.switch("4.0")
    # a state file that power loss or a person mangled: the kiosk believes the link
    layout.state_file.write_text("{not json")
    assert layout.state()["committed"] == "3.0"
    assert layout.current_version() == "3.0"


def test_a_disk_too_full_or_a_wheel_that_does_not_install_leaves_nothing(
    tmp_path: Path, built_releases: dict[str, Path]
) -> None:
    rel = SoftwareRelease.model_validate_json(
        (built_releases["0.1.1"] / "release.json").read_text()
    )
    wheels = [built_releases["0.1.1"] / "wheels" / f for f in rel.files(native_arch(), "gate")]
    pip_wheel = built_releases["0.1.1"] / "wheels" / rel.pip
    # a wheel that is not one (truncated on the way, or a broken build)
    bad = tmp_path / "broken-1.0-py3-none-any.whl"
    bad.write_bytes(b"PK\x03\x04 truncated")
    layout = Layout(tmp_path / "prefix")
    with pytest.raises(InstallError) as exc:
        build_release(layout, "9.0", [*wheels, bad], pip_wheel)
    assert exc.value.reason == "install_failed"
    assert not (layout.releases / "9.0").exists()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    with tmpfs(tmp_path / "small", 8) as small:
        tight = Layout(small / "prefix")
        with pytest.raises(InstallError) as exc:
            build_release(tight, "9.1", wheels, pip_wheel)
        assert exc.value.reason == "disk_full" and "MiB free" in exc.value.detail
        assert not (tight.releases / "9.1").exists()


@pytest.mark.parametrize("arch", ["aarch64", "x86_64"])
def test_every_kiosk_dependency_has_a_wheel_for(
    arch: str, tmp_path: Path, built_releases: dict[str, Path]
) -> None:
    """A kiosk installs with --no-index, so nothing may need building there: every dependency
    of the kiosk extras resolves to a binary wheel for this architecture (Raspberry Pi 4/5 and
    x86 mini-PCs), at the versions this environment pins."""
    (own,) = (built_releases["0.1.1"] / "wheels").glob("biblioedge-*.whl")
    platforms = [a for p in PLATFORMS[arch] for a in ("--platform", p)]
    report = tmp_path / "report.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "-q",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            "3.11",
            *platforms,
            "--target",
            str(tmp_path / "t"),
            "--report",
            str(report),
            f"{own}[kiosk]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    installs = json.loads(report.read_text())["install"]
    names = {i["metadata"]["name"].lower() for i in installs}
    assert {
        "onnxruntime",
        "opencv-python-headless",
        "numpy",
        "kivy",
        "faiss-cpu",
        "dlib-bin",
    } <= names
    assert all(i["download_info"]["url"].endswith(".whl") for i in installs)

"""``biblioedge install --role …``: lay a kiosk out on Debian 12 or Raspberry Pi OS.

What it does, in order, each step safe to repeat:

1. a system user and group for the agent (``biblioedge``), unless told not to;
2. the prefix (``/opt/biblioedge``: releases, ``current``, the boot guard), the data dir
   (``/var/lib/biblioedge``, mode 0750) and the config dir, owned by that user;
3. the first software release, built in its own venv from a ``release build`` directory and
   committed as it is (nothing to roll back to yet);
4. the systemd units for the agent and the kiosk screen, rendered with these paths, and the
   udev rules for card readers, relays and scanners;
5. ``systemctl daemon-reload`` and ``enable`` (unless ``--no-enable``, for images built
   offline and for tests).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from biblioedge.provisioning import bootguard
from biblioedge.provisioning.bootguard import Layout
from biblioedge.provisioning.release_build import native_arch
from biblioedge.provisioning.release_install import build_release
from biblioedge.releases import SoftwareRelease

Say = Callable[[str], None]
UNITS = ("biblioedge-agent.service", "biblioedge-kiosk.service")
RULES = "90-biblioedge.rules"


class InstallRefused(RuntimeError):
    """The machine or the arguments do not allow the install; the message says why."""


@dataclass
class Plan:
    role: str
    release: Path
    prefix: Path = Path("/opt/biblioedge")
    data: Path = Path("/var/lib/biblioedge")
    config: Path = Path("/etc/biblioedge/agent.toml")
    units_dir: Path = Path("/etc/systemd/system")
    udev_dir: Path = Path("/etc/udev/rules.d")
    user: str = "biblioedge"
    create_user: bool = True
    enable: bool = True
    screen: bool = True
    python: str = field(default_factory=lambda: shutil.which("python3") or "/usr/bin/python3")
    max_attempts: int = bootguard.MAX_ATTEMPTS
    ready_timeout_s: int = 180


def render(template: str, plan: Plan) -> str:
    values = {
        "@ROLE@": plan.role,
        "@USER@": plan.user,
        "@PREFIX@": str(plan.prefix),
        "@DATA@": str(plan.data),
        "@CONFIG@": str(plan.config),
        "@PYTHON@": plan.python,
        "@ATTEMPTS@": str(plan.max_attempts),
        "@READY_TIMEOUT@": str(plan.ready_timeout_s),
    }
    for key, value in values.items():
        template = template.replace(key, value)
    return template


def template(name: str) -> str:
    folder = "udev" if name.endswith(".rules") else "units"
    return resources.files("biblioedge.provisioning").joinpath(folder, name).read_text()


def _ensure_user(plan: Plan, say: Say) -> None:
    try:
        pwd.getpwnam(plan.user)
        return
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise InstallRefused(f"user {plan.user} does not exist and only root can create it")
    subprocess.run(
        [
            "useradd",
            "--system",
            "--home-dir",
            str(plan.data),
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            plan.user,
        ],
        check=True,
    )
    say(f"created system user {plan.user}")


def _chown(path: Path, plan: Plan) -> None:
    if plan.create_user and os.geteuid() == 0:
        shutil.chown(path, plan.user, plan.user)


def _stderr(text: str) -> None:
    sys.stderr.write(text + "\n")


def install(plan: Plan, say: Say = _stderr) -> dict[str, object]:
    if plan.role not in ("gate", "selfcheck", "desk", "exitgate"):
        raise InstallRefused(f"unknown role {plan.role!r}")
    try:
        release = SoftwareRelease.model_validate_json((plan.release / "release.json").read_text())
    except (OSError, ValueError) as exc:
        raise InstallRefused(f"{plan.release} is not a 'release build' directory: {exc}") from exc
    files = release.files(native_arch(), plan.role)
    wheels = [plan.release / "wheels" / f for f in files]
    missing = [w.name for w in wheels if not w.is_file()]
    if missing:
        raise InstallRefused(f"wheels missing from {plan.release}: {', '.join(missing[:5])}")
    if plan.create_user:
        _ensure_user(plan, say)
    for d in (plan.prefix, plan.prefix / "releases", plan.data, plan.config.parent):
        d.mkdir(parents=True, exist_ok=True)
        _chown(d, plan)
    os.chmod(plan.data, 0o750)
    layout = Layout(plan.prefix, plan.max_attempts)
    pip_wheel = plan.release / "wheels" / release.pip
    build_release(layout, release.version, wheels, pip_wheel, say=say)
    if layout.state()["committed"] is None:
        layout.adopt(release.version)
    shutil.copyfile(bootguard.__file__, plan.prefix / "bootguard.py")
    for path in (plan.prefix / "state.json", plan.prefix / "releases", plan.prefix / "tools"):
        _chown(path, plan)
    units = [UNITS[0], *([UNITS[1]] if plan.screen else [])]
    plan.units_dir.mkdir(parents=True, exist_ok=True)
    for unit in units:
        (plan.units_dir / unit).write_text(render(template(unit), plan))
    plan.udev_dir.mkdir(parents=True, exist_ok=True)
    (plan.udev_dir / RULES).write_text(render(template(RULES), plan))
    say(f"installed release {release.version} for {plan.role} under {plan.prefix}")
    if plan.enable:
        for cmd in (
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", *units],
            ["udevadm", "control", "--reload"],
        ):
            subprocess.run(cmd, check=False)
    return {
        "version": release.version,
        "prefix": str(plan.prefix),
        "units": [str(plan.units_dir / u) for u in units],
        "rules": str(plan.udev_dir / RULES),
    }

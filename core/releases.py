"""What a release is on the wire: TUF target names and the documents behind them.

Shared by central (which publishes them), the signing tool (which makes them) and the kiosks
(which verify and install them). Three kinds, each a TUF target whose ``custom`` field says
which kind and version it is:

- ``software/<version>/release.json``: a software release. It names, per CPU architecture and
  kiosk role, the exact wheels to install (the lock); each wheel is its own target
  ``wheels/<file>``, so a kiosk downloads only the wheels it does not hold yet: a release that
  changes biblioedge alone costs a kiosk one wheel, not the whole dependency set.
- ``models/<name>/<version>/manifest.json`` beside ``models/<name>/<version>/model.bin``: a face
  model and its manifest, for the kiosk's model store.
- ``config/<name>/<version>.json``: a configuration document of tunable settings.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["software", "model", "config"]
ROLES = ("gate", "selfcheck", "desk", "exitgate")
ARCHES = ("x86_64", "aarch64")
_NAME = r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}"
_WHEEL = re.compile(r"^[A-Za-z0-9_.+-]{1,160}\.whl$")
_TARGET = re.compile(
    rf"^(software/{_NAME}/release\.json|wheels/[A-Za-z0-9_.+-]{{1,160}}\.whl"
    rf"|models/{_NAME}/{_NAME}/(manifest\.json|model\.bin)|config/{_NAME}/{_NAME}\.json)$"
)
VERSION_PATTERN = rf"^{_NAME}$"
#: what a rollout names: a software version, or name@version of a model or a document
RELEASE_PATTERN = rf"^{_NAME}(@{_NAME})?$"


class ReleaseError(ValueError):
    """A release document or target name that cannot be used; the message says why."""


def valid_target(path: str) -> bool:
    return bool(_TARGET.match(path)) and ".." not in path


def software_target(version: str) -> str:
    return f"software/{version}/release.json"


def wheel_target(filename: str) -> str:
    if not _WHEEL.match(filename) or ".." in filename:
        raise ReleaseError(f"not a wheel file name: {filename!r}")
    return f"wheels/{filename}"


def model_targets(name: str, version: str) -> tuple[str, str]:
    return f"models/{name}/{version}/manifest.json", f"models/{name}/{version}/model.bin"


def split_ref(ref: str) -> tuple[str, str]:
    """``name@version`` of a model or configuration release, each part a valid name."""
    name, _, version = ref.partition("@")
    if not (re.match(VERSION_PATTERN, name) and re.match(VERSION_PATTERN, version)):
        raise ReleaseError(f"not name@version: {ref!r}")
    return name, version


def config_target(name: str, version: str) -> str:
    return f"config/{name}/{version}.json"


class SoftwareRelease(BaseModel):
    """``release.json``: the lock of one software release."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(pattern=VERSION_PATTERN)
    python: str = Field(pattern=r"^3\.[0-9]{1,2}$", description="CPython minor version")
    pip: str = Field(description="The pip wheel that installs the others (run from its own files)")
    wheels: dict[str, dict[str, list[str]]] = Field(
        description="arch -> role -> wheel files, installed together with --no-deps"
    )
    notes: str = Field(default="", max_length=2000)

    def model_post_init(self, _ctx: object) -> None:
        for arch, roles in self.wheels.items():
            if arch not in ARCHES:
                raise ValueError(f"unknown architecture {arch!r}")
            for role, files in roles.items():
                if role not in ROLES:
                    raise ValueError(f"unknown role {role!r}")
                for name in files:
                    wheel_target(name)
        wheel_target(self.pip)

    def files(self, arch: str, role: str) -> list[str]:
        try:
            return self.wheels[arch][role]
        except KeyError:
            raise ReleaseError(f"release {self.version} has nothing for {role} on {arch}") from None


class ConfigRelease(BaseModel):
    """A configuration document: tunable settings, applied like desired-state overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=VERSION_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    config: dict[str, object] = Field(default_factory=dict)

"""The release floor: the lowest software release IT allows anywhere in the fleet.

A signed release stays signed for ever, so without a floor a desired state naming an old
one (a mistake, or a stolen admin token) would put a release with known holes back on the
kiosks. IT sets the floor (``PUT /api/v1/releases/floor``, admin, audited; ``biblioedge
release floor``). Central then refuses desired states and rollouts naming a release below
it, and writes the floor into every desired-state document it signs, so each kiosk learns it
from central's signature and refuses on its own to install below it (``agent.updater``),
except to go back to its own previous committed release.

The floor is kept in ``floor.json`` beside the TUF repository it applies to (the releases
directory), written atomically: one small document needs no table and no migration.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from biblioedge.protocol import utc_now
from biblioedge.releases import VERSION_PATTERN, below_floor, version_key


class FloorError(ValueError):
    """A floor that cannot be set, or a release the floor refuses; ``status`` is HTTP's."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ReleaseFloor:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def get(self) -> dict[str, Any]:
        """``{"software": version or None, "set_by", "set_at"}``."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"software": None, "set_by": None, "set_at": None}
        if not isinstance(doc, dict):
            raise OSError(f"{self.path} is not a floor document")
        return doc

    @property
    def software(self) -> str | None:
        value = self.get().get("software")
        return str(value) if value else None

    def set(self, version: str | None, actor: str) -> dict[str, Any]:
        if version is not None and (
            not re.match(VERSION_PATTERN, version) or version_key(version) is None
        ):
            raise FloorError(422, f"{version!r} is not a release version (1.4.0, 2.0.1rc1)")
        doc = {"software": version, "set_by": actor, "set_at": utc_now().isoformat()}
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(doc), encoding="utf-8")
            os.replace(tmp, self.path)
        return doc

    def check(self, release: str | None) -> None:
        """Refuses a software release below the floor (None names no release: fine)."""
        floor = self.software
        if release is not None and below_floor(release, floor):
            raise FloorError(
                409, f"release {release} is below the release floor {floor} IT has set"
            )

"""The on-device model store: verified model files by content hash, one active model per task.

Layout under ``<data_dir>/models``::

    blobs/<sha256>              the model files, read-only, named by their hash
    manifests/<name>@<version>.json
    state.json                  {"active": {task: ref}, "history": {task: [older refs]}}

``add`` refuses a file whose hash is not the manifest's; ``activate`` re-verifies the file
before switching; ``verify`` re-hashes everything (bit rot on an SD card is real). State is
written atomically (temp file + rename + fsync), so a power cut leaves the old or the new
state, never a torn one. The fleet pushes models through the same ``add``/``activate``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biblioedge.models.manifest import Manifest, ManifestError, Task, load_manifest

Progress = Callable[[int, int], None]


class ModelStoreError(RuntimeError):
    """The store refused an operation; the active models are unchanged."""


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredModel:
    manifest: Manifest
    path: Path
    active: bool


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "manifests").mkdir(parents=True, exist_ok=True)

    # -- state --------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        path = self.root / "state.json"
        if not path.exists():
            return {"active": {}, "history": {}}
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelStoreError(f"{path} is unreadable: {exc}") from exc
        return {"active": dict(state.get("active", {})), "history": dict(state.get("history", {}))}

    def _save(self, state: dict[str, Any]) -> None:
        atomic_write(self.root / "state.json", json.dumps(state, indent=2).encode())

    # -- queries ------------------------------------------------------------------------

    def manifest(self, ref: str) -> Manifest:
        path = self.root / "manifests" / f"{ref}.json"
        if not path.exists():
            raise ModelStoreError(f"no model {ref} in the store")
        try:
            return load_manifest(path)
        except ManifestError as exc:
            raise ModelStoreError(str(exc)) from exc

    def blob(self, manifest: Manifest) -> Path:
        return self.root / "blobs" / manifest.sha256

    def list(self) -> list[StoredModel]:
        active = set(self._state()["active"].values())
        out = []
        for path in sorted((self.root / "manifests").glob("*.json")):
            try:
                m = load_manifest(path)
            except ManifestError:
                continue
            out.append(StoredModel(m, self.blob(m), m.ref in active))
        return out

    def active(self, task: Task) -> Manifest | None:
        ref = self._state()["active"].get(task)
        return self.manifest(ref) if ref else None

    def verified_path(self, manifest: Manifest) -> Path:
        """The file of ``manifest``, after checking its hash: only verified models load."""
        path = self.blob(manifest)
        if not path.exists():
            raise ModelStoreError(f"{manifest.ref}: model file missing")
        actual = sha256_file(path)
        if actual != manifest.sha256:
            raise ModelStoreError(
                f"{manifest.ref}: file hash {actual[:12]}… does not match manifest "
                f"{manifest.sha256[:12]}… (corrupt or replaced)"
            )
        return path

    def verify(self) -> dict[str, str]:
        """ref -> "ok" or the reason it is not."""
        result: dict[str, str] = {}
        for item in self.list():
            try:
                self.verified_path(item.manifest)
                result[item.manifest.ref] = "ok"
            except ModelStoreError as exc:
                result[item.manifest.ref] = str(exc)
        return result

    # -- changes ------------------------------------------------------------------------

    def add(self, file: Path, manifest: Manifest, progress: Progress | None = None) -> Manifest:
        if not file.is_file():
            raise ModelStoreError(f"{file} is not a file")
        actual = sha256_file(file, progress)
        if actual != manifest.sha256:
            raise ModelStoreError(
                f"{file.name}: sha256 {actual} is not the manifest's {manifest.sha256}"
            )
        blob = self.blob(manifest)
        if not blob.exists():
            tmp = blob.with_suffix(".part")
            shutil.copyfile(file, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, blob)
        atomic_write(
            self.root / "manifests" / f"{manifest.ref}.json",
            manifest.model_dump_json(indent=2).encode(),
        )
        return manifest

    def activate(self, ref: str, check: Callable[[Manifest, Path], None] | None = None) -> None:
        """Make ``ref`` the active model of its task; ``check`` may load it first (a model
        whose outputs do not match its manifest is refused here, before anything uses it)."""
        manifest = self.manifest(ref)
        path = self.verified_path(manifest)
        if check is not None:
            try:
                check(manifest, path)
            except Exception as exc:
                raise ModelStoreError(f"{ref} refused: {exc}") from exc
        state = self._state()
        current = state["active"].get(manifest.task)
        if current == ref:
            return
        if current:
            state["history"].setdefault(manifest.task, []).append(current)
        state["active"][manifest.task] = ref
        self._save(state)

    def deactivate(self, task: Task) -> None:
        """No active model for ``task``: the engine falls back to its built-in backend."""
        state = self._state()
        current = state["active"].pop(task, None)
        if current is None:
            return
        state["history"].setdefault(task, []).append(current)
        self._save(state)

    def active_refs(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._state()["active"].items()}

    def rollback(self, task: Task) -> str | None:
        """Back to the previously active model of ``task``; None when there was none."""
        state = self._state()
        history = state["history"].get(task, [])
        while history:
            ref = history.pop()
            try:
                self.verified_path(self.manifest(ref))
            except ModelStoreError:
                continue  # a previous model that went bad is skipped, not restored
            state["active"][task] = ref
            self._save(state)
            return str(ref)
        state["active"].pop(task, None)
        self._save(state)
        return None

"""Face models and configuration documents from central's signed releases, through the same
health gate as the software.

Central names them in the desired state: ``models`` (task -> ``name@version``) and
``config_release`` (``name@version``); ``builtin`` means none (the engine's own dlib backend,
no configuration document). For each, the kiosk:

1. waits for an idle moment in the maintenance window, as for software;
2. fetches the signed files through TUF (a model's manifest and file, with progress; a
   configuration document) and checks them: the manifest names the release and its task, the
   file hashes to the manifest, the model loads (``models.engine.check_model``), the document's
   settings are all tunable and valid;
3. records the trial *before* switching (``<data>/updates/<kind>.json``), switches (the model
   store's ``activate``; the document becomes the one applied at start) and restarts;
4. at the next start the trial is counted; a release that does not reach the self-test within
   ``max_attempts`` starts, or fails it, or crashes during the soak, is rolled back (the model
   store goes back to the model it had; the previous document applies again) and refused
   from then on; one that stays healthy is committed (``agent.selftest``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuf.api.metadata import TargetFile

from biblioedge.agent.release_client import ReleaseClient, ReleaseUnavailable
from biblioedge.agent.update_loop import Note, UpdateLoop, UpdateSettings
from biblioedge.models.manifest import Manifest, Task
from biblioedge.models.store import ModelStore, ModelStoreError, atomic_write
from biblioedge.protocol import BUILTIN, UpdateOutcome
from biblioedge.releases import ConfigRelease, config_target, model_targets, split_ref

MAX_ATTEMPTS = 3


class TrackState:
    """What a kind of release is at on this kiosk, in one atomically written JSON file:
    ``committed`` (key -> ref), the one ``pending`` on trial, ``refused`` refs and the
    ``outcome`` of the last trial until it is reported."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"committed": {}, "pending": None, "refused": [], "outcome": None}
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return doc
        except (OSError, ValueError):
            return doc  # unreadable: nothing on trial, nothing refused; the store still is
        if not isinstance(saved, dict):
            return doc
        # a file that does not hold the expected types is read as empty, never half-trusted
        committed, refused = saved.get("committed"), saved.get("refused")
        if isinstance(committed, dict):
            doc["committed"] = {str(k): str(v) for k, v in committed.items()}
        if isinstance(refused, list):
            doc["refused"] = [str(r) for r in refused][-32:]
        for key in ("pending", "outcome"):
            if isinstance(saved.get(key), dict):
                doc[key] = saved[key]
        return doc

    def save(self, doc: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(doc, indent=1).encode())

    def begin(self, key: str, ref: str, previous: str | None) -> None:
        doc = self.load()
        doc["pending"] = {
            "key": key,
            "ref": ref,
            "previous": previous,
            "attempts": 0,
            "at": time.time(),
        }
        self.save(doc)

    def pending(self) -> dict[str, Any] | None:
        p = self.load()["pending"]
        return p if isinstance(p, dict) and "ref" in p and "key" in p else None

    def started(self) -> int:
        """Counts a start on trial; returns how many there were."""
        doc = self.load()
        if not isinstance(doc["pending"], dict):
            return 0
        doc["pending"]["attempts"] = int(doc["pending"].get("attempts", 0)) + 1
        self.save(doc)
        return int(doc["pending"]["attempts"])

    def finish(self, result: str, reason: str = "") -> dict[str, Any] | None:
        doc = self.load()
        p = doc["pending"]
        if not isinstance(p, dict):
            return None
        if result == "committed":
            doc["committed"][p["key"]] = p["ref"]
        else:
            doc["refused"] = [*doc["refused"], p["ref"]][-32:]
        doc["pending"] = None
        doc["outcome"] = {
            "version": p["ref"],
            "result": result,
            "reason": reason,
            "at": time.time(),
        }
        self.save(doc)
        return dict(p)

    def take_outcome(self) -> dict[str, Any] | None:
        doc = self.load()
        outcome = doc["outcome"]
        if not isinstance(outcome, dict):
            return None
        doc["outcome"] = None
        self.save(doc)
        doc["outcome"] = outcome
        return dict(outcome)

    def last_outcome(self) -> UpdateOutcome | None:
        o = self.load()["outcome"]
        if not isinstance(o, dict):
            return None
        try:
            return UpdateOutcome.model_validate(o)
        except ValueError:
            return None


class _Track:
    """What a model and a configuration document on trial share; each says how a switch can
    be left unfinished and how it is undone."""

    kind = ""

    def __init__(self, state: TrackState) -> None:
        self.state = state

    def on_trial(self) -> bool:
        return self.state.pending() is not None

    def unfinished(self, pending: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def undo(self, pending: dict[str, Any]) -> None:
        raise NotImplementedError

    def before_start(self, max_attempts: int = MAX_ATTEMPTS) -> str | None:
        """Counts a start of what is on trial; rolls it back when its switch did not finish
        or it failed to start too often. Returns the reason when it rolled back."""
        p = self.state.pending()
        if p is None:
            return None
        reason = self.unfinished(p)
        if reason is None and self.state.started() > max_attempts:
            reason = f"did not start {max_attempts} times"
        if reason is None:
            return None
        self.roll_back(reason)
        return reason

    def commit(self) -> bool:
        return self.state.finish("committed") is not None

    def roll_back(self, reason: str) -> None:
        p = self.state.pending()
        if p is None:
            return
        self.undo(p)
        self.state.finish("rolled_back", reason)

    def take_outcome(self) -> dict[str, Any] | None:
        return self.state.take_outcome()


class ModelTrack(_Track):
    """The models on trial, for the health gate."""

    kind = "model"

    def __init__(self, state: TrackState, store: ModelStore) -> None:
        super().__init__(state)
        self.store = store

    def active(self) -> dict[str, str]:
        return self.store.active_refs()

    def unfinished(self, pending: dict[str, Any]) -> str | None:
        if self.active().get(pending["key"], BUILTIN) != pending["ref"]:
            return "the switch to the new model did not finish"
        return None

    def undo(self, pending: dict[str, Any]) -> None:
        task: Task = pending["key"]
        previous = pending.get("previous")
        try:
            if previous and previous != BUILTIN:
                self.store.activate(str(previous))  # it ran here before: no load check
            else:
                self.store.deactivate(task)
        except ModelStoreError:
            self.store.rollback(task)  # the previous model went bad meanwhile: the one before


class ConfigTrack(_Track):
    """The configuration document applied at start: the one on trial, else the committed one."""

    kind = "config"

    def __init__(self, state: TrackState, folder: Path) -> None:
        super().__init__(state)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, ref: str) -> Path:
        return self.folder / f"{ref}.json"

    def document(self, ref: str | None) -> ConfigRelease | None:
        if not ref or ref == BUILTIN:
            return None
        try:
            return ConfigRelease.model_validate_json(self.path(ref).read_bytes())
        except (OSError, ValueError):
            return None

    def effective(self) -> str | None:
        p = self.state.pending()
        if p is not None:
            return str(p["ref"])
        ref = self.state.load()["committed"].get("config")
        return str(ref) if ref else None

    def unfinished(self, pending: dict[str, Any]) -> str | None:
        if pending["ref"] != BUILTIN and self.document(str(pending["ref"])) is None:
            return "the document on trial is missing or unreadable"
        return None

    def undo(self, pending: dict[str, Any]) -> None:
        """Nothing to undo: the committed document applies again at the next start."""


class _ArtifactUpdater(UpdateLoop):
    def __init__(
        self,
        state: TrackState,
        client: Callable[[], ReleaseClient],
        settings: UpdateSettings,
        note: Note,
        restart: Callable[[], None],
        changed: Callable[[], None],
    ) -> None:
        super().__init__(client, settings, note, restart, changed)
        self.state = state

    def _report(self, wanted: str | None, committed: str | None) -> None:
        doc = self.state.load()
        p = doc["pending"] if isinstance(doc["pending"], dict) else None
        self.report = self.report.model_copy(
            update={
                "wanted": wanted,
                "committed": committed,
                "pending": p and str(p["ref"]),
                "last": self.state.last_outcome(),
                "refused": [str(r) for r in doc["refused"]][-32:],
            }
        )

    async def _refresh(self) -> None:
        """The newest trusted metadata, once per install."""
        client = await asyncio.to_thread(self.client)
        await asyncio.to_thread(client.refresh)

    async def _info(self, target: str) -> TargetFile:
        return await asyncio.to_thread(self.client().info, target)

    async def _fetch(self, info: TargetFile, into: Path, what: str) -> Path:
        _, seen = self.progress(what, info.length)
        got = await asyncio.to_thread(self.client().fetch, info, into, seen)
        self.report = self.report.model_copy(update={"done_bytes": info.length})
        return got.path

    async def _switched(self, ref: str, extra: dict[str, Any]) -> None:
        self._report(self.report.wanted, self.report.committed)  # now on trial
        self._phase("restarting")
        await self.note("device.update_installed", {"kind": self.kind, "version": ref, **extra})
        self.restart()


class ModelUpdater(_ArtifactUpdater):
    """Brings the active model of each task to the one central wants."""

    name = "model_updater"
    kind = "model"

    def __init__(
        self,
        track: ModelTrack,
        client: Callable[[], ReleaseClient],
        settings: UpdateSettings,
        note: Note,
        restart: Callable[[], None],
        changed: Callable[[], None] = lambda: None,
        check: Callable[[Manifest, Path], None] | None = None,
    ) -> None:
        super().__init__(track.state, client, settings, note, restart, changed)
        self.track = track
        self.check = check
        self.wanted: dict[str, str] = {}
        self._report(None, None)

    def want(self, models: dict[str, str]) -> None:
        if models != self.wanted:
            self.wanted = dict(models)
            self.wake()

    def todo(self) -> tuple[str, str] | None:
        active = self.track.active()
        for task, ref in sorted(self.wanted.items()):
            if active.get(task, BUILTIN) != ref:
                return task, ref
        return None

    async def step(self) -> None:
        todo = self.todo()
        committed = self.state.load()["committed"]
        task_ref = todo or next(iter(sorted(self.wanted.items())), None)
        self._report(task_ref and task_ref[1], task_ref and committed.get(task_ref[0]))
        if self.track.on_trial():
            self._phase("trial", detail="a model is on trial")
            return
        if todo is None:
            self._phase("idle")
            return
        task, ref = todo
        if ref in self.state.load()["refused"]:
            self._phase("failed", "rolled_back", f"model {ref} was rolled back here")
            return
        if not self.may_start():
            return
        try:
            await self._install(task, ref)
        except ReleaseUnavailable as exc:
            await self.failed(ref, exc.reason, exc.detail)
        except ModelStoreError as exc:
            await self.failed(ref, "bad_model", str(exc))

    async def _install(self, task: str, ref: str) -> None:
        store = self.track.store
        previous = self.track.active().get(task)
        if ref == BUILTIN:
            self.state.begin(task, ref, previous)
            await asyncio.to_thread(store.deactivate, task)  # type: ignore[arg-type]
            await self._switched(ref, {"task": task})
            return
        name, version = split_ref(ref)
        meta_target, blob_target = model_targets(name, version)
        incoming = store.root / "incoming"
        incoming.mkdir(exist_ok=True)
        self._phase("downloading")
        await self._refresh()
        meta_path = await self._fetch(await self._info(meta_target), incoming / f"{ref}.json", ref)
        try:
            manifest = Manifest.model_validate_json(meta_path.read_bytes())
        except ValueError as exc:
            raise ReleaseUnavailable("bad_release", f"manifest: {exc}") from exc
        if manifest.ref != ref or manifest.task != task:
            raise ReleaseUnavailable(
                "bad_release", f"the manifest is {manifest.ref} for {manifest.task}, not {task}"
            )
        if not any(m.manifest.ref == ref for m in store.list()):
            blob_info = await self._info(blob_target)
            if blob_info.hashes.get("sha256") != manifest.sha256:
                raise ReleaseUnavailable("bad_release", "the model file is not the manifest's")
            blob = await self._fetch(blob_info, incoming / manifest.sha256, ref)
            self._phase("installing")
            await asyncio.to_thread(store.add, blob, manifest)
            blob.unlink(missing_ok=True)
        self._phase("installing")
        self.state.begin(task, ref, previous)
        try:
            await asyncio.to_thread(store.activate, ref, self.check)
        except ModelStoreError:
            self.state.finish("rolled_back", "refused at activation")
            self.state.take_outcome()  # reported as the failure below, not as a trial
            raise
        await self._switched(ref, {"task": task})


class ConfigUpdater(_ArtifactUpdater):
    """Brings the configuration document applied at start to the one central wants."""

    name = "config_updater"
    kind = "config"

    def __init__(
        self,
        track: ConfigTrack,
        client: Callable[[], ReleaseClient],
        settings: UpdateSettings,
        note: Note,
        restart: Callable[[], None],
        validate: Callable[[ConfigRelease], None],
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(track.state, client, settings, note, restart, changed)
        self.track = track
        self.validate = validate
        self.wanted: str | None = None
        self._report(None, self.track.effective())

    def want(self, ref: str | None) -> None:
        if ref != self.wanted:
            self.wanted = ref
            self.wake()

    async def step(self) -> None:
        committed = self.state.load()["committed"].get("config")
        self._report(self.wanted, committed)
        if self.track.on_trial():
            self._phase("trial", detail="a configuration document is on trial")
            return
        if self.wanted is None or self.wanted == (committed or BUILTIN):
            self._phase("idle")
            return
        ref = self.wanted
        if ref in self.state.load()["refused"]:
            self._phase("failed", "rolled_back", f"configuration {ref} was rolled back here")
            return
        if not self.may_start():
            return
        try:
            await self._install(ref, committed)
        except ReleaseUnavailable as exc:
            await self.failed(ref, exc.reason, exc.detail)

    async def _install(self, ref: str, committed: str | None) -> None:
        if ref != BUILTIN:
            name, version = split_ref(ref)
            self._phase("downloading")
            part = self.track.folder / f"{ref}.part"
            await self._refresh()
            path = await self._fetch(await self._info(config_target(name, version)), part, ref)
            try:
                doc = ConfigRelease.model_validate_json(path.read_bytes())
                if f"{doc.name}@{doc.version}" != ref:
                    raise ValueError(f"the document is {doc.name}@{doc.version}")
                self.validate(doc)
            except ValueError as exc:
                path.unlink(missing_ok=True)
                raise ReleaseUnavailable("bad_config", str(exc)[:500]) from exc
            path.replace(self.track.path(ref))
        self._phase("installing")
        self.state.begin("config", ref, committed)
        await self._switched(ref, {})

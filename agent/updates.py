"""The runtime's updates: software, model and configuration releases, and the release trial.

Each kind of release has its updater (wanted by desired state, fetched through one shared
TUF client, installed in the maintenance window and never mid-transaction); the trial
self-tests and soaks whatever is on trial before it is committed (:mod:`.selftest`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from biblioedge import __version__
from biblioedge.agent.config import AgentConfig, apply_tunables
from biblioedge.agent.selftest import RESTART_EXIT, Check, ReleaseTrial, TrialSettings
from biblioedge.models.store import ModelStore, ModelStoreError
from biblioedge.protocol import DesiredState
from biblioedge.provisioning.bootguard import Layout
from biblioedge.provisioning.enroll import EnrollError, IdentityFiles, fetch_release_root
from biblioedge.settings import ConfigError

if TYPE_CHECKING:
    from biblioedge.agent.artifact_update import (
        ConfigTrack,
        ConfigUpdater,
        ModelTrack,
        ModelUpdater,
    )
    from biblioedge.agent.release_client import ReleaseClient
    from biblioedge.agent.update_loop import Note, UpdateSettings
    from biblioedge.agent.updater import Updater
    from biblioedge.models.manifest import Manifest
    from biblioedge.releases import ConfigRelease

log = logging.getLogger("biblioedge.agent")


class Updates:
    """The updaters of the three kinds of release (when ``update.enabled``) and the trial."""

    def __init__(
        self,
        config: Callable[[], AgentConfig],
        note: Note,
        busy: Callable[[], bool],
        exit_for_restart: Callable[[int], None],
        changed: Callable[[], None],
        crashes: Callable[[], int],
        checks: dict[str, Check],
    ) -> None:
        self._config = config
        self._exit_for_restart = exit_for_restart
        self._client: ReleaseClient | None = None
        self.updater: Updater | None = None
        self.model_updater: ModelUpdater | None = None
        self.config_updater: ConfigUpdater | None = None
        self.model_track: ModelTrack | None = None
        self.config_track: ConfigTrack | None = None
        cfg = config()
        layout = None
        tracks: list[ModelTrack | ConfigTrack] = []
        if cfg.update.enabled:
            # the updaters and their TUF client (tuf, httpx: ~8 MB resident) load only on a
            # kiosk that takes updates; a simulated or pinned kiosk never pays for them
            from biblioedge.agent.artifact_update import (
                ConfigTrack,
                ConfigUpdater,
                ModelTrack,
                ModelUpdater,
                TrackState,
            )
            from biblioedge.agent.update_loop import UpdateSettings
            from biblioedge.agent.updater import Updater
            from biblioedge.provisioning.release_build import native_arch

            layout = Layout(cfg.update.prefix)
            updates = cfg.data_dir / "updates"
            self.model_track = ModelTrack(
                TrackState(updates / "model.json"), ModelStore(cfg.data_dir / "models")
            )
            self.config_track = ConfigTrack(TrackState(updates / "config.json"), updates / "config")
            tracks = [self.model_track, self.config_track]
            for track in tracks:  # before the face engine loads what is on trial
                reason = track.before_start()
                if reason:
                    log.error("%s release on trial rolled back: %s", track.kind, reason)

            def settings(kind: str) -> UpdateSettings:
                return UpdateSettings(
                    arch=native_arch(),
                    role=cfg.role,
                    retry_s=cfg.update.retry_s,
                    window=lambda: self._config().update.maintenance_window,
                    busy=busy,
                    held=lambda: self._other_trial(kind),
                    compile_bytecode=cfg.update.compile_bytecode,
                )

            self.updater = Updater(
                layout, self._shared_client, settings("software"), note, self._restart, changed
            )
            self.model_updater = ModelUpdater(
                self.model_track,
                self._shared_client,
                settings("model"),
                note,
                self._restart,
                changed,
                check=_check_model,
            )
            self.config_updater = ConfigUpdater(
                self.config_track,
                self._shared_client,
                settings("config"),
                note,
                self._restart,
                self._check_config_release,
                changed,
            )
        self.trial = ReleaseTrial(
            layout,
            TrialSettings(
                __version__,
                soak_s=cfg.update.soak_s,
                ready_timeout_s=cfg.update.ready_timeout_s,
            ),
            checks,
            note,
            exit_for_restart,
            crashes,
            tracks,
        )

    def components(self) -> list[ReleaseTrial | Updater | ModelUpdater | ConfigUpdater]:
        updaters = (self.updater, self.model_updater, self.config_updater)
        return [self.trial, *(u for u in updaters if u is not None)]

    def want(self, desired: DesiredState) -> None:
        """The releases a newly applied desired state asks for."""
        if self.updater is not None:
            self.updater.want(desired.software, desired.software_floor)
        if self.model_updater is not None:
            self.model_updater.want({str(key): ref for key, ref in desired.models.items()})
        if self.config_updater is not None:
            self.config_updater.want(desired.config_release)

    def _restart(self) -> None:
        self._exit_for_restart(RESTART_EXIT)

    # -- reported state -------------------------------------------------------------------

    def active_models(self) -> dict[str, str]:
        if self.model_track is not None:
            return dict(self.model_track.active())
        data_dir = self._config().data_dir
        if not (data_dir / "models" / "state.json").exists():
            return {}
        try:
            return ModelStore(data_dir / "models").active_refs()
        except ModelStoreError:
            return {}

    def config_release(self) -> str | None:
        return None if self.config_track is None else self.config_track.effective()

    # -- configuration documents ----------------------------------------------------------

    def with_config_release(self, config: AgentConfig) -> AgentConfig:
        """The configuration document in force applies over the desired-state overrides."""
        if self.config_track is None:
            return config
        doc = self.config_track.document(self.config_track.effective())
        return config if doc is None else apply_tunables(config, doc.config)

    def start_config_release(self, config: AgentConfig) -> AgentConfig:
        """Apply the document in force at start; one on trial that does not apply goes back."""
        if self.config_track is None:
            return config
        try:
            config = self.with_config_release(config)
        except ConfigError as exc:
            if self.config_track.on_trial():
                self.config_track.roll_back(f"does not apply: {exc}")
                log.error("configuration on trial rolled back: %s", exc)
            else:
                log.error("the committed configuration document does not apply: %s", exc)
            return config
        ref = self.config_track.effective()
        if ref:
            log.info("configuration document %s applied", ref)
        return config

    def _check_config_release(self, doc: ConfigRelease) -> None:
        apply_tunables(self._config(), doc.config)  # raises ConfigError: every key, every value

    def _other_trial(self, kind: str) -> str | None:
        return next((t.kind for t in self.trial.on_trial() if t.kind != kind), None)

    # -- the release client ---------------------------------------------------------------

    def _shared_client(self) -> ReleaseClient:
        if self._client is None:
            self._client = self._release_client()
        return self._client

    def _release_client(self) -> ReleaseClient:
        from biblioedge.agent.release_client import ReleaseClient, ReleaseUnavailable

        cfg = self._config()
        central = cfg.security.central_url
        if not central:
            raise ReleaseUnavailable("no_central", "security.central_url is not set")
        files = IdentityFiles(cfg.identity_dir)
        context = ssl.create_default_context(cafile=files.ca) if files.ca.exists() else None
        tuf_dir = cfg.data_dir / "tuf"
        bootstrap = None
        if not (tuf_dir / "root.json").exists() and context is not None:
            try:
                bootstrap = fetch_release_root(central, context)
            except EnrollError as exc:
                raise ReleaseUnavailable("unreachable", str(exc)) from exc
        return ReleaseClient(tuf_dir, central, context, bootstrap=bootstrap)


def _check_model(manifest: Manifest, path: Path) -> None:
    """Loads the model once before it is activated."""
    # the face engine (numpy, onnxruntime) is imported only then: a self-check without a
    # camera never loads it
    from biblioedge.models.engine import check_model

    check_model(manifest, path)

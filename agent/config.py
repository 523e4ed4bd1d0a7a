"""Agent configuration: a TOML file, overridden by environment variables and secret files.

Precedence (last wins): defaults < TOML file < ``BIBLIOEDGE_AGENT_*`` environment < ``*_FILE``
secret files. Nested fields use ``__``: ``BIBLIOEDGE_AGENT_BROKER__URL=mqtt://host:1883``. Any
variable ending in ``_FILE`` names a file whose stripped content is the value, which is how
systemd credentials and container secrets are handed over without landing in the repo or ``ps``.
Unknown keys are rejected everywhere so a typo never silently falls back to a default.
Each role's section (``[gate]``, ``[selfcheck]``, ``[desk]``, ``[exitgate]``) lives in the
role's package beside its flow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from biblioedge.agent.desk.config import DeskConfig
from biblioedge.agent.exitgate.config import ExitgateConfig
from biblioedge.agent.gate.config import GateConfig
from biblioedge.agent.selfcheck.config import SelfcheckConfig
from biblioedge.agent.ui_config import ScreenConfig, SoundConfig
from biblioedge.protocol import Role, valid_id
from biblioedge.settings import (
    BrokerConfig,
    ConfigError,
    LogConfig,
    StrictModel,
    deep_merge,
    explain,
    load_document,
    set_path,
)

ENV_PREFIX = "BIBLIOEDGE_AGENT_"


class SyncConfig(StrictModel):
    batch_max_events: int = Field(
        default=500, ge=1, le=5000, description="Most events in one MQTT message"
    )
    batch_max_bytes: int = Field(
        default=512 * 1024, ge=1024, le=900 * 1024, description="Most bytes in one MQTT message"
    )
    max_inflight_batches: int = Field(
        default=8, ge=1, le=64, description="Batches published but not yet acknowledged"
    )
    ack_timeout_s: float = Field(
        default=10.0, gt=0, description="Resend unacknowledged batches after this long"
    )
    idle_poll_s: float = Field(
        default=0.5, gt=0, description="Look for events written by other processes this often"
    )
    state_interval_s: float = Field(default=30.0, gt=0, description="Re-report state this often")


class OutboxConfig(StrictModel):
    max_events: int = Field(
        default=1_000_000,
        ge=100,
        description="Refuse new events beyond this many unacknowledged ones (protects the disk)",
    )
    alarm_ratio: float = Field(
        default=0.8, gt=0, lt=1, description="Raise an alarm event when the outbox is this full"
    )
    keep_acked_h: float = Field(
        default=168,
        ge=0,
        le=24 * 90,
        description="Keep events central acknowledged this long (hours), so that a central "
        "restored from a backup can ask for them again; given up first when the disk fills; "
        "0 deletes them at once",
    )


class StorageConfig(StrictModel):
    reserve_mb: float = Field(
        default=16,
        ge=0,
        description="Below this much free space on the data dir's disk the kiosk stops taking "
        "what it would have to record (degraded: disk_full) until space returns",
    )
    ballast_mb: float = Field(
        default=8,
        ge=0,
        description="Emergency space kept as a file in the data dir and released when the disk "
        "fills, so the kiosk can still open its store, deliver what it holds and report; "
        "0 disables it",
    )
    check_s: float = Field(default=2.0, gt=0, le=60, description="How often free space is checked")


class AgentSecurityConfig(StrictModel):
    require: bool = Field(
        default=True,
        description="Refuse to run without an enrolled identity: a TLS broker (mqtts://), a "
        "client certificate and central's control keys. Only the demo on a machine without "
        "mosquitto turns it off.",
    )
    identity_dir: Path | None = Field(
        default=None,
        description="device.key, device.crt and ca.crt from `biblioedge enroll`; default "
        "<data_dir>/identity",
    )
    central_url: str | None = Field(
        default=None, description="Central's HTTPS URL (renewal), written by enroll"
    )
    control_keys: dict[str, str] = Field(
        default_factory=dict,
        description="kid -> ed25519 public key central signs acks, desired state, commands "
        "and gallery deltas with; written by enroll",
    )
    seal_key: str | None = Field(
        default=None, description="Central's X25519 key desks seal registrations to"
    )
    renew_check_s: float = Field(
        default=3600.0, gt=0, description="How often to check whether the certificate is due"
    )
    renew_after: float = Field(
        default=2 / 3,
        gt=0,
        lt=1,
        description="Renew the certificate once this fraction of its lifetime has passed "
        "(a year's certificate: four months ahead, time enough to ride out an outage)",
    )
    command_max_age_s: float = Field(
        default=600.0, gt=0, description="Commands issued longer ago than this are refused"
    )


class MetricsConfig(StrictModel):
    enabled: bool = Field(default=True, description="Serve Prometheus metrics")
    host: str = Field(default="127.0.0.1", description="Address of the metrics endpoint")
    port: int = Field(default=9108, ge=0, le=65535, description="Port; 0 picks a free one")


class SupervisorConfig(StrictModel):
    restart_budget: int = Field(
        default=5, ge=0, description="Restarts allowed per component within budget_window_s"
    )
    budget_window_s: float = Field(default=60.0, gt=0, description="Window of restart_budget")
    stall_timeout_s: float = Field(
        default=30.0, gt=0, description="A component silent for this long is restarted"
    )
    shutdown_timeout_s: float = Field(
        default=4.0, gt=0, le=30, description="Grace period for components on SIGTERM"
    )


class UpdateConfig(StrictModel):
    enabled: bool = Field(
        default=False,
        description="Install the software releases central wants (a kiosk installed with "
        "'biblioedge install' turns this on)",
    )
    prefix: Path = Field(
        default=Path("/opt/biblioedge"), description="Where the releases live (current, releases/)"
    )
    soak_s: float = Field(
        default=600.0, ge=0, description="Healthy time on a new release before it is committed"
    )
    ready_timeout_s: float = Field(
        default=120.0, gt=0, description="The self-test must pass within this, or roll back"
    )
    retry_s: float = Field(default=60.0, gt=0, description="Wait before retrying a failed step")
    maintenance_window: str | None = Field(
        default=None,
        description="Local time when installs may start, HH:MM-HH:MM (may wrap midnight); "
        "none: any time the kiosk is idle",
    )
    compile_bytecode: bool = Field(
        default=True, description="Compile a new release at install (faster starts on a Pi)"
    )

    @field_validator("maintenance_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from biblioedge.agent.window import valid_window

        return valid_window(value)


class SimulatorConfig(StrictModel):
    enabled: bool = Field(default=False, description="Emit simulated events of the role")
    rate_per_s: float = Field(default=1.0, ge=0, le=10_000, description="Simulated events/s")
    seed: int | None = Field(default=None, description="Random seed for repeatable runs")


class FaceConfig(StrictModel):
    intra_threads: int = Field(
        default=2, ge=1, le=16, description="onnxruntime threads per inference (a Pi 4 has 4)"
    )
    inter_threads: int = Field(default=1, ge=1, le=8, description="onnxruntime parallel ops")
    optimization: Literal["disable", "basic", "extended", "all"] = Field(
        default="all", description="onnxruntime graph optimization level"
    )
    process: bool = Field(
        default=True,
        description="Run the face engine in a worker process: the second core does the face "
        "work and the event loop never waits for it (false: a thread in the agent)",
    )
    detect_side: int = Field(
        default=960,
        ge=160,
        le=4096,
        description="dlib's detector looks at frames downscaled to this long side; 800 takes "
        "0.69 of the time on 1280x720 frames but missed one more enrolled reader in 20 "
        "(docs/gate.md): a choice for slower hardware",
    )
    worker_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="A worker that does not answer is restarted"
    )
    gallery_fast_from: int = Field(
        default=20_000, ge=1, description="Use the gallery's fast mode from this many templates"
    )
    gallery_rerank: int = Field(
        default=100, ge=8, le=5000, description="Fast-mode candidates re-ranked exactly"
    )


class AgentConfig(StrictModel):
    role: Role = Field(description="What the kiosk is: gate, selfcheck, desk or exitgate")
    site: str = Field(description="Site (branch) id, a lowercase slug")
    device_id: str = Field(description="Device id, a lowercase slug unique in the fleet")
    data_dir: Path = Field(description="Where the local store and caches live")
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="MQTT broker")
    sync: SyncConfig = Field(default_factory=SyncConfig, description="Event sync tuning")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Outbox bounds")
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="Free-space guard for the data dir"
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus")
    log: LogConfig = Field(default_factory=LogConfig, description="Logging")
    supervisor: SupervisorConfig = Field(
        default_factory=SupervisorConfig, description="Component supervision"
    )
    simulator: SimulatorConfig = Field(
        default_factory=SimulatorConfig, description="Simulated device (demo, tests)"
    )
    face: FaceConfig = Field(default_factory=FaceConfig, description="Face engine tuning")
    gate: GateConfig = Field(default_factory=GateConfig, description="Entry gate (role gate)")
    desk: DeskConfig = Field(default_factory=DeskConfig, description="Card desk (role desk)")
    selfcheck: SelfcheckConfig = Field(
        default_factory=SelfcheckConfig, description="Self-checkout (role selfcheck)"
    )
    exitgate: ExitgateConfig = Field(
        default_factory=ExitgateConfig, description="Exit security gate (role exitgate)"
    )
    screen: ScreenConfig = Field(
        default_factory=ScreenConfig, description="The kiosk screen: library name and logo"
    )
    sound: SoundConfig = Field(
        default_factory=SoundConfig, description="Tones and spoken prompts of the kiosk"
    )
    drivers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-driver settings, by driver name"
    )
    security: AgentSecurityConfig = Field(
        default_factory=AgentSecurityConfig, description="Identity and central's keys"
    )
    update: UpdateConfig = Field(
        default_factory=UpdateConfig, description="Software updates (releases signed by IT)"
    )

    @field_validator("site", "device_id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not valid_id(value):
            raise ValueError("must be a lowercase slug: letters, digits, '-' or '_'")
        return value

    @property
    def store_path(self) -> Path:
        return self.data_dir / "agent.sqlite3"

    @property
    def identity_dir(self) -> Path:
        return self.security.identity_dir or self.data_dir / "identity"


#: Settings that central may change through the desired-state document. Everything else
#: (identity, broker, data dir) needs a local edit, so a bad push cannot cut a device off.
TUNABLE_PATHS: frozenset[str] = frozenset(
    {
        "log.level",
        "sync.batch_max_events",
        "sync.max_inflight_batches",
        "sync.ack_timeout_s",
        "sync.state_interval_s",
        "outbox.max_events",
        "outbox.alarm_ratio",
        "simulator.enabled",
        "simulator.rate_per_s",
        "gate.card_keys",
        "gate.pulse_ms",
        "gate.passback_s",
        "gate.cooldown_s",
        "desk.librarian",
        "desk.consent_version",
        "desk.keep_fields",
        "desk.card_photo",
        "desk.card_valid_days",
        "exitgate.mode",
        "exitgate.realarm_s",
        "exitgate.pulse_ms",
        "exitgate.alarm_show_s",
        "exitgate.loan_cache_s",
        "screen.library_name",
        "sound.enabled",
        "sound.speech",
        "sound.volume",
        "sound.say_names",
        "update.maintenance_window",
        "update.soak_s",
    }
)


def validate_config(doc: Mapping[str, Any]) -> AgentConfig:
    try:
        return AgentConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(explain(exc)) from exc


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """File, then environment, then ``overrides`` (command-line flags)."""
    environ = os.environ if environ is None else environ
    doc = deep_merge(load_document(path, environ, ENV_PREFIX), dict(overrides or {}))
    return validate_config(doc)


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaves; a tunable whose value is a table (gate.card_keys) stays whole."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and path not in TUNABLE_PATHS:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def apply_tunables(config: AgentConfig, overrides: Mapping[str, Any]) -> AgentConfig:
    """A new config with desired-state overrides applied; refuses anything not tunable."""
    flat = flatten(overrides)
    refused = sorted(set(flat) - TUNABLE_PATHS)
    if refused:
        raise ConfigError(f"not tunable remotely: {', '.join(refused)}")
    doc = config.model_dump(mode="python")
    for dotted, value in flat.items():
        set_path(doc, dotted.split("."), value)
    # SecretStr dumps masked; carry the real secret across.
    if config.broker.password is not None:
        doc["broker"]["password"] = config.broker.password.get_secret_value()
    return validate_config(doc)

"""Agent configuration: a TOML file, overridden by environment variables and secret files.

Precedence (last wins): defaults < TOML file < ``BIBLIOEDGE_AGENT_*`` environment < ``*_FILE``
secret files. Nested fields use ``__``: ``BIBLIOEDGE_AGENT_BROKER__URL=mqtt://host:1883``. Any
variable ending in ``_FILE`` names a file whose stripped content is the value, which is how
systemd credentials and container secrets are handed over without landing in the repo or ``ps``.
Unknown keys are rejected everywhere so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

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


class GateConfig(StrictModel):
    enabled: bool = Field(default=False, description="Run the gate flow (role gate)")
    camera: str = Field(
        default="0",
        description="V4L2 index or path (0, /dev/video0), rtsp:// or http:// URL, a video "
        "file, or sim:<folder> for the simulated camera",
    )
    camera_width: int | None = Field(default=1280, description="Requested frame width")
    camera_height: int | None = Field(default=720, description="Requested frame height")
    camera_fps: float = Field(default=15.0, gt=0, le=60, description="Frames per second")
    decoder: Literal["zxing", "pyzbar"] = Field(default="zxing", description="QR decoder")
    relay: str = Field(
        default="none",
        pattern=r"^(none|sim|line:/.+|ch340:/.+)$",
        description="none, line:<port> (turnstile line protocol), ch340:<port> (USB relay), "
        "or sim (a simulated turnstile on a pseudo-terminal)",
    )
    pulse_ms: int = Field(default=1500, ge=50, le=60_000, description="Unlock time per grant")
    passback_s: float = Field(default=300.0, ge=0, description="Anti-passback window")
    cooldown_s: float = Field(default=4.0, ge=0, description="One decision per approach")
    liveness: Literal["off", "motion"] = Field(default="off", description="Liveness check")
    min_eye_distance_px: float = Field(default=36.0, gt=0, description="Smallest face tried")
    card_keys: dict[str, str] = Field(
        default_factory=dict, description="Central's card-signing public keys, kid -> base64url"
    )
    allow_unknown_patrons: bool = Field(
        default=False, description="Let in valid cards of readers missing from the local cache"
    )


KeptField = Literal["date_of_birth", "gender", "address", "nationality", "ethnicity"]


class DeskConfig(StrictModel):
    enabled: bool = Field(default=False, description="Run the card desk flow (role desk)")
    camera: str = Field(
        default="0", description="Camera facing the reader: as gate.camera (sim:<folder> too)"
    )
    camera_fps: float = Field(default=15.0, gt=0, le=60, description="Frames per second")
    qr_from_camera: bool = Field(
        default=True, description="Read the CCCD's QR when it is held up to the camera"
    )
    scanner: str = Field(
        default="none",
        pattern=r"^(none|serial:/.+)$",
        description="none or serial:<port>: a hand scanner for the CCCD's QR",
    )
    chip: bool = Field(default=True, description="Read the CCCD chip (PC/SC); off: QR only")
    reader: str | None = Field(default=None, description="PC/SC reader name (substring)")
    csca_dir: Path | None = Field(
        default=None, description="Trusted CSCA certificates (PEM or DER files) for the chip"
    )
    printer: str = Field(
        default="none",
        pattern=r"^(none|dir:.+|escpos:.+|cups:.+)$",
        description="none, dir:<folder> (PNG+PDF), escpos:<device> (receipt) or cups:<queue>",
    )
    librarian: str = Field(
        default="librarian", min_length=1, max_length=64, description="Who staffs the desk"
    )
    library_name: str = Field(default="Thư viện tỉnh", description="Printed on the card")
    consent_version: str = Field(
        default="vi-2026-1", min_length=1, max_length=32, description="Consent text version"
    )
    keep_fields: list[KeptField] = Field(
        default_factory=lambda: list[KeptField](["date_of_birth", "gender"]),
        description="Citizen-ID fields sent to central besides the name (data minimization)",
    )
    card_photo: bool = Field(
        default=False, description="Print the chip photo on the card (never stored or sent)"
    )
    card_valid_days: int = Field(default=1460, ge=1, le=3650, description="Card validity")
    templates: int = Field(default=3, ge=1, le=8, description="Live face templates enrolled")
    face_threshold: float | None = Field(
        default=None, gt=0, lt=1, description="1:1 threshold vs the chip photo (engine's if unset)"
    )
    demo_librarian: bool = Field(
        default=False,
        description="Demo only: a simulated librarian answers the screens (consent, next)",
    )
    pepper_file: Path | None = Field(
        default=None,
        description="Secret for the keyed hash of ID numbers; the same file on every desk of "
        "the library lets central recognise a returning reader (default: a per-desk key)",
    )


class SelfcheckConfig(StrictModel):
    enabled: bool = Field(default=False, description="Run the self-check flow (role selfcheck)")
    ils: str = Field(
        default="",
        max_length=500,
        description="The library system: sip2://USER@HOST:PORT?institution=I&location=L&"
        "encoding=E (sip2s:// for TLS; also error_detection, terminator, timeout, cafile)",
    )
    password_file: Path | None = Field(
        default=None, description="File holding the SIP2 account's password (kept out of here)"
    )
    rfid: str = Field(
        default="none",
        pattern=r"^(none|m810:/.+|sim)$",
        description="none, m810:<serial port> (3M/Bibliotheca 810) or sim (a simulated pad)",
    )
    afi_secured: int = Field(default=0x07, ge=0, le=255, description="AFI on the shelf")
    afi_loaned: int = Field(default=0xC2, ge=0, le=255, description="AFI when lent")
    scanner: str = Field(
        default="none",
        pattern=r"^(none|serial:/.+)$",
        description="none or serial:<port>: the scanner for card QR, CCCD QR and barcodes",
    )
    pepper_file: Path | None = Field(
        default=None,
        description="The desks' secret for the keyed hash of ID numbers (finds a reader by the "
        "CCCD QR); without it the CCCD QR is not accepted",
    )
    offline_max_items: int = Field(
        default=5, ge=0, le=50, description="Items a reader may borrow while the system is away"
    )
    offline_loan_days: int = Field(default=14, ge=1, le=120, description="Offline due date")
    probe_s: float = Field(
        default=15.0, gt=0, le=3600, description="How often to ask whether the system is back"
    )
    session_timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="A session with no activity ends by itself"
    )
    library_name: str = Field(
        default="Thư viện tỉnh", min_length=1, max_length=80, description="On the receipt"
    )
    receipt: str = Field(
        default="screen",
        pattern=r"^(none|screen|dir:.+|escpos:.+)$",
        description="screen (a QR), dir:<folder> (PNG) or escpos:<device> (receipt printer)",
    )
    camera: str = Field(
        default="none",
        description="Face identification: none, or the camera facing the reader (as "
        "gate.camera, sim:<folder> too); only readers who consented to face_selfcheck",
    )
    camera_fps: float = Field(default=5.0, gt=0, le=30, description="Frames per second")
    face_threshold: float | None = Field(
        default=None, gt=0, lt=1, description="1:N threshold (the engine's if unset)"
    )
    liveness: Literal["off", "motion"] = Field(
        default="motion", description="Presentation-attack check before a face is accepted"
    )
    demo_reader: bool = Field(
        default=False,
        description="Demo only: a simulated reader borrows and returns books on the sim pad",
    )

    @model_validator(mode="after")
    def _library_system(self) -> SelfcheckConfig:
        if not self.enabled:
            return self
        if not self.ils:
            raise ValueError("selfcheck.ils: the library system's sip2:// URL is required")
        from biblioedge.drivers.sip2.client import Account

        try:
            Account.from_url(self.ils)
        except ValueError as exc:
            raise ValueError(f"selfcheck.ils: {exc}") from None
        if self.rfid == "none":
            raise ValueError("selfcheck.rfid: the pad's reader, m810:<serial port> or sim")
        if self.pepper_file is not None and not self.pepper_file.is_file():
            raise ValueError(f"selfcheck.pepper_file {self.pepper_file} does not exist")
        if self.password_file is not None:
            try:
                self.password_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"selfcheck.password_file {self.password_file}: cannot be read ({exc})"
                ) from None
        return self

    def account(self) -> Any:
        """The SIP2 account, with the password from its file."""
        from dataclasses import replace

        from biblioedge.drivers.sip2.client import Account

        account = Account.from_url(self.ils)
        if self.password_file is not None:
            secret = self.password_file.read_text(encoding="utf-8").strip()
            account = replace(account, password=secret)
        return account


class ExitgateConfig(StrictModel):
    enabled: bool = Field(default=False, description="Run the exit security gate (role exitgate)")
    rfid: str = Field(
        default="none",
        pattern=r"^(none|m810:/.+|sim)$",
        description="The reader at the exit in continuous inventory: m810:<serial port> "
        "(3M/Bibliotheca 810 protocol) or sim (a simulated reader, demo and tests)",
    )
    afi_secured: int = Field(
        default=0x07,
        ge=0,
        le=255,
        description="AFI the self-checks write on the shelf (as selfcheck.afi_secured); every "
        "known secured variant (0x07 ISO, 0xD7 3M) alarms too",
    )
    afi_loaned: int = Field(
        default=0xC2, ge=0, le=255, description="AFI the self-checks write on loan"
    )
    mode: Literal["afi", "smart"] = Field(
        default="afi",
        description="afi: alarm on a secured AFI; smart: also alarm when the library system "
        "says the item is not on loan (SIP2 17, cached; the AFI alone decides while it is away)",
    )
    ils: str = Field(
        default="",
        max_length=500,
        description="The library system (as selfcheck.ils): smart mode, and titles on the "
        "alarm screen; empty: none",
    )
    password_file: Path | None = Field(
        default=None, description="File holding the SIP2 account's password"
    )
    loan_cache_s: float = Field(
        default=60.0, ge=0, le=3600, description="How long an item's loan status is trusted"
    )
    probe_s: float = Field(
        default=15.0, gt=0, le=3600, description="How often to ask whether the system is back"
    )
    relay: str = Field(
        default="none",
        pattern=r"^(none|sim|line:/.+|ch340:/.+)$",
        description="The light and buzzer: none, ch340:<port> (USB relay board), "
        "line:<port> (gate line protocol: ALARM ON/OFF) or sim",
    )
    relay_channel: int = Field(default=1, ge=1, le=8, description="Relay board channel")
    pulse_ms: int = Field(default=3000, ge=50, le=60_000, description="Light and buzzer time")
    sound: str = Field(
        default="none",
        pattern=r"^(none|cmd:.+)$",
        description="none, or cmd:<command line> run on each alarm (e.g. cmd:aplay alarm.wav)",
    )
    realarm_s: float = Field(
        default=10.0,
        ge=0.5,
        le=3600,
        description="A tag that stays in the field alarms again only after this long",
    )
    forget_s: float = Field(
        default=2.0, gt=0, le=60, description="A tag not seen for this long has left the field"
    )
    alarm_show_s: float = Field(
        default=8.0, gt=0, le=600, description="How long the alarm screen stays up"
    )
    max_new_tags: int = Field(
        default=32,
        ge=1,
        le=256,
        description="New tags looked at per inventory; more (a flood) wait for the next ones",
    )
    counter: str = Field(
        default="none",
        pattern=r"^(none|sim|serial:/.+)$",
        description="Passage counter (beams, IN/OUT/HB lines): none, serial:<port> or sim",
    )
    counter_silence_s: float = Field(
        default=10.0, gt=0, le=600, description="A counter silent this long is reported down"
    )

    @model_validator(mode="after")
    def _parts(self) -> ExitgateConfig:
        if not self.enabled:
            return self
        if self.rfid == "none":
            raise ValueError("exitgate.rfid: the exit's reader, m810:<serial port> or sim")
        if self.afi_secured == self.afi_loaned:
            raise ValueError("exitgate.afi_secured and afi_loaned must differ")
        if self.mode == "smart" and not self.ils:
            raise ValueError("exitgate.mode smart asks the library system: set exitgate.ils")
        if self.ils:
            from biblioedge.drivers.sip2.client import Account

            try:
                Account.from_url(self.ils)
            except ValueError as exc:
                raise ValueError(f"exitgate.ils: {exc}") from None
        if self.password_file is not None:
            try:
                self.password_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"exitgate.password_file {self.password_file}: cannot be read ({exc})"
                ) from None
        if self.sound.startswith("cmd:"):
            import shlex

            try:
                if not shlex.split(self.sound[4:]):
                    raise ValueError("empty")
            except ValueError as exc:
                raise ValueError(f"exitgate.sound: not a command line ({exc})") from None
        return self

    def account(self) -> Any:
        """The SIP2 account with the password from its file, or None without one."""
        if not self.ils:
            return None
        from dataclasses import replace

        from biblioedge.drivers.sip2.client import Account

        account = Account.from_url(self.ils)
        if self.password_file is not None:
            secret = self.password_file.read_text(encoding="utf-8").strip()
            account = replace(account, password=secret)
        return account


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

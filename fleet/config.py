"""Central's configuration: TOML file, ``BIBLIOEDGE_CENTRAL_*`` environment, secret files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from biblioedge.fleet.alerts.settings import AlertsConfig
from biblioedge.fleet.ils.settings import IlsConfig
from biblioedge.fleet.replicas import ReplicaConfig, check_replica_config
from biblioedge.fleet.reportdocs.monthly import ReportFilesConfig
from biblioedge.fleet.reports.settings import ReportsConfig
from biblioedge.settings import (
    BrokerConfig,
    ConfigError,
    LogConfig,
    StrictModel,
    explain,
    load_document,
)

ENV_PREFIX = "BIBLIOEDGE_CENTRAL_"


class HttpConfig(StrictModel):
    host: str = Field(default="127.0.0.1", description="Address the API listens on")
    port: int = Field(default=8080, ge=0, le=65535, description="API port; 0 picks a free one")
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=16 * 1024,
        le=64 * 1024 * 1024,
        description="Largest request body; larger ones get 413 before anything is parsed",
    )
    tls: bool = Field(
        default=True,
        description="Serve HTTPS with a certificate from central's device CA (kiosks enroll "
        "and renew over it; pin the CA with the enrollment token)",
    )
    auth_failures: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description="Wrong bearer tokens from one address within auth_window_s before it gets "
        "429 (Retry-After) without a look-up",
    )
    signin_failures: int = Field(
        default=5,
        ge=1,
        le=10_000,
        description="Wrong dashboard sign-ins from one address within auth_window_s before "
        "it is locked out",
    )
    auth_window_s: float = Field(
        default=60.0, gt=0, le=86400, description="Window the failures above are counted in"
    )
    auth_lockout_s: float = Field(
        default=30.0,
        gt=0,
        le=86400,
        description="First lockout; each further lockout of the same address doubles it",
    )
    auth_lockout_max_s: float = Field(
        default=3600.0, gt=0, le=7 * 86400, description="Longest lockout (back-off cap)"
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Time a client has to send a request's headers, from connecting or from "
        "the previous response; then the connection is closed (slow-header clients)",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="While a request body is read, each such window must bring 1 KiB or "
        "the connection is closed (silent or trickling clients; uploads that keep sending "
        "are not cut)",
    )


class SecurityConfig(StrictModel):
    require: bool = Field(
        default=True,
        description="Refuse to run on a broker without TLS and client certificates (the "
        "embedded fallback broker). Only the demo on a machine without mosquitto turns it off.",
    )
    hostnames: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1"],
        min_length=1,
        description="Names and addresses in the certificates of central's HTTPS API and the "
        "broker: what kiosks connect to",
    )
    kiosk_broker_url: str | None = Field(
        default=None,
        description="Broker URL kiosks are given at enrollment; default broker.url",
    )
    public_url: str | None = Field(
        default=None,
        description="Central's URL as kiosks reach it (certificate renewal); default from http",
    )
    cert_days: int = Field(
        default=365, ge=1, le=3650, description="Lifetime of the certificates central issues"
    )
    enrollment_ttl_s: int = Field(
        default=3600, ge=60, le=7 * 86400, description="Default lifetime of enrollment tokens"
    )
    renew_grace_s: float = Field(
        default=600.0,
        ge=0,
        le=86400,
        description="How long a renewed kiosk's previous certificate keeps working (time to "
        "reconnect with the new one); then it is revoked",
    )
    renew_min_interval_s: float = Field(
        default=86400.0,
        ge=0,
        description="A kiosk renews at most once in this interval, unless its certificate has "
        "passed two thirds of its life",
    )
    broker_dir: Path | None = Field(
        default=None,
        description="Where central writes the broker's CA, certificate, CRL and ACL; "
        "default <data_dir>/broker",
    )
    broker_pid_file: Path | None = Field(
        default=None,
        description="mosquitto's pid_file: central sends it SIGHUP when the ACL or CRL "
        "changed (else run a systemd path unit that reloads mosquitto)",
    )


class ReleasesConfig(StrictModel):
    dir: Path | None = Field(
        default=None,
        description="The TUF repository and its artifacts; default <data_dir>/releases",
    )
    timestamp_days: float = Field(
        default=1.0, gt=0, le=30, description="Life of the timestamp central signs online"
    )
    snapshot_days: float = Field(
        default=7.0, gt=0, le=90, description="Life of the snapshot central signs online"
    )
    refresh_s: float = Field(
        default=600.0, ge=1, description="How often central checks whether to re-sign them"
    )
    max_artifact_mb: int = Field(default=2048, ge=1, description="Largest file of a release")


class RoleQuota(StrictModel):
    """What one device of a role may send. Defaults sit far above what an honest kiosk sends
    (about 300 bytes per event, a few thousand events a day) and let an offline kiosk drain
    weeks of backlog at once; beyond them a kiosk is paced, never refused while it keeps
    within ``max_queued_per_device``."""

    events_per_s: float = Field(
        default=1000.0,
        gt=0,
        description="Sustained events per second stored for one device (1000 clears a kiosk's "
        "8 in-flight batches of 500 well within its 10 s ack timeout)",
    )
    burst_events: int = Field(
        default=20_000, ge=1, description="Events one device may send at once above the rate"
    )
    messages_per_s: float = Field(
        default=100.0, gt=0, description="Sustained MQTT messages (events and state) per second"
    )
    burst_messages: int = Field(default=400, ge=1, description="Messages at once above the rate")
    batch_events: int = Field(
        default=1000,
        ge=1,
        description="Most events in one message; a bigger batch is refused unread (keep the "
        "kiosks' sync.batch_max_events at or below it)",
    )
    stored_mb_per_day: float = Field(
        default=16.0, gt=0, description="Sustained megabytes of event batches stored per day"
    )
    burst_stored_mb: float = Field(
        default=64.0,
        ge=1.0,
        description="Megabytes stored at once above the daily rate: the backlog an offline "
        "kiosk drains without being paced by volume",
    )

    @model_validator(mode="after")
    def _fits(self) -> RoleQuota:
        if self.burst_events < self.batch_events:
            raise ValueError(
                "burst_events must be at least batch_events, or a full batch never passes"
            )
        return self


class QuotaConfig(StrictModel):
    """Per-device quotas at central (token buckets per role) and the fair ingest queue."""

    enabled: bool = Field(
        default=True,
        description="Apply the role quotas; false keeps only the fair queue (benchmarks of the "
        "pipeline's capacity)",
    )
    max_queued_per_device: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Messages of one device waiting at central; more are refused unacknowledged "
        "(the kiosk keeps them and sends again), and a device that overflows is served after the "
        "others for 10 s. Four times the kiosks' sync.max_inflight_batches (room for resends)",
    )
    max_queued: int = Field(
        default=4096, ge=1, description="Messages of all devices waiting to be stored"
    )
    alert_after_s: float = Field(
        default=5.0,
        gt=0,
        description="A device refused over quota without a pause this long is reported once "
        "(log, security attention case) as over quota. An honest kiosk waits for its acks and "
        "is paced, never refused, so a short time does not flag one",
    )
    gate: RoleQuota = Field(default_factory=RoleQuota, description="Gates")
    selfcheck: RoleQuota = Field(
        default_factory=lambda: RoleQuota(stored_mb_per_day=8.0, burst_stored_mb=32.0),
        description="Self-check stations (fewer events than gates)",
    )
    desk: RoleQuota = Field(
        default_factory=lambda: RoleQuota(stored_mb_per_day=8.0, burst_stored_mb=32.0),
        description="Registration desks (few events, larger ones: sealed registrations)",
    )
    other: RoleQuota = Field(
        default_factory=RoleQuota,
        description="Devices of any other role, or whose role central does not know yet",
    )

    def for_role(self, role: str | None) -> RoleQuota:
        quota = getattr(self, role, None) if role in ("gate", "selfcheck", "desk") else None
        return quota if isinstance(quota, RoleQuota) else self.other


class S3CopyConfig(StrictModel):
    """One S3-compatible store each backup is copied to (``[[backup.s3]]``)."""

    bucket: str = Field(
        min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$", description="Bucket"
    )
    prefix: str = Field(
        default="",
        max_length=512,
        pattern=r"^[A-Za-z0-9/_.-]*$",
        description="Key prefix of the backups in the bucket (e.g. central-1/)",
    )
    endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The store's URL (MinIO, Ceph, a provider's S3 API); unset: AWS",
    )
    region: str = Field(default="us-east-1", max_length=64, description="Signing region")
    credentials_file: Path = Field(
        description="A file, readable by central only, in the AWS shared-credentials format: "
        "[default] aws_access_key_id = … / aws_secret_access_key = …"
    )
    profile: str = Field(default="default", max_length=64, description="Its section")
    ca_file: Path | None = Field(
        default=None, description="CA bundle for a store with its own CA (default: the system's)"
    )
    attempts: int = Field(default=4, ge=1, le=20, description="Tries before a copy is failed")
    retry_s: float = Field(
        default=5.0, ge=0, le=600, description="Wait before the first retry (doubles each time)"
    )

    def where(self) -> str:
        """How the dashboard names it (no credentials in it)."""
        host = self.endpoint_url or "s3"
        return f"{host.rstrip('/')}/{self.bucket}/{self.prefix}"


class BackupConfig(StrictModel):
    public_key: str | None = Field(
        default=None,
        description="The backup key's public half (base64 X25519, from `central backup keygen`); "
        "backups are sealed to it and its private half stays off central",
    )
    dir: Path | None = Field(
        default=None, description="Where backups are written (default: data_dir/backups)"
    )
    copies: list[Path] = Field(
        default_factory=list,
        description="Further directories (another disk or a mount) each backup is copied to",
    )
    s3: list[S3CopyConfig] = Field(
        default_factory=list,
        max_length=8,
        description="S3-compatible stores each backup is copied to ([[backup.s3]])",
    )
    every_h: float = Field(
        default=0.0,
        ge=0,
        le=24 * 31,
        description="Central makes a backup this often (hours; 0: only `central backup run` "
        "or the systemd timer)",
    )
    keep_daily: int = Field(default=7, ge=0, le=366, description="Newest backup of each day")
    keep_weekly: int = Field(default=4, ge=0, le=520, description="Newest of each ISO week")
    keep_monthly: int = Field(default=12, ge=0, le=1200, description="Newest of each month")
    stale_after_h: float = Field(
        default=36.0, gt=0, le=24 * 366, description="/health degrades past this backup age"
    )
    journal_ship_s: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="Changes made at central are shipped to every backup place within about "
        "this many seconds (the journal, replayed by `central restore`)",
    )

    @model_validator(mode="after")
    def _key(self) -> BackupConfig:
        if self.public_key is not None:
            from biblioedge.provisioning.sealing import SealError, load_x25519_public

            try:
                load_x25519_public(self.public_key)
            except (SealError, ValueError) as exc:
                raise ValueError(f"backup.public_key is not a base64 X25519 key: {exc}") from None
        return self


class PreregConfig(StrictModel):
    enabled: bool = Field(
        default=True,
        description="Serve the public register-from-home page (/register) and accept its "
        "codes at the desks (docs/readers.md)",
    )
    expire_days: int = Field(
        default=30, ge=1, le=365, description="An unconfirmed pre-registration is deleted after"
    )
    per_address: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Submissions one address (IPv6: its /64) may make per hour; more are "
        "answered 429 with Retry-After",
    )
    max_waiting: int = Field(
        default=20000,
        ge=1,
        description="Unconfirmed pre-registrations kept at most (a flood from many addresses "
        "is refused beyond it, nothing older is dropped)",
    )
    pickup_h: float = Field(
        default=72.0,
        gt=0,
        le=24 * 31,
        description="Hours a card's phone link (shown at the desk) can be opened",
    )
    wallet_pass_type: str | None = Field(
        default=None,
        description="Apple Wallet: the Pass Type ID (pass.vn.example.library); with the "
        "certificate files below, the phone card offers a .pkpass; none: no pass",
    )
    wallet_team: str | None = Field(default=None, description="Apple Wallet: the Team ID")
    wallet_cert: Path | None = Field(
        default=None, description="Apple Wallet: the Pass Type ID certificate (PEM)"
    )
    wallet_key: Path | None = Field(
        default=None, description="Apple Wallet: its private key (PEM, unencrypted, 0600)"
    )
    wallet_chain: Path | None = Field(
        default=None, description="Apple Wallet: Apple's intermediate (WWDR) certificate (PEM)"
    )
    wallet_organization: str = Field(
        default="Thư viện tỉnh", description="Apple Wallet: the name the pass shows"
    )

    @model_validator(mode="after")
    def _wallet(self) -> PreregConfig:
        parts = (
            self.wallet_pass_type,
            self.wallet_team,
            self.wallet_cert,
            self.wallet_key,
            self.wallet_chain,
        )
        if any(p is not None for p in parts) and not all(p is not None for p in parts):
            raise ValueError(
                "prereg.wallet_*: a wallet pass needs the pass type, team, certificate, key "
                "and chain together"
            )
        return self


class CentralConfig(StrictModel):
    data_dir: Path = Field(description="Where the default SQLite database lives")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite:///<data_dir>/central.sqlite3. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="MQTT broker")
    http: HttpConfig = Field(default_factory=HttpConfig, description="HTTP API")
    security: SecurityConfig = Field(
        default_factory=SecurityConfig, description="Device identity and broker security"
    )
    accept_unknown_devices: bool = Field(
        default=True,
        description="Register devices on first contact. When false, events of devices not "
        "registered through the API are held (not acknowledged) until they are.",
    )
    ingest_coalesce: int = Field(
        default=64, ge=1, le=1024, description="Most MQTT messages stored in one transaction"
    )
    quotas: QuotaConfig = Field(
        default_factory=QuotaConfig, description="Per-device quotas and the fair ingest queue"
    )
    patron_prefix: str = Field(
        default="BE",
        pattern=r"^[A-Z]{1,4}$",
        description="Patron numbers the desks are given: prefix + 7 digits (BE0000042)",
    )
    pepper_file: Path | None = Field(
        default=None,
        description="The desks' citizen.pepper (the same 32-byte file): the librarian's page "
        "finds a reader by a scanned CCCD with it; none: by card number only",
    )
    releases: ReleasesConfig = Field(
        default_factory=ReleasesConfig, description="Signed releases (TUF repository)"
    )
    backup: BackupConfig = Field(
        default_factory=BackupConfig, description="Encrypted backups (docs/operations.md)"
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Logging")
    ils: IlsConfig | None = Field(
        default=None,
        description="The library system central pushes readers to (Koha's REST API, or the "
        "dummy's); none: readers are queued for it and wait",
    )
    reports: ReportsConfig = Field(
        default_factory=ReportsConfig, description="Reports: time zone, visits, privacy"
    )
    report_files: ReportFilesConfig = Field(
        default_factory=ReportFilesConfig,
        description="The Department's spreadsheet and the monthly report kept at central",
    )
    alerts: AlertsConfig | None = Field(
        default=None,
        description="Alerts by e-mail and webhooks (docs/alerts.md); none: the dashboard only",
    )
    prereg: PreregConfig = Field(
        default_factory=PreregConfig,
        description="Register from home and the card on the phone (docs/readers.md)",
    )
    replica: ReplicaConfig | None = Field(
        default=None,
        description="Run as one of several central replicas on PostgreSQL (docs/operations.md "
        '"Central replicas"); none: one central process',
    )

    @model_validator(mode="after")
    def _replicas_need_postgres(self) -> CentralConfig:
        try:
            check_replica_config(self.db_url, self.replica)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def releases_dir(self) -> Path:
        return self.releases.dir or self.data_dir / "releases"

    @property
    def backup_dir(self) -> Path:
        return self.backup.dir or self.data_dir / "backups"

    @property
    def broker_dir(self) -> Path:
        return self.security.broker_dir or self.data_dir / "broker"

    @property
    def public_url(self) -> str:
        scheme = "https" if self.http.tls else "http"
        return self.security.public_url or f"{scheme}://{self.http.host}:{self.http.port}"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'central.sqlite3'}"


def load_central_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> CentralConfig:
    from biblioedge.settings import deep_merge

    environ = os.environ if environ is None else environ
    doc = deep_merge(load_document(path, environ, ENV_PREFIX), dict(overrides or {}))
    try:
        return CentralConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(explain(exc)) from exc

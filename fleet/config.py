"""Central's configuration: TOML file, ``BIBLIOEDGE_CENTRAL_*`` environment, secret files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, ValidationError

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
    patron_prefix: str = Field(
        default="BE",
        pattern=r"^[A-Z]{1,4}$",
        description="Patron numbers the desks are given: prefix + 7 digits (BE0000042)",
    )
    releases: ReleasesConfig = Field(
        default_factory=ReleasesConfig, description="Signed releases (TUF repository)"
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Logging")

    @property
    def releases_dir(self) -> Path:
        return self.releases.dir or self.data_dir / "releases"

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

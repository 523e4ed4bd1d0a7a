"""Central's configuration: TOML file, ``BIBLIOEDGE_CENTRAL_*`` environment, secret files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError

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


class CentralConfig(StrictModel):
    data_dir: Path = Field(description="Where the default SQLite database lives")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite:///<data_dir>/central.sqlite3. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="MQTT broker")
    http: HttpConfig = Field(default_factory=HttpConfig, description="HTTP API")
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for the admin API; set BIBLIOEDGE_CENTRAL_ADMIN_TOKEN_FILE",
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
    log: LogConfig = Field(default_factory=LogConfig, description="Logging")

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

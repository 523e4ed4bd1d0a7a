"""Configuration building blocks shared by the agent and central.

Both read a TOML file and let environment variables and secret files override it (see
``env_overrides``); both reject unknown keys so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import errno
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every offending key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BrokerConfig(StrictModel):
    url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="Broker URL, mqtt://host:port (plain) or mqtts://host:port (TLS)",
    )
    username: str | None = Field(default=None, description="MQTT user name; None for anonymous")
    password: SecretStr | None = Field(
        default=None, description="MQTT password; prefer a *_PASSWORD_FILE secret"
    )
    keepalive_s: int = Field(default=15, ge=5, le=600, description="MQTT keepalive interval")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Give up a connect after")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


#: MQTT clients send small messages (acks, single events) right after large ones: without
#: TCP_NODELAY, Nagle's algorithm and the peer's delayed ACK hold each one up to ~40 ms.
MQTT_SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class LogConfig(StrictModel):
    format: Literal["human", "json"] = Field(default="human", description="Log line format")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level logged"
    )


def set_path(doc: dict[str, Any], path: list[str], value: Any) -> None:
    node = doc
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path)}: {key} is not a table")
        node = child
    node[path[-1]] = value


def env_overrides(environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """Turn ``BIBLIOEDGE_A__B[_FILE]`` variables into a nested dict."""
    out: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(prefix) or name == prefix + "CONFIG":
            continue
        key = name[len(prefix) :].lower()
        value: Any = raw
        if key.endswith("_file"):
            key = key[: -len("_file")]
            try:
                value = Path(raw).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{name}: cannot read secret file {raw}: {exc}") from exc
        set_path(out, key.split("__"), value)
    return out


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {loc}: {err['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_document(path: Path | None, environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """The TOML file at ``path`` (or named by ``{prefix}CONFIG``) with env overrides on top."""
    import tomllib

    if path is None and environ.get(prefix + "CONFIG"):
        path = Path(environ[prefix + "CONFIG"])
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start} is not)") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return deep_merge(doc, env_overrides(environ, prefix))


#: Kernel file systems: they look like directories, but hold neither a database nor keys.
_PSEUDO_FS = ("/proc", "/sys", "/dev")


def check_data_dir(path: Path) -> Path:
    """The data directory, created if need be and proven writable (a probe file is written,
    synced and removed), or ConfigError naming the reason. Called at start and by ``config
    check``, so a wrong path is a clear exit 2 rather than a traceback later. A full disk is
    not a wrong path: the kiosk must still start, degraded, and deliver what it holds."""
    resolved = path.expanduser().resolve()
    for root in _PSEUDO_FS:
        if resolved == Path(root) or Path(root) in resolved.parents:
            raise ConfigError(f"data_dir {path} is on the kernel's {root} file system")
    probe = resolved / f".write-probe-{os.getpid()}"
    try:
        resolved.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            probe.unlink(missing_ok=True)
            return resolved
        raise ConfigError(f"data_dir {path} is not a writable directory: {exc.strerror}") from exc
    return resolved


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # inline, as in a list of tables ([[alerts.webhooks]])
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else _toml_value(key)


def to_toml(doc: Mapping[str, Any], prefix: str = "") -> str:
    """Enough TOML for our config files: scalars, lists of scalars and nested tables."""
    lines = [
        f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, Mapping)
    ]
    for key, value in doc.items():
        if isinstance(value, Mapping):
            name = f"{prefix}{_toml_key(key)}"
            lines.append(f"\n[{name}]")
            lines.append(to_toml(value, name + ".").rstrip("\n"))
    return "\n".join(line for line in lines if line) + "\n"

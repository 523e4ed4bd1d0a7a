"""Start central and agents as real child processes: used by the demo, the benchmark and the
integration tests, so all three exercise exactly what runs on a kiosk."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx

from biblioedge.fleet.auth import Tokens
from biblioedge.fleet.central import open_identity
from biblioedge.fleet.config import load_central_config
from biblioedge.fleet.repo import Repo
from biblioedge.keys import load_or_create_key
from biblioedge.procs import free_port, terminate, wait_port
from biblioedge.provisioning.broker import BrokerFiles, BrokerProcess
from biblioedge.provisioning.enroll import enroll
from biblioedge.settings import deep_merge, to_toml


class Child:
    """One biblioedge subprocess with its log file; stop, kill -9 and restart it."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "biblioedge", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 10.0) -> int | None:
        return terminate(self.proc, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class CentralProcess(Child):
    """Central in a child process, initialised like a real install: ``central init`` (device
    CA, keys, the broker's TLS files and ACL) and one admin API token for the caller.

    With a mosquitto ``broker``, central hands it its files, so the broker requires client
    certificates from central's CA and applies central's ACL (``secure``); the embedded
    broker cannot, and central then runs with ``security.require = false``."""

    def __init__(
        self,
        data_dir: Path,
        broker: BrokerProcess,
        port: int | None = None,
        extra: dict[str, Any] | None = None,
        secure: bool = True,
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        if secure and broker.kind == "mosquitto":
            broker.files = BrokerFiles(data_dir / "broker")
        self.secure = broker.secure
        security: dict[str, Any] = {"require": self.secure, "broker_dir": str(data_dir / "broker")}
        if self.secure:
            security["broker_pid_file"] = str(broker.pid_file)
        conf: dict[str, Any] = {
            "data_dir": str(data_dir),
            "broker": {"url": broker.url},
            "http": {"host": "127.0.0.1", "port": self.port},
            "security": security,
        }
        conf = deep_merge(conf, extra or {})
        (data_dir / "central.toml").write_text(to_toml(conf))
        self.token = self._init()
        super().__init__(
            "central",
            ["central", "--config", str(data_dir / "central.toml")],
            data_dir / "central.log",
            {},
        )

    def _init(self) -> str:
        """``central init`` and an admin token (kept in ``admin-token``, 0600, across runs)."""

        cfg = load_central_config(self.data_dir / "central.toml", environ={})
        repo = Repo(cfg.db_url)
        try:
            repo.migrate(load_or_create_key(cfg.data_dir / "keys" / "templates.key"))
            open_identity(cfg, repo)
            token_file = self.data_dir / "admin-token"
            if token_file.exists():
                token = token_file.read_text().strip()
                if Tokens(repo.engine).check(token) is not None:
                    return token
            _, token = Tokens(repo.engine).create("launcher", "admin")
        finally:
            repo.close()
        token_file.write_text(token)
        token_file.chmod(0o600)
        return token

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "keys" / "device-ca.crt"

    def start(self) -> None:
        super().start()
        wait_port("127.0.0.1", self.port, 30)

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token or self.token}"},
            verify=ssl.create_default_context(cafile=self.ca_file),
            timeout=10,
        )

    def enrollment_token(self, device_id: str, site: str, role: str) -> str:
        with self.client() as api:
            r = api.post("/enrollments", json={"device_id": device_id, "site": site, "role": role})
            if r.status_code != 201:
                raise RuntimeError(f"central refused the enrollment token: {r.text}")
            return str(r.json()["token"])


def agent_config(
    data_dir: Path, device_id: str, role: str, site: str, broker_url: str, **sections: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "role": role,
        "site": site,
        "device_id": device_id,
        "data_dir": str(data_dir),
        "broker": {"url": broker_url},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return doc


class AgentProcess(Child):
    """A kiosk agent in a child process. Given ``central``, it enrolls through the real path
    (token from central's API, key and CSR made here, identity written) before its first
    start; against an insecure central it runs with ``security.require = false``."""

    def __init__(
        self, data_dir: Path, config: dict[str, Any], central: CentralProcess | None = None
    ) -> None:
        self.data_dir = data_dir
        self.device_id = str(config["device_id"])
        self.central = central
        self.config = config
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = data_dir / "agent.toml"
        if central is not None and not central.secure:
            config.setdefault("security", {})["require"] = False
        if self.enrolled and self.config_path.exists():
            # a new config for an enrolled kiosk keeps what enrollment wrote
            old = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
            config = deep_merge(config, {k: old[k] for k in ("broker", "security") if k in old})
        self.config_path.write_text(to_toml(config))
        super().__init__(
            f"agent:{self.device_id}",
            ["agent", "--config", str(self.config_path)],
            data_dir / "agent.log",
            {},
        )

    @property
    def enrolled(self) -> bool:
        return (self.data_dir / "identity" / "device.crt").exists()

    def enroll(self) -> None:
        assert self.central is not None
        token = self.central.enrollment_token(
            self.device_id, str(self.config["site"]), str(self.config["role"])
        )
        enroll(self.central.url, token, self.data_dir, self.config_path)

    def start(self) -> None:
        if self.central is not None and not self.enrolled:
            self.enroll()
        super().start()


def wait_until(predicate: Any, timeout: float, interval: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)

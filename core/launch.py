"""Start central and agents as real child processes: used by the demo, the benchmark and the
integration tests, so all three exercise exactly what runs on a kiosk."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from biblioedge.procs import free_port, terminate, wait_port


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(doc: dict[str, Any]) -> str:
    """Enough TOML for our config files: scalars and one level of tables."""
    top = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    tables = []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append(f"\n[{key}]")
            tables += [f"{k} = {toml_value(v)}" for k, v in value.items()]
    return "\n".join(top + tables) + "\n"


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
    def __init__(
        self,
        data_dir: Path,
        broker_url: str,
        token: str,
        port: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.token = token
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        token_file = data_dir / "admin-token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        conf = {
            "data_dir": str(data_dir),
            **(extra or {}),
            "broker": {"url": broker_url},
            "http": {"host": "127.0.0.1", "port": self.port},
        }
        (data_dir / "central.toml").write_text(to_toml(conf))
        super().__init__(
            "central",
            ["central", "--config", str(data_dir / "central.toml")],
            data_dir / "central.log",
            {"BIBLIOEDGE_CENTRAL_ADMIN_TOKEN_FILE": str(token_file)},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        wait_port("127.0.0.1", self.port, 30)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )


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
    def __init__(self, data_dir: Path, config: dict[str, Any]) -> None:
        self.data_dir = data_dir
        self.device_id = str(config["device_id"])
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "agent.toml"
        path.write_text(to_toml(config))
        super().__init__(
            f"agent:{self.device_id}", ["agent", "--config", str(path)], data_dir / "agent.log", {}
        )


def wait_until(predicate: Any, timeout: float, interval: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)

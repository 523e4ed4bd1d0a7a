"""Run an MQTT broker for the demo, the tests and the benchmarks.

Mosquitto (Debian package) when it is installed, otherwise the embedded amqtt broker in a
child process. Both listen on loopback only. Mosquitto is configured like production minus
credentials: persistence on (retained desired state and queued QoS1 messages survive a broker
restart) and the protocol's payload ceiling as the packet limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Literal

from biblioedge.procs import free_port, terminate, wait_port
from biblioedge.protocol import MAX_PAYLOAD_BYTES

log = logging.getLogger("biblioedge.provisioning.broker")

BrokerKind = Literal["auto", "mosquitto", "amqtt"]


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None,
    )


def mosquitto_conf(port: int, data_dir: Path) -> str:
    return "\n".join(
        [
            "per_listener_settings false",
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {data_dir}/",
            "autosave_interval 1",
            f"max_packet_size {MAX_PAYLOAD_BYTES + 4096}",
            "max_inflight_messages 256",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "",
        ]
    )


class BrokerProcess:
    """A broker in a child process that can be stopped, killed and restarted on the same port."""

    def __init__(self, data_dir: Path, port: int | None = None, kind: BrokerKind = "auto") -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        if kind == "auto":
            kind = "mosquitto" if mosquitto_path() else "amqtt"
        self.kind: Literal["mosquitto", "amqtt"] = kind
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "mosquitto":
            exe = mosquitto_path()
            if exe is None:
                raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
            conf = self.data_dir / "mosquitto.conf"
            conf.write_text(mosquitto_conf(self.port, self.data_dir))
            return [exe, "-c", str(conf)]
        return [sys.executable, "-m", "biblioedge", "broker", "--port", str(self.port)]

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.data_dir / "broker.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.command(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        log_file.close()
        try:
            wait_port("127.0.0.1", self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        log.info("%s broker on %s", self.kind, self.url)

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        terminate(proc, timeout)

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> BrokerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def run_embedded(port: int, host: str = "127.0.0.1") -> None:
    """The amqtt fallback broker, run by ``biblioedge broker`` until SIGTERM/SIGINT."""
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    log.info("embedded amqtt broker on %s:%d", host, port)
    await stop.wait()
    await broker.shutdown()

"""A compromised kiosk that floods central: its own enrolled certificate and key, valid event
batches of its role, published as fast as its link allows, with no outbox and no pacing.

Used by ``biblioedge bench sync --flood-device`` and by the quota tests. It runs in its own
process (``FloodProcess``) so that its rate is its link's, not what the caller leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from biblioedge.agent.config import load_config
from biblioedge.protocol import device_topic, utc_now, uuid7
from biblioedge.provisioning.enroll import IdentityFiles
from biblioedge.sim.roles import RoleSimulator


def _bodies(role: str, site: str, device_id: str) -> list[dict[str, Any]]:
    sim = RoleSimulator(role, site, 7)  # type: ignore[arg-type]
    return [
        {"device_id": device_id, "site": site, "type": t, "payload": p}
        for t, p in (sim.next_event() for _ in range(64))
    ]


async def _flood(
    config_path: Path,
    batch_events: int,
    stop: MpEvent,
    sent: Synchronized[int],
    publishers: int,
) -> None:
    cfg = load_config(config_path, environ={})
    topic = device_topic(cfg.site, cfg.device_id, "events")
    bodies = _bodies(cfg.role, cfg.site, cfg.device_id)
    seq = 0

    def batch() -> tuple[bytes, int]:
        nonlocal seq
        at = utc_now().isoformat()
        events = []
        for i in range(batch_events):
            seq += 1
            events.append(
                {**bodies[i % len(bodies)], "event_id": uuid7(), "seq": seq, "occurred_at": at}
            )
        doc = {"v": 1, "device_id": cfg.device_id, "batch_id": uuid7(), "events": events}
        return orjson.dumps(doc), batch_events

    async def publisher(client: aiomqtt.Client) -> None:
        while not stop.is_set():
            payload, n = batch()
            await client.publish(topic, payload, qos=1, timeout=10)
            with sent.get_lock():
                sent.value += n

    while not stop.is_set():
        try:
            async with (
                aiomqtt.Client(
                    cfg.broker.host,
                    cfg.broker.port,
                    identifier=f"agent-{cfg.device_id}",
                    tls_context=IdentityFiles(cfg.identity_dir).tls_context()
                    if cfg.broker.tls
                    else None,
                    max_inflight_messages=publishers,
                    timeout=5,
                ) as client,
                asyncio.TaskGroup() as tg,
            ):
                client.pending_calls_threshold = publishers + 1  # its own flood: no warnings
                for _ in range(publishers):
                    tg.create_task(publisher(client))
        except* (aiomqtt.MqttError, OSError, TimeoutError):
            await asyncio.sleep(0.2)  # broker restarting: come back at once, like a flooder


def _main(
    config_path: Path, batch_events: int, stop: MpEvent, sent: Synchronized[int], publishers: int
) -> None:
    # A stolen kiosk floods with its own CPU; here it shares the bench's machine, so it only
    # takes CPU that central, the broker and the honest kiosks leave (its rate is reported).
    os.nice(10)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_flood(config_path, batch_events, stop, sent, publishers))


class FloodProcess:
    """``start()`` floods until ``stop()``; ``sent`` is how many events it published (QoS1,
    accepted by the broker)."""

    def __init__(self, config_path: Path, batch_events: int = 500, publishers: int = 16) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._sent: Synchronized[int] = ctx.Value("q", 0)
        self._proc = ctx.Process(
            target=_main,
            args=(config_path, batch_events, self._stop, self._sent, publishers),
            name="flood",
            daemon=True,
        )
        self.started = 0.0
        self.seconds = 0.0

    @property
    def sent(self) -> int:
        """Events published so far; RuntimeError if the flooder died (a broken bench)."""
        if self.started and not self.seconds and not self._proc.is_alive():
            raise RuntimeError(f"the flooder exited with {self._proc.exitcode}")
        return int(self._sent.value)

    def start(self) -> None:
        self.started = time.monotonic()
        self._proc.start()

    def stop(self) -> None:
        if self.started and not self.seconds:
            self.seconds = time.monotonic() - self.started
        self._stop.set()
        self._proc.join(15)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)

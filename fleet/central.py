"""``biblioedge central``: the API and the MQTT bridge in one process, one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator

import uvicorn

from biblioedge.fleet.api import create_app
from biblioedge.fleet.bridge import Bridge
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.registrations import REGISTRATION, Registrar
from biblioedge.fleet.repo import Repo
from biblioedge.keys import load_or_create_key

log = logging.getLogger("biblioedge.fleet.central")


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: central stops API and bridge together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def run_central(cfg: CentralConfig, stop: asyncio.Event | None = None) -> int:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    repo = Repo(cfg.db_url)
    await asyncio.to_thread(repo.migrate)
    metrics = CentralMetrics()
    key = load_or_create_key(cfg.data_dir / "keys" / "templates.key")
    readers = Readers(repo, key)
    cards = Cards(readers, load_or_create_key(cfg.data_dir / "keys" / "cards.key"))
    repo.effects[REGISTRATION] = Registrar(readers, cards, cfg.patron_prefix)
    bridge = Bridge(cfg, repo, metrics, readers)
    app = create_app(cfg, repo, bridge, metrics, readers, cards)
    server = _Server(
        uvicorn.Config(
            app, host=cfg.http.host, port=cfg.http.port, log_level="warning", access_log=False
        )
    )
    if cfg.admin_token is None:
        log.warning("no admin token set: the admin API answers 503 (set *_ADMIN_TOKEN_FILE)")
    bridge_task = asyncio.create_task(bridge.run(), name="central:bridge")
    api_task = asyncio.create_task(server.serve(), name="central:api")
    stop_task = asyncio.create_task(stop.wait(), name="central:stop")
    while not server.started and not api_task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.02)
    if server.started:
        port = server.servers[0].sockets[0].getsockname()[1]
        log.info("central API on http://%s:%d/api/v1 (docs at /docs)", cfg.http.host, port)
    done, _ = await asyncio.wait(
        {bridge_task, api_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
    )
    code = 0
    for task in done:
        if task is not stop_task and task.exception() is not None:
            log.error("central %s failed: %s", task.get_name(), task.exception())
            code = 1
    server.should_exit = True
    bridge_task.cancel()
    stop_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        async with asyncio.timeout(5):
            await asyncio.gather(api_task, bridge_task, return_exceptions=True)
    bridge.close()
    repo.close()
    log.info("central stopped")
    return code

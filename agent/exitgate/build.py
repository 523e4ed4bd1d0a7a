"""Build the exit gate from the agent's config: the reader, the alarm relay, the sound hook,
the passage counter and (when configured) the library system.

Kept apart from :mod:`biblioedge.agent.exitgate.flow` so the flow stays testable with hand-made
parts and this module is the only place that knows strings like ``m810:/dev/ttyUSB0``.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.exitgate.flow import AlarmItem, AsyncEmit, ExitGate, ExitMetrics, ExitSettings
from biblioedge.drivers.gate import CH340Relay, LineGate
from biblioedge.drivers.rfid.reader import AfiScheme, TagReader
from biblioedge.settings import ConfigError

log = logging.getLogger("biblioedge.agent.exitgate")


def open_reader(cfg: AgentConfig) -> tuple[TagReader, Any, Callable[[], TagReader]]:
    """(reader, simulator or None, reopen): ``m810:<port>`` or ``sim`` (an empty simulated
    field at the real line speed; the demo and the tests walk tags through it)."""
    from biblioedge.drivers.rfid.m810 import M810Reader

    spec = cfg.exitgate.rfid
    if spec == "sim":
        from biblioedge.drivers.rfid.sim import M810Simulator

        sim = M810Simulator(air_s=0.004).start()
        return M810Reader(sim.port), sim, lambda: M810Reader(sim.port)
    if spec.startswith("m810:"):
        port = spec[5:]
        return M810Reader(port), None, lambda: M810Reader(port)
    raise ConfigError("exitgate.rfid: m810:<serial port> or sim")


class NoRelay:
    def open(self, pulse_ms: int) -> None:
        pass

    def close(self) -> None:
        pass


class LineAlarm:
    """A line-protocol controller: the alarm output on for the pulse, then off."""

    def __init__(self, gate: LineGate) -> None:
        self.gate = gate
        self._off: threading.Timer | None = None

    def open(self, pulse_ms: int) -> None:
        if self._off is not None:
            self._off.cancel()  # a second alarm extends the first
        self.gate.alarm(True)
        self._off = threading.Timer(pulse_ms / 1000, self._release)
        self._off.daemon = True
        self._off.start()

    def _release(self) -> None:
        from biblioedge.drivers.errors import DriverError

        try:
            self.gate.alarm(False)
        except DriverError as exc:
            log.warning("alarm relay did not switch off: %s", exc)

    def close(self) -> None:
        if self._off is not None:
            self._off.cancel()
        self.gate.close()


def make_relay(cfg: AgentConfig) -> tuple[Any, Any]:
    """(relay with ``open(pulse_ms)``, simulator or None). ``sim``: a relay board on a pty."""
    e = cfg.exitgate
    if e.relay == "none":
        return NoRelay(), None
    if e.relay == "sim":
        from biblioedge.drivers.sim_serial import RelayBoardSimulator

        board = RelayBoardSimulator().start()
        return CH340Relay(board.port, channel=e.relay_channel), board
    kind, _, port = e.relay.partition(":")
    if kind == "ch340":
        return CH340Relay(port, channel=e.relay_channel), None
    return LineAlarm(LineGate(port)), None


def sound_hook(spec: str) -> Callable[[tuple[AlarmItem, ...]], None] | None:
    """``cmd:<command line>``: run on each alarm, never two at once, never waited for."""
    if not spec.startswith("cmd:"):
        return None
    argv = shlex.split(spec[4:])
    playing: list[subprocess.Popen[bytes]] = []

    def play(_items: tuple[AlarmItem, ...]) -> None:
        if playing and playing[0].poll() is None:
            return
        playing.clear()
        try:
            playing.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        except OSError as exc:
            log.warning("alarm sound %r failed: %s", argv[0], exc)

    return play


def make_counter(cfg: AgentConfig) -> tuple[Any, Any]:
    from biblioedge.drivers.passage import LinePassageCounter, PassageCounterSimulator

    spec = cfg.exitgate.counter
    if spec == "none":
        return None, None
    if spec == "sim":
        sim = PassageCounterSimulator().start()
        return LinePassageCounter(sim.port), sim
    return LinePassageCounter(spec.partition(":")[2]), None


def settings_of(cfg: AgentConfig) -> ExitSettings:
    e = cfg.exitgate
    return ExitSettings(
        afi=AfiScheme(secured=e.afi_secured, loaned=e.afi_loaned),
        smart=e.mode == "smart",
        pulse_ms=e.pulse_ms,
        realarm_s=e.realarm_s,
        forget_s=e.forget_s,
        alarm_show_s=e.alarm_show_s,
        max_new_tags=e.max_new_tags,
        loan_cache_s=e.loan_cache_s,
        probe_s=e.probe_s,
        counter_silence_s=e.counter_silence_s,
    )


async def build_exitgate(
    cfg: AgentConfig, emit: AsyncEmit, registry: Any = None
) -> tuple[ExitGate, list[Any]]:
    """The exit gate and what to close when it is done."""
    reader, sim, reopen = await asyncio.to_thread(open_reader, cfg)
    relay, board = await asyncio.to_thread(make_relay, cfg)
    counter, counter_sim = await asyncio.to_thread(make_counter, cfg)
    library = None
    account = cfg.exitgate.account()
    if account is not None:
        from biblioedge.drivers.sip2.library import Sip2Library

        library = Sip2Library(account)
    gate = ExitGate(
        reader=reader,
        relay=relay,
        emit=emit,
        settings=settings_of(cfg),
        library=library,
        counter=counter,
        reopen=reopen,
        on_alarm=sound_hook(cfg.exitgate.sound),
        metrics=ExitMetrics(registry) if registry is not None else None,
    )
    gate.simulator = sim
    gate.counter_simulator = counter_sim
    gate.relay_board = board
    closables: list[Any] = [gate, relay, counter, library, sim, board, counter_sim]
    log.info(
        "exit gate ready: RFID %s (%s mode), relay %s, counter %s, library system %s",
        cfg.exitgate.rfid,
        cfg.exitgate.mode,
        cfg.exitgate.relay,
        cfg.exitgate.counter,
        f"{account.host}:{account.port}" if account is not None else "none",
    )

    class _ReaderCloser:  # the reader may be reopened: close whichever is current
        def close(self) -> None:
            gate.reader.close()

    closables.insert(1, _ReaderCloser())
    return gate, [c for c in closables if c is not None]

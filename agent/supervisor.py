"""Runs the agent's components, restarts the ones that crash or stall, stops them on signal.

Each component runs inside its own TaskGroup so the tasks it spawns die with it. A crash is
retried with backoff while the component stays within its restart budget; past the budget the
supervisor gives up and the process exits non-zero so systemd restarts the whole agent, which
is the right move when something is wrong beyond one component. A component proves it is alive
by calling ``ctx.heartbeat()``; one that stays silent past its stall timeout is cancelled and
restarted, which catches a blocked await that no exception would ever reveal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from biblioedge.agent.metrics import AgentMetrics
from biblioedge.logs import fields
from biblioedge.retry import Backoff

log = logging.getLogger("biblioedge.agent.supervisor")


class ComponentFailed(RuntimeError):
    """A component crashed more often than its budget allows."""


class Context:
    """Handed to a component's ``run``: its heartbeat and its supervisor's view of it."""

    def __init__(self, name: str, stall_timeout_s: float) -> None:
        self.name = name
        self.stall_timeout_s = stall_timeout_s
        self.last_beat = time.monotonic()
        self.stalled = False
        self.task: asyncio.Task[None] | None = None

    def heartbeat(self) -> None:
        self.last_beat = time.monotonic()


class Component(Protocol):
    name: str

    async def run(self, ctx: Context) -> None: ...


CrashHook = Callable[[str, str], Awaitable[None]]


class Supervisor:
    def __init__(
        self,
        components: list[Component],
        metrics: AgentMetrics,
        *,
        restart_budget: int = 5,
        budget_window_s: float = 60.0,
        stall_timeout_s: float = 30.0,
        on_crash: CrashHook | None = None,
    ) -> None:
        self.components = components
        self.metrics = metrics
        self.restart_budget = restart_budget
        self.budget_window_s = budget_window_s
        self.stall_timeout_s = stall_timeout_s
        self.on_crash = on_crash
        self.contexts: dict[str, Context] = {}
        self.health: dict[str, str] = {c.name: "starting" for c in components}

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for comp in self.components:
                tg.create_task(self._keep(comp), name=f"supervise:{comp.name}")
            tg.create_task(self._watchdog(), name="supervise:watchdog")

    async def _keep(self, comp: Component) -> None:
        restarts: deque[float] = deque()
        backoff = Backoff(base=0.2, cap=10.0)
        while True:
            ctx = Context(comp.name, self.stall_timeout_s)
            self.contexts[comp.name] = ctx
            self.health[comp.name] = "up"
            self.metrics.component_up.labels(comp.name).set(1)
            reason = ""
            try:
                async with asyncio.TaskGroup() as tg:
                    ctx.task = tg.create_task(comp.run(ctx), name=comp.name)
            except* Exception as group:
                exc = group.exceptions[0]
                reason = f"{type(exc).__name__}: {exc}"
                log.error(
                    "component %s crashed",
                    comp.name,
                    exc_info=exc,
                    extra=fields(component=comp.name),
                )
            finally:
                self.metrics.component_up.labels(comp.name).set(0)
            if ctx.stalled:
                reason = f"stalled for more than {ctx.stall_timeout_s:.0f} s"
            if not reason:
                self.health[comp.name] = "done"
                return
            now = time.monotonic()
            restarts.append(now)
            while restarts and now - restarts[0] > self.budget_window_s:
                restarts.popleft()
            kind = "stall" if ctx.stalled else "crash"
            self.metrics.component_restarts.labels(comp.name, kind).inc()
            self.health[comp.name] = f"restarting ({kind})"
            if self.on_crash is not None:
                try:
                    await self.on_crash(comp.name, reason)
                except Exception:
                    log.exception("crash hook failed")
            if len(restarts) > self.restart_budget:
                self.health[comp.name] = "failed"
                raise ComponentFailed(
                    f"{comp.name} failed {len(restarts)} times in {self.budget_window_s:.0f} s: "
                    f"{reason}"
                )
            await asyncio.sleep(backoff.next_delay())

    async def _watchdog(self) -> None:
        period = 0.5
        while True:
            before = time.monotonic()
            await asyncio.sleep(period)
            self.metrics.loop_lag.observe(max(0.0, time.monotonic() - before - period))
            now = time.monotonic()
            for ctx in list(self.contexts.values()):
                silent = now - ctx.last_beat
                task = ctx.task
                if task is None or task.done() or ctx.stalled or silent <= ctx.stall_timeout_s:
                    continue
                ctx.stalled = True
                log.warning(
                    "component %s silent for %.1f s, restarting",
                    ctx.name,
                    silent,
                    extra=fields(component=ctx.name),
                )
                task.cancel()


class StopOnClose:
    """Adapts a thread that has ``stop()`` (a serial scanner) to the runtime's closables."""

    def __init__(self, thing: Any) -> None:
        self.thing = thing

    def close(self) -> None:
        self.thing.stop()


def serial_scanner(spec: str, on_text: Callable[[str], Any]) -> StopOnClose | None:
    """Start the hand scanner of ``serial:<port>`` (None for "none"): each code it reads is
    handed to ``on_text`` on the running event loop, never on the scanner's thread."""
    if not spec.startswith("serial:"):
        return None
    from biblioedge.drivers.codes import Code, SerialScanner

    loop = asyncio.get_running_loop()

    def on_code(code: Code) -> None:
        loop.call_soon_threadsafe(on_text, code.text)

    scanner = SerialScanner(spec[7:], on_code=on_code)
    scanner.start()
    return StopOnClose(scanner)

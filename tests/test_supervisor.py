import asyncio

import pytest

from biblioedge.agent.metrics import AgentMetrics
from biblioedge.agent.supervisor import ComponentFailed, Context, Supervisor


class Flaky:
    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0
        self.steady = asyncio.Event()

    async def run(self, ctx: Context) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError(f"boom {self.runs}")
        self.steady.set()
        while True:
            ctx.heartbeat()
            await asyncio.sleep(0.01)


class Stuck:
    name = "stuck"

    def __init__(self) -> None:
        self.runs = 0
        self.cleaned = 0

    async def run(self, ctx: Context) -> None:
        self.runs += 1
        ctx.heartbeat()
        try:
            await asyncio.Event().wait()  # never beats again
        finally:
            self.cleaned += 1


def restarts(metrics: AgentMetrics, name: str, kind: str) -> float:
    value = metrics.registry.get_sample_value(
        "agent_component_restarts_total", {"component": name, "reason": kind}
    )
    return value or 0.0


async def test_crashing_component_is_restarted_within_budget() -> None:
    metrics = AgentMetrics()
    comp = Flaky(failures=2)
    crashes: list[str] = []

    async def hook(name: str, reason: str) -> None:
        crashes.append(f"{name}: {reason}")

    sup = Supervisor([comp], metrics, restart_budget=3, on_crash=hook)
    task = asyncio.create_task(sup.run())
    await asyncio.wait_for(comp.steady.wait(), 10)
    assert comp.runs == 3
    assert crashes == ["flaky: RuntimeError: boom 1", "flaky: RuntimeError: boom 2"]
    assert restarts(metrics, "flaky", "crash") == 2
    assert sup.health["flaky"] == "up"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_budget_exhausted_fails_the_supervisor() -> None:
    comp = Flaky(failures=100)
    sup = Supervisor([comp], AgentMetrics(), restart_budget=2, budget_window_s=60)
    with pytest.raises(ExceptionGroup) as err:
        await asyncio.wait_for(sup.run(), 20)
    assert err.group_contains(ComponentFailed)
    assert comp.runs == 3 and sup.health["flaky"] == "failed"


async def test_stalled_component_is_cancelled_and_restarted() -> None:
    metrics = AgentMetrics()
    comp = Stuck()
    sup = Supervisor([comp], metrics, restart_budget=5, stall_timeout_s=0.3)
    task = asyncio.create_task(sup.run())
    for _ in range(200):
        if comp.runs >= 2:
            break
        await asyncio.sleep(0.05)
    assert comp.runs >= 2 and comp.cleaned >= 1
    assert restarts(metrics, "stuck", "stall") >= 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

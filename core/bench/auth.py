"""``biblioedge bench auth-flood``: a real user's API latency beside a wrong-token flood.

Central runs twice on a real broker, in the same run: once with the failed-authentication
throttle out of reach (``http.auth_failures`` = 100000, the baseline) and once with the
defaults. Each time a real admin reads ``/api/v1/devices`` from 127.0.0.1 (median of
``samples``), first alone, then while ``threads`` clients send wrong tokens from 127.0.0.2 on
keep-alive connections. Reported: both medians and their ratio per run, the flood's rate and
status codes, and central's CPU time per flood request.
"""

from __future__ import annotations

import os
import ssl
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from biblioedge.demo.launch import CentralProcess
from biblioedge.provisioning.broker import BrokerProcess


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _user_ms(central: CentralProcess, ctx: ssl.SSLContext, samples: int) -> float:
    """A real admin's median latency over ``samples`` requests."""
    took = []
    auth = {"Authorization": f"Bearer {central.token}"}
    with httpx.Client(base_url=central.url, verify=ctx, headers=auth, timeout=60) as user:
        user.get("/api/v1/devices")
        for _ in range(samples):
            t0 = time.perf_counter()
            user.get("/api/v1/devices")
            took.append((time.perf_counter() - t0) * 1000)
    return statistics.median(took)


def _flood(
    central: CentralProcess,
    ctx: ssl.SSLContext,
    stop: threading.Event,
    codes: dict[str, int],
    lock: threading.Lock,
) -> None:
    """Wrong tokens from another loopback address until stopped, counting the answers."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2", verify=ctx)
    wrong = {"Authorization": "Bearer bet_0_wrong"}
    with httpx.Client(base_url=central.url, transport=transport, timeout=60) as attacker:
        while not stop.is_set():
            code = str(attacker.get("/api/v1/devices", headers=wrong).status_code)
            with lock:
                codes[code] = codes.get(code, 0) + 1


def _one(
    tmp: Path, auth_failures: int, threads: int, seconds: float, samples: int
) -> dict[str, Any]:
    broker = BrokerProcess(tmp / "broker")
    central = CentralProcess(
        tmp / "central", broker, extra={"http": {"auth_failures": auth_failures}}
    )
    broker.start()
    central.start()
    ctx = ssl.create_default_context(cafile=central.ca_file)

    stop = threading.Event()
    codes: dict[str, int] = {}
    lock = threading.Lock()

    def user_ms() -> float:
        return _user_ms(central, ctx, samples)

    def flood() -> None:
        _flood(central, ctx, stop, codes, lock)

    try:
        alone = user_ms()
        assert central.proc is not None
        cpu0, t0 = _cpu_s(central.proc.pid), time.perf_counter()
        workers = [threading.Thread(target=flood, daemon=True) for _ in range(threads)]
        for w in workers:
            w.start()
        time.sleep(seconds / 2)  # the flood is under way before the user is measured
        flooded = user_ms()
        time.sleep(max(0.0, seconds / 2 - (time.perf_counter() - t0)))
        stop.set()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
        cpu_ms = (_cpu_s(central.proc.pid) - cpu0) * 1000
    finally:
        stop.set()
        central.stop()
        broker.stop()
    sent = sum(codes.values())
    return {
        "user_ms_alone": round(alone, 1),
        "user_ms_flooded": round(flooded, 1),
        "ratio": round(flooded / alone, 2),
        "flood_rps": round(sent / elapsed),
        "flood_codes": codes,
        "central_cpu_ms_per_flood_request": round(cpu_ms / max(sent, 1), 2),
    }


def bench_auth_flood(threads: int = 8, seconds: float = 3.0, samples: int = 60) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="be-bench-auth-") as d:
        baseline = _one(Path(d) / "off", 100_000, threads, seconds, samples)
        throttled = _one(Path(d) / "on", 20, threads, seconds, samples)
    return {
        "threads": threads,
        "baseline_unthrottled": baseline,
        "throttled": throttled,
        "user_ratio_throttled_vs_baseline": round(
            throttled["user_ms_flooded"] / baseline["user_ms_flooded"], 2
        ),
    }

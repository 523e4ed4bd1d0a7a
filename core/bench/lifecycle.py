"""``biblioedge bench lifecycle``: a reader's life reaching the library system (issue 22).

Everything over loopback against the dummy library system (``biblioedge sip serve
--rest-port``: Koha's patron API shape), with central's own code (registrar, queue, worker):

- ``register_to_ils_p95_s``: a desk registration applied at central until the patron is
  stored in the library system (asked of the library system itself, every 10 ms), beside the
  registration alone (central's transaction, the desk's answer) in the same run;
- ``outage_drain``: registrations queued while the library system is down, then drained by
  ``biblioedge central ils drain`` killed with -9 once part way and started again; ``lost``
  (registrations with no patron) and ``duplicated_patrons`` (patrons beyond one per reader)
  are counted at the library system. The baseline is the time the registrations took to
  queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from biblioedge.procs import free_port, wait_port

CLI = [sys.executable, "-m", "biblioedge"]
SITE, DESK = "tv-tinh", "desk-1"


def _p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)] if xs else 0.0


class _Dummy:
    """The dummy library system as its own process (killed and restarted as a real one)."""

    def __init__(self, log: Path) -> None:
        self.sip, self.rest = free_port(), free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"koha+http://koha:koha@127.0.0.1:{self.rest}/"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*CLI, "sip", "serve", "--port", str(self.sip), "--rest-port", str(self.rest)],
                stdout=out,
                stderr=out,
            )
        wait_port("127.0.0.1", self.rest, 30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def patrons(self) -> list[dict[str, Any]]:
        r = httpx.get(
            f"http://127.0.0.1:{self.rest}/api/v1/patrons",
            params={"_per_page": "1000000"},
            headers={"x-koha-embed": "extended_attributes"},
            auth=("koha", "koha"),
            timeout=30,
        )
        r.raise_for_status()
        out: list[dict[str, Any]] = r.json()
        return out

    def has(self, card: str) -> bool:
        r = httpx.get(
            f"http://127.0.0.1:{self.rest}/api/v1/patrons",
            params={"cardnumber": card},
            auth=("koha", "koha"),
            timeout=10,
        )
        return r.status_code == 200 and bool(r.json())


class _Central:
    """Central's database, registrar and library-system worker, in this process."""

    def __init__(self, data: Path, ils_url: str) -> None:
        from biblioedge.fleet.cards import Cards
        from biblioedge.fleet.ils.settings import IlsConfig
        from biblioedge.fleet.readers import Readers
        from biblioedge.fleet.registrations import REGISTRATION, Registrar
        from biblioedge.fleet.repo import Repo
        from biblioedge.keys import load_or_create_key

        data.mkdir(parents=True, exist_ok=True)
        self.data = data
        self.repo = Repo(f"sqlite:///{data / 'central.sqlite3'}")
        key = load_or_create_key(data / "keys" / "templates.key")
        self.repo.migrate(key)
        self.repo.register_device(DESK, SITE, "desk")
        self.readers = Readers(self.repo, key)
        cards = Cards(self.readers, load_or_create_key(data / "keys" / "cards.key"))
        self.repo.effects[REGISTRATION] = Registrar(self.readers, cards)
        self.cfg = IlsConfig.model_validate(
            {"url": ils_url, "backoff_s": 0.2, "backoff_max_s": 2.0, "status_poll_s": 0}
        )
        self.seq = 0

    def register(self, n: int) -> str:
        from biblioedge.fleet.registrations import REGISTRATION
        from biblioedge.fleet.repo import Incoming
        from biblioedge.protocol import uuid7

        self.seq += 1
        eid = uuid7()
        event = {
            "event_id": eid,
            "device_id": DESK,
            "site": SITE,
            "type": REGISTRATION,
            "seq": self.seq,
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": {
                "registration_id": uuid7(),
                "citizen_ref": f"{n:064x}",
                "display_name": f"Nguyễn Văn Bạn Đọc {n}",
                "profile": {"date_of_birth": "1990-05-17", "gender": "Nam"},
                "consent": {
                    "purpose": "face_gate",
                    "granted": False,
                    "text_version": "vi-2026-1",
                    "librarian": "lan",
                },
                "check": {"method": "chip_face", "passive_auth": "ok", "face_score": 0.97},
                "card_valid_days": 365,
            },
        }
        body = {"batch_id": str(uuid.uuid4()), "device_id": DESK, "events": [event]}
        result = self.repo.ingest([Incoming(SITE, DESK, "events", orjson.dumps(body))], True)
        (ack,) = result.acks
        return str(ack.results[eid]["patron_id"])

    def config_file(self) -> Path:
        path = self.data / "central.toml"
        path.write_text(
            f'data_dir = "{self.data}"\n[ils]\nurl = "{self.cfg.url}"\n'
            "backoff_s = 0.2\nbackoff_max_s = 2.0\n",
            encoding="utf-8",
        )
        return path


def register_to_ils(tmp: Path, rounds: int) -> dict[str, Any]:
    from biblioedge.fleet.ils.worker import IlsWorker, open_connector

    dummy = _Dummy(tmp / "dummy-latency.log")
    dummy.start()
    central = _Central(tmp / "latency", dummy.url)
    worker = IlsWorker(central.cfg, central.repo, central.readers, open_connector(central.cfg))
    stop = threading.Event()

    async def work() -> None:
        task = asyncio.create_task(worker.run())  # polled as central polls
        while not stop.is_set():  # noqa: ASYNC110 - a thread's event, checked between polls
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    thread = threading.Thread(target=lambda: asyncio.run(work()), daemon=True)
    thread.start()
    alone: list[float] = []
    to_ils: list[float] = []
    try:
        for n in range(1, rounds + 1):
            t0 = time.perf_counter()
            pid = central.register(n)
            alone.append(time.perf_counter() - t0)
            deadline = t0 + 60
            while not dummy.has(pid):
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{pid} did not reach the library system in 60 s")
                time.sleep(0.01)
            to_ils.append(time.perf_counter() - t0)
    finally:
        stop.set()
        thread.join(30)
        worker.connector.close()
        central.repo.close()
        dummy.stop()
    p95, base = _p95(to_ils), _p95(alone)
    return {
        "register_to_ils_p95_s": round(p95, 4),
        "register_to_ils_median_s": round(statistics.median(to_ils), 4),
        "desk_registration_alone_p95_s": round(base, 4),
        "register_to_ils_ratio": round(p95 / base, 1) if base else None,
        "register_rounds": rounds,
    }


def outage_drain(tmp: Path, readers: int) -> dict[str, Any]:
    dummy = _Dummy(tmp / "dummy-outage.log")  # not started: the library system is down
    central = _Central(tmp / "outage", dummy.url)
    t0 = time.perf_counter()
    pids = [central.register(n) for n in range(1, readers + 1)]
    queued_s = time.perf_counter() - t0
    from biblioedge.fleet.ils.queue import Queue

    queue = Queue(central.repo.engine)
    conf = central.config_file()
    drain = [*CLI, "central", "ils", "drain", "--config", str(conf), "--json"]
    log = (tmp / "drain.log").open("ab")
    # a try while it is down: everything stays queued
    subprocess.run(drain, stdout=log, stderr=log, timeout=600, check=False)
    pending_while_down = queue.summary()["pending"]
    dummy.start()
    t1 = time.perf_counter()
    proc = subprocess.Popen(drain, stdout=log, stderr=log)
    killed_at = 0
    while proc.poll() is None:
        done = queue.summary()["done"]
        if done >= readers // 3:
            os.kill(proc.pid, signal.SIGKILL)  # mid-way, maybe mid-request
            proc.wait(10)
            killed_at = done
            break
        time.sleep(0.05)
    rounds = 0
    while queue.summary()["pending"] and rounds < 20:
        queue.release()  # the restarted connector goes at once, not after the backoff
        subprocess.run(drain, stdout=log, stderr=log, timeout=1800, check=False)
        rounds += 1
    drain_s = time.perf_counter() - t1
    log.close()
    patrons = dummy.patrons()
    dummy.stop()
    summary = queue.summary()
    central.repo.close()
    cards = [p.get("cardnumber") for p in patrons]
    refs = [
        a["value"]
        for p in patrons
        for a in p.get("extended_attributes") or []
        if a["type"] == "CCCD_REF"
    ]
    return {
        "readers": readers,
        "pending_while_down": pending_while_down,
        "killed_after_done": killed_at,
        "lost": len(set(pids) - set(cards)),
        "duplicated_patrons": (len(patrons) - len(set(cards))) + (len(refs) - len(set(refs))),
        "patrons_in_ils": len(patrons),
        "still_queued": summary["pending"] + summary["held"],
        "drain_s": round(drain_s, 2),
        "drain_per_s": round(readers / drain_s, 1) if drain_s else None,
        "queue_baseline_s": round(queued_s, 2),
        "drain_ratio_to_queueing": round(drain_s / queued_s, 2) if queued_s else None,
    }


def bench_lifecycle(rounds: int = 50, readers: int = 1000) -> dict[str, Any]:
    """The library system's figures, then the kiosks' (lifecycle_kiosks): the new reader
    at the other branch's gate, and a replaced card refused at every gate."""
    from biblioedge.bench.lifecycle_kiosks import other_branch_granted, replaced_card_refused_s

    with tempfile.TemporaryDirectory(prefix="be-lifecycle-") as tmp:
        result = register_to_ils(Path(tmp), rounds)
        result["outage_drain"] = outage_drain(Path(tmp), readers) if readers else None
    branch = other_branch_granted()
    replaced = replaced_card_refused_s()
    result["other_branch_granted"] = branch.pop("other_branch_granted")
    result["other_branch"] = branch
    result["replaced_card_refused_s"] = replaced.pop("replaced_card_refused_s")
    result["replaced_card"] = replaced
    return result

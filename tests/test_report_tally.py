"""Counting the report figures beside ingest (fleet/reports/pending.py): every stored event is
counted exactly once, through kill -9 of the process counting, a database row that cannot be
counted, and on PostgreSQL two tallies at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest

from biblioedge.fleet.repo import Incoming, Repo
from biblioedge.fleet.reports import ReportQuery, Reports
from biblioedge.fleet.reports.pending import Tally
from biblioedge.protocol import uuid7

MONDAY = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def ingest(repo: Repo, n: int, seed: int = 0) -> None:
    """``n`` events of a gate and a self-check as agents send them (batches of 100): grants
    by 300 readers, some within each other's passback window, refusals and loans."""
    seqs = {"gate-01": 0, "sc-01": 0}
    batches: dict[str, list[dict[str, Any]]] = {"gate-01": [], "sc-01": []}
    for i in range(n):
        device = "gate-01" if i % 3 else "sc-01"
        seqs[device] += 1
        at = MONDAY + timedelta(seconds=7 * i + seed)
        patron = f"BE{(i * 7919 + seed) % 300:07d}"
        if device == "sc-01":
            etype, payload = "circ.checkout", {"item_id": f"3{i:08d}", "patron_id": patron}
        elif i % 17 == 0:
            etype, payload = "gate.decision", {"decision": "deny", "reason": "blocked"}
        else:
            etype, payload = "gate.decision", {"decision": "grant", "patron_id": patron}
        batches[device].append(
            {
                "event_id": uuid7(),
                "device_id": device,
                "site": "tv-tinh",
                "type": etype,
                "seq": seqs[device],
                "occurred_at": at.isoformat(),
                "payload": payload,
            }
        )
    msgs = []
    for device, evs in batches.items():
        for i in range(0, len(evs), 100):
            body = {"v": 1, "batch_id": uuid7(), "device_id": device, "events": evs[i : i + 100]}
            msgs.append(Incoming("tv-tinh", device, "events", orjson.dumps(body)))
    for i in range(0, len(msgs), 8):
        assert not repo.ingest(msgs[i : i + 8], accept_unknown=True).quarantined


QUERY = ReportQuery(start=date(2026, 3, 1), end=date(2026, 3, 31), by="hour")


def exact(repo: Repo) -> dict[str, Any]:
    reports = Reports(repo.engine)
    kept, raw = reports.report(QUERY), reports.raw_report(QUERY)
    assert kept.model_dump(exclude={"generated_at"}) == raw.model_dump(exclude={"generated_at"})
    return dict(kept.total)


def test_ingest_queues_the_events_and_the_tally_beside_it_counts_each_once(repo: Repo) -> None:
    assert repo.rollups is not None
    tally = repo.tally = Tally(repo.engine, repo.rollups, batch=150, quiet_s=0.05)
    ingest(repo, 600)
    assert tally.pending() == 600  # stored and acknowledged, not yet counted
    stop = threading.Event()
    worker = threading.Thread(target=tally.run_blocking, args=(stop,))
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while tally.any_pending():
            assert time.monotonic() < deadline, "the tally never counted the stored events"
            time.sleep(0.05)
        ingest(repo, 300, seed=3)  # the same readers again: some within the window
        while tally.any_pending():
            assert time.monotonic() < deadline, "the tally never counted the stored events"
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join()
    total = exact(repo)
    assert total["loans"] == 300 and total["refusals"] > 0 and total["visits"] > 0


_COUNT_SLOWLY = """
import sys
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.reports.pending import Tally
repo = Repo(sys.argv[1])
tally = Tally(repo.engine, repo.rollups, batch=int(sys.argv[2]))
print("ready", flush=True)
while n := tally.step():
    print("counted", n, flush=True)
"""


def test_killing_the_counting_process_at_any_moment_neither_loses_nor_doubles_a_figure(
    repo: Repo,
) -> None:
    """kill -9 of a process counting batches, five times at whatever moment it has reached
    (inside a batch's transaction or between two): each batch's figures and the removal of
    its events from the queue commit together, so the figures end up exact."""
    assert repo.rollups is not None
    ingest(repo, 1500)
    tally = Tally(repo.engine, repo.rollups)
    left = tally.pending()
    assert left == 1500
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for round_ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", _COUNT_SLOWLY, repo.url, "20"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.stdout.readline()  # its first batch is counted (or it has counted them all)
        time.sleep(0.01 * round_)  # a different moment each round: any moment is right
        child.send_signal(signal.SIGKILL)
        child.wait()
        now_left = tally.pending()
        assert now_left <= left  # a batch killed before its commit is still in the queue
        left = now_left
    tally.drain()
    assert tally.pending() == 0
    assert exact(repo)["loans"] == 500


@pytest.mark.parametrize("repo", ["sqlite"], indirect=True)  # PostgreSQL: only real times
def test_a_stored_row_that_cannot_be_counted_costs_only_itself(repo: Repo) -> None:
    """A row the tally cannot read (an events table edited by hand or by an attacker with the
    file) is left out of the figures with a log line; the batch around it is counted."""
    assert repo.rollups is not None
    ingest(repo, 60)
    bad = "0190aaaa-0000-7000-8000-000000000000"  # sorts first in the queue
    with repo.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO events (event_id, device_id, site, type, seq, occurred_at, received_at,"
            " payload) VALUES (?, 'sc-01', 'tv-tinh', 'circ.checkout', 999, 'not a time',"
            " '2026-03-02 02:00:00.000000', '{}')",
            (bad,),
        )
        conn.exec_driver_sql("INSERT INTO report_pending (event_id) VALUES (?)", (bad,))
    tally = Tally(repo.engine, repo.rollups)
    assert tally.drain() == 61
    assert tally.pending() == 0
    with repo.engine.begin() as conn:  # the raw computation cannot read it either
        conn.exec_driver_sql("DELETE FROM events WHERE event_id = ?", (bad,))
    assert exact(repo)["loans"] == 20


@pytest.mark.parametrize("repo", ["postgresql"], indirect=True)  # SQLite: one central
def test_two_tallies_at_once_share_the_queue_and_count_each_event_once(repo: Repo) -> None:
    """Central replicas each run a tally: each batch goes to one of them."""
    assert repo.rollups is not None
    ingest(repo, 1200)
    tallies = [Tally(repo.engine, repo.rollups, batch=50) for _ in range(2)]
    counted = [0, 0]

    def run(i: int) -> None:
        counted[i] = tallies[i].drain()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counted) == 1200
    assert exact(repo)["loans"] == 400

"""``biblioedge bench reports``: a year's report from the rollups against the same report
computed from the raw events, on SQLite and PostgreSQL, in the same run.

1. load: ``--events`` synthetic events shaped like two branches' year (gates, self-checks,
   desks, exit gates; opening hours, weekdays; refusals, offline loans, registrations with
   age bands), stored in batches the way central stores them — the new events of each batch
   inserted and counted by ``Rollups.apply`` in one transaction — with some batches held back
   and delivered at the end (late, out of order) and some delivered twice (duplicates). This
   is a bulk path (no MQTT, no per-message validation) so that two million events load in
   minutes: the rollup code is the one central runs.
2. report: the year by site × day × hour from the rollups, ``--runs`` times: ``report_p95_ms``.
3. raw: the same report from the raw events: ``raw_ms``, ``speedup`` = raw / report p95, and
   ``exact`` = every figure (rows, totals, unique readers, completeness) equal.
4. ingest: ``--sample`` events through central's real ingest path (``Repo.ingest``: MQTT
   batches as the bridge hands them over, validation, role table, effects) into fresh
   databases, with rollups and without, alternated: ``ingest_ratio`` = events/s with / without.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

SITES = {
    "tv-tinh": ("gate-01", "gate-02", "sc-01", "sc-02", "desk-01", "exit-01"),
    "tv-huyen": ("gate-11", "sc-11", "desk-11", "exit-11"),
}
YEAR = 2026
#: share of the day's events per local opening hour (7:00 to 20:00)
HOURS = {7: 3, 8: 8, 9: 10, 10: 10, 11: 8, 12: 4, 13: 5, 14: 9, 15: 10, 16: 10, 17: 9, 18: 7, 19: 4}
PATRONS = 20_000
BATCH = 2000


def _kiosk_event(
    rng: random.Random, site: str, device: str, at: datetime, seq: int
) -> tuple[str, dict[str, Any]]:
    role = device.split("-", maxsplit=1)[0]
    patron = f"BE{rng.randint(1, PATRONS):07d}"
    if role == "gate":
        if rng.random() < 0.92:
            return "gate.decision", {"decision": "grant", "method": "face", "patron_id": patron}
        reason = rng.choice(["unknown_face", "blocked", "expired", "passback", "low_quality"])
        return "gate.decision", {"decision": "deny", "method": "face", "reason": reason}
    if role == "sc":
        etype = rng.choices(["circ.checkout", "circ.checkin", "circ.renew"], [5, 4, 1])[0]
        result = "ok" if rng.random() < 0.95 else rng.choice(["hold", "not_found", "blocked"])
        p: dict[str, Any] = {"item_id": f"3000{rng.randint(0, 99999):05d}", "result": result}
        p["offline"] = rng.random() < 0.03
        if etype == "circ.checkout":
            p["patron_id"] = patron
        if rng.random() < 0.002:
            return "circ.reconciled", {"done": rng.randint(0, 9), "refused": rng.randint(0, 2)}
        return etype, p
    if role == "desk":
        new = f"NR{seq:07d}{device[-2:]}"  # registered this year; not among the visitors
        return "reader.registered", {"patron_id": new, "birth_year": rng.randint(1950, 2020)}
    if rng.random() < 0.02:
        return "exit.alarm", {"reason": "afi_secured", "items": [{"item_id": "1"}]}
    return "exit.passages", {"in": rng.randint(0, 5), "out": rng.randint(0, 5), "counter": "ok"}


def synthetic(n: int, seed: int = 23, days: int = 365) -> Iterator[list[dict[str, Any]]]:
    """Batches of events of ``days`` days from the year's start, in time order."""
    from zoneinfo import ZoneInfo

    from biblioedge.protocol import uuid7

    rng = random.Random(seed)
    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    days_ = [date(YEAR, 1, 1) + timedelta(days=i) for i in range(days)]
    seqs: dict[str, int] = {}
    kiosks = [(s, d) for s, ds in SITES.items() for d in ds]
    shares = [
        6 if d.startswith(("gate", "sc")) else 3 if d.startswith("exit") else 1 for _, d in kiosks
    ]
    hours = [  # every opening hour with its share: quieter Sundays, some noise
        (day, hour, w * (0.6 if day.isoweekday() == 7 else 1.0) * rng.uniform(0.8, 1.2))
        for day in days_
        for hour, w in HOURS.items()
    ]
    scale = n / sum(w for _, _, w in hours)
    out: list[dict[str, Any]] = []
    made = 0
    wanted = 0.0
    for day, hour, w in hours:
        wanted += w * scale
        count = round(wanted) - made  # rounded as it goes: exactly n in the end
        start = datetime(day.year, day.month, day.day, hour, tzinfo=zone).astimezone(UTC)
        for _k in range(count):
            site, device = rng.choices(kiosks, shares)[0]
            seq = seqs[device] = seqs.get(device, 0) + 1
            at = start + timedelta(seconds=rng.uniform(0, 3599.999))
            etype, payload = _kiosk_event(rng, site, device, at, seq)
            out.append(
                {
                    "event_id": uuid7(),
                    "device_id": device,
                    "site": site,
                    "type": etype,
                    "seq": seq,
                    "occurred_at": at,
                    "payload": payload,
                }
            )
            made += 1
            if len(out) >= BATCH:
                yield out
                out = []
    if out:
        yield out


def load(url: str, n: int, seed: int = 23) -> dict[str, Any]:
    """Store ``n`` synthetic events as central does (new ones inserted and counted in one
    transaction per batch), 3 % of the batches late, 1 % twice; the readers' age bands first."""
    from sqlalchemy import insert, select

    from biblioedge.fleet.db import devices, events, reader_bands
    from biblioedge.fleet.repo import Repo
    from biblioedge.fleet.reports import Rollups

    repo = Repo(url)
    repo.migrate()
    rollups = Rollups()
    rng = random.Random(seed + 1)
    now = datetime.now(UTC)
    with repo.engine.begin() as conn:
        conn.execute(
            insert(devices),
            [
                {
                    "device_id": d,
                    "site": s,
                    "role": _role(d),
                    "registered": True,
                    "online": True,
                    "desired_version": 0,
                }
                for s, ds in SITES.items()
                for d in ds
            ],
        )
        bands = [
            {
                "patron_id": f"BE{i:07d}",
                "band": "child" if i % 5 == 0 else "adult",
                "updated_at": now,
            }
            for i in range(1, PATRONS + 1)
        ]
        for i in range(0, len(bands), 5000):
            conn.execute(insert(reader_bands), bands[i : i + 5000])

    def store(batch: list[dict[str, Any]]) -> int:
        with repo.engine.begin() as conn:
            ids = [e["event_id"] for e in batch]
            have = set(
                conn.execute(select(events.c.event_id).where(events.c.event_id.in_(ids))).scalars()
            )
            fresh = [{**e, "received_at": now} for e in batch if e["event_id"] not in have]
            if fresh:
                conn.execute(insert(events), fresh)
                rollups.apply(conn, fresh)
            return len(fresh)

    late: list[list[dict[str, Any]]] = []
    stored = duplicates = 0
    t0 = time.perf_counter()
    for batch in synthetic(n, seed):
        if rng.random() < 0.03:
            late.append(batch)
            continue
        stored += store(batch)
        if rng.random() < 0.01:
            duplicates += len(batch) - store(batch)
    for batch in late:  # the offline kiosks come back
        stored += store(batch)
    seconds = time.perf_counter() - t0
    repo.close()
    return {
        "events": stored,
        "late_events": sum(len(b) for b in late),
        "duplicates_resent": duplicates,
        "load_s": round(seconds, 1),
    }


def _role(device: str) -> str:
    return {"gate": "gate", "sc": "selfcheck", "desk": "desk", "exit": "exitgate"}[
        device.split("-", maxsplit=1)[0]
    ]


def measure(url: str, runs: int) -> dict[str, Any]:
    from biblioedge.fleet.db import make_engine
    from biblioedge.fleet.reports import ReportQuery, Reports

    engine = make_engine(url)
    reports = Reports(engine)
    query = ReportQuery(start=date(YEAR, 1, 1), end=date(YEAR, 12, 31), by="hour")
    now = datetime(YEAR + 1, 1, 1, tzinfo=UTC)
    times = []
    kept = None
    for _ in range(runs):
        t0 = time.perf_counter()
        kept = reports.report(query, now=now)
        times.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    raw = reports.raw_report(query, now=now)
    raw_ms = (time.perf_counter() - t0) * 1000
    assert kept is not None
    p95 = statistics.quantiles(times, n=20)[18] if len(times) >= 2 else times[0]
    engine.dispose()
    return {
        "report_p50_ms": round(statistics.median(times), 1),
        "report_p95_ms": round(p95, 1),
        "raw_ms": round(raw_ms, 1),
        "speedup": round(raw_ms / p95, 1),
        "exact": kept.model_dump() == raw.model_dump(),
        "rows": len(kept.rows),
        "visits": kept.total.get("visits"),
        "loans": kept.total.get("loans"),
        "unique_readers": kept.total.get("unique_readers"),
    }


def ingest_ratio(url_of: Any, sample: int, rounds: int = 3) -> dict[str, Any]:
    """Events/s through ``Repo.ingest`` with rollups and without, fresh databases, alternated;
    the median of ``rounds`` each. With rollups, central's ``Tally`` runs beside ingest in a
    thread of the same process (as central runs it) and the clock also runs until it has
    counted everything (``counted_events_per_s``, ``count_lag_s``); the figures are then
    checked against the raw events (``ingest_exact``)."""
    import threading

    import orjson

    from biblioedge.fleet.repo import Incoming, Repo
    from biblioedge.fleet.reports import ReportQuery, Reports
    from biblioedge.fleet.reports.pending import Tally
    from biblioedge.protocol import uuid7

    msgs: list[Incoming] = []
    # as dense as the year's events (two million a year: a day is ~5,500): a live batch
    # covers minutes, not months
    days = max(1, round(365 * sample / 2_000_000))
    for batch in synthetic(sample, seed=99, days=days):
        by_device: dict[str, list[dict[str, Any]]] = {}
        for e in batch:
            by_device.setdefault(e["device_id"], []).append(
                {**e, "occurred_at": e["occurred_at"].isoformat()}
            )
        for device, evs in by_device.items():
            for i in range(0, len(evs), 100):  # an agent's batch
                body = {
                    "v": 1,
                    "batch_id": uuid7(),
                    "device_id": device,
                    "events": evs[i : i + 100],
                }
                msgs.append(Incoming(evs[0]["site"], device, "events", orjson.dumps(body)))
    rates: dict[bool, list[float]] = {True: [], False: []}
    counted: list[float] = []
    lags: list[float] = []
    exact = True
    for r in range(rounds):
        for with_rollups in (True, False) if r % 2 == 0 else (False, True):
            url, cleanup = url_of()
            repo = Repo(url)
            repo.migrate()
            stop = threading.Event()
            worker = None
            if with_rollups:
                assert repo.rollups is not None
                repo.tally = Tally(repo.engine, repo.rollups)
                worker = threading.Thread(target=repo.tally.run_blocking, args=(stop,))
                worker.start()
            else:
                repo.rollups = None
            t0 = time.perf_counter()
            for i in range(0, len(msgs), 16):  # central's coalesced runs
                repo.ingest(msgs[i : i + 16], accept_unknown=True)
            stored = time.perf_counter() - t0
            rates[with_rollups].append(sample / stored)
            if repo.tally is not None:
                while repo.tally.any_pending():
                    time.sleep(0.01)
                done = time.perf_counter() - t0
                counted.append(sample / done)
                lags.append(done - stored)
                query = ReportQuery(start=date(YEAR, 1, 1), end=date(YEAR, 1, days), by="hour")
                reports = Reports(repo.engine)
                kept, raw = reports.report(query), reports.raw_report(query)
                exact = exact and kept.model_dump(exclude={"generated_at"}) == raw.model_dump(
                    exclude={"generated_at"}
                )
            stop.set()
            if worker is not None:
                worker.join()
            repo.close()
            cleanup()
    with_, without = statistics.median(rates[True]), statistics.median(rates[False])
    return {
        "ingest_events_per_s": round(with_),
        "ingest_events_per_s_without_rollups": round(without),
        "ingest_ratio": round(with_ / without, 3),
        "counted_events_per_s": round(statistics.median(counted)),
        "counted_ratio": round(statistics.median(counted) / without, 3),
        "count_lag_s": round(statistics.median(lags), 2),
        "ingest_exact": exact,
        "ingest_sample": sample,
    }


def _fresh_sqlite(workdir: Path) -> Any:
    """A new SQLite file for each ingest run: (url, remove)."""
    counter = iter(range(1_000_000))

    def make() -> tuple[str, Any]:
        path = workdir / f"ingest-{next(counter)}.sqlite3"
        return f"sqlite:///{path}", lambda: path.unlink(missing_ok=True)

    return make


def _fresh_pg(admin_url: str) -> Any:
    """A new database on the server for each ingest run: (url, drop)."""
    from sqlalchemy import create_engine

    def make() -> tuple[str, Any]:
        name = f"bench_{os.urandom(4).hex()}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        url = admin_url.rsplit("/", 1)[0] + "/" + name

        def drop() -> None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
            admin.dispose()

        return url, drop

    return make


def bench_reports(
    events: int,
    databases: tuple[str, ...] = ("sqlite", "postgresql"),
    postgres_url: str | None = None,
    runs: int = 20,
    sample: int = 20_000,
    work: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    workdir = work or Path(tempfile.mkdtemp(prefix="bench-reports-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"events": events, "query": "year by site x day x hour"}

    def say(text: str) -> None:
        if progress:
            sys.stderr.write(text + "\n")

    try:
        for db in databases:
            with contextlib.ExitStack() as stack:
                if db == "sqlite":
                    url = f"sqlite:///{workdir / 'reports.sqlite3'}"
                    url_of = _fresh_sqlite(workdir)
                else:
                    from biblioedge.procs import postgres_cluster

                    admin = postgres_url or stack.enter_context(postgres_cluster(workdir / "pg"))
                    url_of = _fresh_pg(admin)
                    url, drop = url_of()
                    stack.callback(drop)
                say(f"{db}: loading {events} events")
                figures = load(url, events)
                say(f"{db}: {figures}; reports")
                figures |= measure(url, runs)
                say(f"{db}: ingest sample")
                figures |= ingest_ratio(url_of, sample)
                result[db] = figures
    finally:
        if work is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return result

"""Reports (issue 23): figures kept at ingest are exact, honest about late data, private, and
served at ``/api/v1/reports`` — on SQLite and PostgreSQL, through the real ingest path."""

from __future__ import annotations

import os
import random
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Tokens
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.db import (
    events,
    report_hours,
    report_last_grants,
    report_reader_years,
    report_readers,
)
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.registrations import REGISTRATION, Registrar
from biblioedge.fleet.repo import Incoming, Repo
from biblioedge.fleet.reports import Report, ReportQuery, Reports, ReportsConfig, Rollups
from biblioedge.fleet.reports.rollup import fill_last_grants
from biblioedge.protocol import uuid7

#: 2026-03-02 is a Monday; 09:00 in Hà Nội is 02:00 UTC
MONDAY = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


class Kiosk:
    """One kiosk's events, sent as the agent sends them: batches on its events topic."""

    def __init__(self, repo: Repo, site: str, device: str) -> None:
        self.repo, self.site, self.device, self.seq = repo, site, device, 0

    def event(self, at: datetime, etype: str, **payload: Any) -> dict[str, Any]:
        self.seq += 1
        return {
            "event_id": uuid7(),
            "device_id": self.device,
            "site": self.site,
            "type": etype,
            "seq": self.seq,
            "occurred_at": at.isoformat(),
            "payload": payload,
        }

    def send(self, *events: dict[str, Any]) -> None:
        body = {"v": 1, "batch_id": uuid7(), "device_id": self.device, "events": list(events)}
        msg = Incoming(self.site, self.device, "events", orjson.dumps(body))
        result = self.repo.ingest([msg], accept_unknown=True)
        assert not result.quarantined, result.quarantined


def grant(k: Kiosk, at: datetime, patron: str) -> dict[str, Any]:
    return k.event(at, "gate.decision", decision="grant", method="face", patron_id=patron)


def day_query(**over: Any) -> ReportQuery:
    return ReportQuery(start=date(2026, 3, 1), end=date(2026, 3, 31), **over)


def same(reports: Reports, query: ReportQuery) -> Report:
    """The report from the rollups, checked equal to the one computed from the raw events."""
    kept, raw = reports.report(query), reports.raw_report(query)
    assert kept.model_dump(exclude={"generated_at"}) == raw.model_dump(exclude={"generated_at"})
    return kept


def test_a_repeat_within_the_passback_window_is_one_visit_even_when_it_arrives_first(
    repo: Repo,
) -> None:
    reports = Reports(repo.engine)
    east, west = Kiosk(repo, "tv-tinh", "gate-01"), Kiosk(repo, "tv-tinh", "gate-02")
    later = grant(west, MONDAY + timedelta(minutes=3), "BE0000001")
    west.send(later)  # gate-02 was online: its grant arrives first and counts
    assert reports.report(day_query(by="total")).total["visits"] == 1
    # gate-01 was offline: its earlier grant of the same reader arrives late
    east.send(grant(east, MONDAY, "BE0000001"))
    east.send(grant(east, MONDAY + timedelta(minutes=20), "BE0000001"))  # a second visit
    east.send(grant(east, MONDAY + timedelta(minutes=1), "BE0000002"))
    report = same(reports, day_query(by="hour", per_kiosk=True))
    assert report.total["visits"] == 3
    assert report.total["unique_readers"] == 2
    by_kiosk = {(r.period, r.device_id): r.figures["gate_visits"] for r in report.rows}
    assert by_kiosk == {("2026-03-02T09", "gate-01"): 3}  # gate-02's grant was a repeat


def test_late_and_duplicate_events_keep_every_figure_exact(repo: Repo) -> None:
    rng = random.Random(23)
    gates = [Kiosk(repo, "tv-tinh", "gate-01"), Kiosk(repo, "tv-huyen", "gate-11")]
    check = [Kiosk(repo, "tv-tinh", "sc-01"), Kiosk(repo, "tv-huyen", "sc-11")]
    exit_ = Kiosk(repo, "tv-xa", "exit-21")  # a commune library without an entry gate
    made: list[tuple[Kiosk, dict[str, Any]]] = []
    for _ in range(1500):
        at = MONDAY + timedelta(seconds=rng.randint(0, 86400 * 40))
        roll = rng.random()
        if roll < 0.45:
            k = rng.choice(gates)
            if rng.random() < 0.9:
                made.append((k, grant(k, at, f"BE{rng.randint(1, 30):07d}")))
            else:
                reason = rng.choice(["blocked", "expired", "unknown_face", "Bad Reason!"])
                made.append((k, k.event(at, "gate.decision", decision="deny", reason=reason)))
        elif roll < 0.8:
            k = rng.choice(check)
            etype = rng.choice(["circ.checkout", "circ.checkin", "circ.renew"])
            result = "ok" if rng.random() < 0.9 else "hold"
            offline = rng.random() < 0.1
            made.append((k, k.event(at, etype, result=result, offline=offline, item_id="3001")))
        else:
            counts = {"minute": "x", "in": rng.randint(0, 5), "out": 1, "counter": "ok"}
            made.append((exit_, exit_.event(at, "exit.passages", **counts)))
    rng.shuffle(made)  # offline kiosks: events arrive in any order, days late
    sent: list[tuple[Kiosk, list[dict[str, Any]]]] = []
    for i in range(0, len(made), 40):
        chunk = made[i : i + 40]
        for kiosk in {id(k): k for k, _ in chunk}.values():
            events = [e for k, e in chunk if k is kiosk]
            kiosk.send(*events)
            sent.append((kiosk, events))
    for kiosk, events in sent[:15]:  # lost acks: the same batches again
        kiosk.send(*events)
    reports = Reports(repo.engine)
    for by in ("hour", "day", "weekday", "month", "quarter", "year", "total"):
        same(reports, ReportQuery(start=date(2026, 3, 1), end=date(2026, 4, 30), by=by))
    report = same(reports, ReportQuery(start=date(2026, 3, 1), end=date(2026, 4, 30), by="total"))
    rows = {r.site: r.figures for r in report.rows}
    assert rows["tv-xa"]["visits"] == rows["tv-xa"]["exit_in"] > 0  # visits counted at the exit
    assert rows["tv-tinh"]["visits"] == rows["tv-tinh"]["gate_visits"] > 0
    assert rows["tv-tinh"]["refusals"] == sum(
        v or 0 for k, v in rows["tv-tinh"].items() if k.startswith("refusals.")
    )
    assert "refusals.Bad Reason!" not in rows["tv-tinh"]  # a kiosk's text never becomes a key
    # the migration's backfill of events stored before the rollups counts the same
    with repo.engine.begin() as conn:
        for table in (report_hours, report_readers, report_reader_years):
            conn.execute(table.delete())
        Rollups().backfill(conn)
    assert reports.report(day_query(by="hour")).model_dump(exclude={"generated_at"}) == (
        reports.raw_report(day_query(by="hour")).model_dump(exclude={"generated_at"})
    )


def test_grants_in_order_late_and_stored_before_the_kept_last_grants_count_the_same(
    repo: Repo,
) -> None:
    """Visits by each reader's kept latest grant (in order), by the window around a late one,
    and after the migration that fills the kept grants from the events already stored."""
    reports = Reports(repo.engine)
    gate, other = Kiosk(repo, "tv-tinh", "gate-01"), Kiosk(repo, "tv-tinh", "gate-02")
    # in order, one run: a chain of repeats each within 5 minutes of the one before is one visit
    gate.send(*[grant(gate, MONDAY + timedelta(minutes=4 * i), "BE0000001") for i in range(5)])
    gate.send(grant(gate, MONDAY + timedelta(minutes=40), "BE0000001"))  # a new visit
    assert same(reports, day_query(by="total")).total["visits"] == 2
    # the kept grants are rebuilt from the events, as migration 0014 does on a stored database
    with repo.engine.begin() as conn:
        conn.execute(report_last_grants.delete())
        fill_last_grants(conn)
    gate.send(grant(gate, MONDAY + timedelta(minutes=42), "BE0000001"))  # a repeat of 40
    # late: a grant between two counted visits joins them (the one at 40 becomes a repeat)
    other.send(grant(other, MONDAY + timedelta(minutes=18), "BE0000001"))
    other.send(grant(other, MONDAY + timedelta(minutes=22), "BE0000001"))
    other.send(grant(other, MONDAY + timedelta(minutes=26), "BE0000001"))
    report = same(reports, day_query(by="hour", per_kiosk=True))
    assert report.total["visits"] == 2  # 0..16 and 18..26 one visit; 36 would be; 40 is not
    gate.send(grant(gate, MONDAY + timedelta(minutes=30), "BE0000001"))
    gate.send(grant(gate, MONDAY + timedelta(minutes=34), "BE0000001"))
    gate.send(grant(gate, MONDAY + timedelta(minutes=38), "BE0000001"))
    assert same(reports, day_query(by="hour", per_kiosk=True)).total["visits"] == 1


@pytest.mark.parametrize("passback_s", [300.0, 0.0])
def test_grants_at_the_same_time_from_several_gates_count_once_at_the_first(
    repo: Repo, passback_s: float
) -> None:
    """Grants stamped with one time (an outbox's burst), in runs in any order of their ids: the
    visit goes to the first by id whichever arrives first (kept grants or rebuilt ones)."""
    config = ReportsConfig(passback_s=passback_s)
    repo.rollups = Rollups(config)
    reports = Reports(repo.engine, config)
    gates = [Kiosk(repo, "tv-tinh", f"gate-0{i}") for i in range(1, 4)]
    rng = random.Random(7)
    for step, minutes in enumerate([0, 0, 0, 2, 2, 30, 30, 30]):
        at = MONDAY + timedelta(minutes=minutes)
        made = [grant(k, at, f"BE000000{p}") for p in range(1, 4) for k in rng.sample(gates, 2)]
        rng.shuffle(made)
        for k in gates:
            mine = [e for e in made if e["device_id"] == k.device]
            if mine:
                k.send(*mine)
        if step == 4:  # the kept grants rebuilt from the events, as migration 0014 does
            with repo.engine.begin() as conn:
                conn.execute(report_last_grants.delete())
                fill_last_grants(conn, passback_s)
        report = same(reports, day_query(by="hour", per_kiosk=True))
    assert report.total["visits"] == (3 * 2 * 8 if passback_s == 0 else 3 * 2)


def test_two_transactions_counting_one_readers_first_grants_wait_for_each_other(
    repo: Repo,
) -> None:
    """Two central processes storing the same reader's first grants at once (PostgreSQL):
    the second waits for the first's kept grant, so the repeat is not a second visit."""
    if repo.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: nothing runs at once")
    first, second = Kiosk(repo, "tv-tinh", "gate-01"), Kiosk(repo, "tv-tinh", "gate-02")
    early = grant(first, MONDAY, "BE0000009")
    row = {
        "event_id": early["event_id"],
        "device_id": "gate-01",
        "site": "tv-tinh",
        "type": "gate.decision",
        "seq": early["seq"],
        "occurred_at": MONDAY,
        "received_at": MONDAY,
        "payload": early["payload"],
    }
    rollups = Rollups()
    with repo.engine.connect() as conn, conn.begin():
        conn.execute(events.insert().values(**row))
        rollups.apply(conn, [row])  # holds the reader's kept grant until it commits
        done = threading.Event()
        thread = threading.Thread(
            target=lambda: (
                second.send(grant(second, MONDAY + timedelta(minutes=2), "BE0000009")),
                done.set(),
            )
        )
        thread.start()
        with repo.engine.connect() as watch:  # the other transaction is waiting on our lock
            waiting = text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
            while not watch.execute(waiting).scalar() and not done.is_set():
                done.wait(0.05)
    thread.join()
    assert same(Reports(repo.engine), day_query(by="total")).total["visits"] == 1


def test_a_report_says_up_to_when_each_kiosk_has_reported_and_what_may_still_grow(
    repo: Repo,
) -> None:
    reports = Reports(repo.engine)
    online, offline = Kiosk(repo, "tv-tinh", "gate-01"), Kiosk(repo, "tv-tinh", "sc-01")
    online.send(grant(online, MONDAY + timedelta(days=5), "BE0000001"))
    offline.send(offline.event(MONDAY, "circ.checkout", result="ok", item_id="1"))
    query = ReportQuery(start=date(2026, 3, 2), end=date(2026, 3, 7), by="day")
    report = reports.report(query, now=MONDAY + timedelta(days=30))
    done = {k.device_id: k.complete_up_to for k in report.complete}
    assert done == {"gate-01": MONDAY + timedelta(days=5), "sc-01": MONDAY}
    assert report.may_still_grow
    grows = {r.period: r.may_still_grow for r in report.rows}
    assert grows == {"2026-03-02": True, "2026-03-07": True}  # sc-01 is behind both days
    # the self-check comes back and sends its backlog: a late loan lands on its own day
    offline.send(offline.event(MONDAY + timedelta(days=1), "circ.checkout", result="ok"))
    offline.send(offline.event(MONDAY + timedelta(days=6), "circ.checkin", result="ok"))
    report = same(reports, query)
    loans = {r.period: r.figures["loans"] for r in report.rows}
    assert loans == {"2026-03-02": 1, "2026-03-03": 1, "2026-03-07": 0}
    grows = {r.period: r.may_still_grow for r in report.rows}
    # every kiosk has reported past the 2nd and 3rd; gate-01 was last heard at 09:00 on the 7th
    assert grows == {"2026-03-02": False, "2026-03-03": False, "2026-03-07": True}


def test_breakdowns_by_age_band_hide_small_cells(repo: Repo) -> None:
    reports = Reports(repo.engine, ReportsConfig(min_cell=3))
    desk, gate = Kiosk(repo, "tv-tinh", "desk-01"), Kiosk(repo, "tv-tinh", "gate-01")
    at = MONDAY - timedelta(days=1)
    desk.send(
        *[
            desk.event(at, "reader.registered", patron_id=f"BE{i:07d}", birth_year=by)
            for i, by in enumerate([1980, 1985, 1990, 1975, 2016], start=1)
        ]
    )
    gate.send(*[grant(gate, MONDAY + timedelta(hours=i), f"BE{i:07d}") for i in range(1, 6)])
    report = same(reports, day_query(by="day"))
    visits = {r.period: r.figures for r in report.rows}["2026-03-02"]
    assert visits["visits"] == 5
    # one child among four adults: the child could be recognised, so the band cells go
    assert visits["visits.child"] is None and visits["visits.adult"] is None
    registered = {r.period: r.figures for r in report.rows}["2026-03-01"]
    assert registered["cards_new"] == 5 and registered["cards_new.child"] is None
    loose = Reports(repo.engine, ReportsConfig(min_cell=1)).report(day_query(by="day"))
    figures = {r.period: r.figures for r in loose.rows}["2026-03-02"]
    assert (figures["visits.adult"], figures["visits.child"]) == (4, 1)


def test_the_same_period_a_year_earlier_stands_beside(repo: Repo) -> None:
    gate = Kiosk(repo, "tv-tinh", "gate-01")
    gate.send(*[grant(gate, MONDAY - timedelta(days=364, hours=i), f"P{i}") for i in range(4)])
    gate.send(*[grant(gate, MONDAY + timedelta(hours=i), f"P{i}") for i in range(5)])
    report = same(Reports(repo.engine), day_query(by="month"))
    assert report.total["visits"] == 5
    assert report.previous_year is not None and report.previous_year["visits"] == 4
    assert report.change_pct["visits"] == 25.0
    assert [r.period for r in report.previous_rows] == ["2025-03"]


def test_an_erasure_at_central_is_counted_and_names_nobody(repo: Repo) -> None:
    readers = Readers(repo, os.urandom(32))
    readers.upsert("BE0000007", site="tv-tinh", display_name="Nguyễn Văn An")
    readers.erase("BE0000007")
    today = datetime.now(UTC).date()
    days = {"start": today - timedelta(days=1), "end": today + timedelta(days=1)}
    report = same(Reports(repo.engine), ReportQuery(**days, by="total"))
    assert report.total["erasures"] == 1
    assert "BE0000007" not in report.model_dump_json()
    assert repo.stats()["events"] == 0  # central's own figures are not what the kiosks sent


def test_desk_registrations_count_new_and_replaced_cards_by_an_age_band_kept_for_reports(
    repo: Repo,
) -> None:
    readers = Readers(repo, os.urandom(32))
    repo.effects[REGISTRATION] = Registrar(readers, Cards(readers, os.urandom(32)))
    desk = Kiosk(repo, "tv-tinh", "desk-01")
    ten = (datetime.now(UTC) - timedelta(days=3660)).strftime("%d/%m/%Y")

    def registered(ref: str, born: str) -> dict[str, Any]:
        return desk.event(
            datetime.now(UTC),
            REGISTRATION,
            registration_id=uuid7(),
            citizen_ref=ref * 64,
            display_name="Nguyễn Thị Bình",
            profile={"date_of_birth": born, "gender": "Nữ"},
            consent={
                "purpose": "face_gate",
                "granted": False,
                "text_version": "v1",
                "librarian": "lan",
            },
            check={"method": "chip_face", "passive_auth": "ok", "face_score": 0.97},
            **({"guardian": guardian} if born == ten else {}),  # a child: her guardian consented
        )

    guardian = {
        "citizen_ref": "c" * 64,
        "relationship": "parent",
        "passive_auth": "ok",
        "consent": True,
        "child_consent": True,
        "child_age": 10,
        "majority_age": 16,
    }
    desk.send(registered("a", ten), registered("b", "1990-05-17"))
    desk.send(registered("a", ten))  # the child's card lost: a returning reader, a new card
    today = datetime.now(UTC).date()
    days = {"start": today - timedelta(days=1), "end": today + timedelta(days=1)}
    reports = Reports(repo.engine, ReportsConfig(min_cell=1))
    report = reports.report(ReportQuery(**days, by="total"))
    assert reports.raw_report(ReportQuery(**days, by="total")).total == report.total
    got = {k: report.total[k] for k in ("cards_new", "cards_replaced", "cards_new.child")}
    assert got == {"cards_new": 2, "cards_replaced": 1, "cards_new.child": 1}
    assert report.total["cards_new.adult"] == 1
    stored = repo.list_events(type_=REGISTRATION)[0][0]["payload"]
    assert stored["age_band"] in ("child", "adult") and ten not in orjson.dumps(stored).decode()


@pytest.fixture
def api(tmp_path: Path, repo: Repo) -> TestClient:
    client = TestClient(create_app(CentralConfig(data_dir=tmp_path), repo, None, CentralMetrics()))
    client.headers["Authorization"] = f"Bearer {Tokens(repo.engine).create('v', 'viewer')[1]}"
    return client


def test_the_api_serves_reports_to_viewers_without_naming_readers(
    api: TestClient, repo: Repo
) -> None:
    gate = Kiosk(repo, "tv-tinh", "gate-01")
    gate.send(grant(gate, MONDAY, "BE0000042"))
    got = api.get("/api/v1/reports/figures", params={"from": "2026-03-01", "to": "2026-03-31"})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["rows"][0]["figures"]["visits"] == 1
    assert body["labels"]["visits"] == "Lượt bạn đọc đến thư viện"
    assert "BE0000042" not in got.text
    params = {"from": "2026-03-01", "to": "2026-03-31", "lang": "en", "format": "csv"}
    csv = api.get("/api/v1/reports/figures", params=params)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[1].startswith("2026-03-02,tv-tinh,,")
    assert "/api/v1/reports/figures" in api.get("/openapi.json").json()["paths"]
    assert api.get("/api/v1/reports/metrics", params={"lang": "en"}).json()["loans"] == "Loans"


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"from": "2026-03-31", "to": "2026-03-01"}, "from", "reversed"),
        ({"from": "1066-10-14", "to": "2026-03-01"}, "from", "outside the years"),
        ({"from": "2010-01-01", "to": "2026-03-01"}, "to", "10 years"),
        ({"from": "2026-03-01", "to": "2026-03-02", "site": "atlantis"}, "site", "no site"),
        ({"from": "2026-03-01", "to": "2026-03-02", "site": "A B\x00"}, "site", "no site"),
        ({"from": "2026-03-01", "to": "2026-03-02", "lang": "fr"}, "lang", "'vi' or 'en'"),
        ({"from": "2026-03-01", "to": "2026-03-02", "format": "pdf"}, "format", "'json'"),
        ({"from": "2026-03-01", "to": "2026-03-02", "by": "fortnight"}, "by", "'hour'"),
        ({"from": "2026-02-30", "to": "2026-03-02"}, "from", "date"),
        ({"from": "2026-03-01", "to": "2026-03-02", "sites": "x"}, "sites", "no such"),
    ],
)
def test_questions_no_report_answers_are_422_with_the_reason(
    api: TestClient, repo: Repo, params: dict[str, str], field: str, says: str
) -> None:
    Kiosk(repo, "tv-tinh", "gate-01").send()
    got = api.get("/api/v1/reports/figures", params=params)
    assert got.status_code == 422, got.text
    [problem] = got.json()["detail"]
    assert problem["loc"][-1] == field
    assert says in problem["msg"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("counted", [True, False])
def test_the_migration_to_wide_hours_moves_the_kept_figures_or_counts_the_events(
    tmp_path: Path, backend: str, counted: bool, request: pytest.FixtureRequest
) -> None:
    """A central from before migration 0023 kept a row per figure (``report_rollups``): its
    figures are moved as they are (a figure that only the old table had shows), and a central
    whose events were never counted is counted from them."""
    from alembic import command
    from alembic.config import Config

    from biblioedge.fleet import migrations

    url = (
        f"sqlite:///{tmp_path / 'old.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    repo = Repo(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    with repo.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0020")
    repo.rollups = None  # the events only: that central's rollups are written below
    try:
        gate, sc = Kiosk(repo, "tv-tinh", "gate-01"), Kiosk(repo, "tv-tinh", "sc-01")
        gate.send(*[grant(gate, MONDAY + timedelta(minutes=m), "BE0000001") for m in (0, 2, 30)])
        gate.send(gate.event(MONDAY, "gate.decision", decision="deny", reason="blocked"))
        sc.send(sc.event(MONDAY, "circ.checkout", item_id="30001", patron_id="BE0000002"))
        extra = 1000  # a figure only the old table holds
        if counted:
            with repo.engine.begin() as conn:
                cells, readers = Rollups().raw_cells(conn)
                cells[("tv-tinh", "sc-01", int(MONDAY.timestamp()) // 3600, "loans")] += extra
                conn.execute(
                    text(
                        "INSERT INTO report_rollups (site, device_id, hour, metric, value) "
                        "VALUES (:s, :d, :h, :m, :v)"
                    ),
                    [{"s": s, "d": d, "h": h, "m": m, "v": v} for (s, d, h, m), v in cells.items()],
                )
                conn.execute(
                    text("INSERT INTO report_readers (site, day, patron_id) VALUES (:s, :d, :p)"),
                    [{"s": s, "d": d, "p": p} for s, d, p in readers],
                )
        repo.migrate()
        reports = Reports(repo.engine)
        query = day_query(by="day")
        kept, raw = reports.report(query), reports.raw_report(query)
        assert raw.total["visits"] == 2 and raw.total["refusals"] == 1
        assert raw.total["unique_readers"] == 1 and raw.total["loans"] == 1
        if counted:
            raw.total["loans"] = 1 + extra
            monday = next(r for r in raw.rows if r.period == "2026-03-02")
            monday.figures["loans"] = 1 + extra
        assert kept.model_dump(exclude={"generated_at"}) == raw.model_dump(exclude={"generated_at"})
    finally:
        if backend == "postgresql":
            with repo.engine.begin() as conn:
                conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        repo.close()

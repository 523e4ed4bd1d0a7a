"""Report figures kept at ingest, in the transaction that stores the events they count.

The repository calls ``Rollups.apply`` with the events a transaction newly stored (never a
duplicate: those are in the table already, and insert-or-ignore stores nothing), so the
figures are exactly-once because the events are. A late event is counted in the hour it
happened, whenever it arrives.

Visits are the one figure that is not a plain sum: a reader granted again at the same site
within the passback window is the same visit. An event counts as a visit when no grant of the
same reader at the same site happened in the window before it (ordered by time, then event
id), so whether it counts depends only on earlier grants: a late grant can only make grants
in the window after it stop counting, and ``apply`` subtracts those from the hours they were
counted in. ``raw_cells`` computes the same figures from the events table alone (the
baseline of ``biblioedge bench reports`` and the migration's backfill); the two must agree.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Connection, Select, and_, bindparam, insert, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import ColumnClause

from biblioedge.fleet.db import (
    HOUR_FIGURES,
    UTCDateTime,
    events,
    reader_bands,
    report_pending,
)
from biblioedge.fleet.reports.model import BANDS
from biblioedge.fleet.reports.settings import ReportsConfig
from biblioedge.protocol import uuid7

#: (site, device, UTC hour, metric)
Cell = tuple[str, str, int, str]
#: (site, local day, patron)
ReaderDay = tuple[str, int, str]
#: What central itself does (a card renewed or replaced at the API, a reader erased, a
#: pre-registration completed) is an event of its own, ``central.figure``, under this kiosk
#: name: stored and counted like a kiosk's, so the raw computation sees it too.
CENTRAL = "central"
CENTRAL_FIGURE = "central.figure"
CENTRAL_FIGURES = frozenset({"cards_renewed", "cards_replaced", "erasures", "preregistrations"})
EPOCH = date(1970, 1, 1)
_SLUG = re.compile(r"^[a-z0-9_]{1,32}$")
GRANT = "gate.decision"


def hour_of(at: datetime) -> int:
    return int(at.timestamp()) // 3600


def slug(value: Any) -> str:
    """A reason as a metric key: a short lowercase slug, else ``other`` (a kiosk's free text
    never becomes a key)."""
    text = str(value).lower() if isinstance(value, str) else ""
    return text if _SLUG.match(text) else "other"


def _count(value: Any, most: int = 100_000) -> int:
    return (
        value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most
        else 0
    )


def contributions(etype: str, payload: dict[str, Any]) -> list[tuple[str, int]]:
    """The plain (summable) figures one event adds. Gate grants are visits, counted apart."""
    p = payload
    ok = p.get("result", "ok") == "ok"
    match etype:
        case "gate.decision":
            if p.get("decision") == "grant":
                return []
            return [("refusals", 1), (f"refusals.{slug(p.get('reason'))}", 1)]
        case "exit.passages":
            return [("exit_in", _count(p.get("in"))), ("exit_out", _count(p.get("out")))]
        case "exit.alarm":
            return [("exit_alarms", 1)] if "items" in p else []
        case "circ.checkout":
            if not ok:
                return _refused(p)
            return [("loans", 1)] + ([("offline_loans", 1)] if p.get("offline") is True else [])
        case "circ.checkin":
            return [("returns", 1)] if ok else _refused(p)
        case "circ.renew":
            return [("renewals", 1)] if ok else _refused(p)
        case "circ.reconciled":
            return [
                ("offline_settled", _count(p.get("done"))),
                ("offline_refused", _count(p.get("refused"))),
            ]
        case "desk.registration":
            return [("cards_replaced" if p.get("returning") is True else "cards_new", 1)]
        case "reader.registered":
            return [("cards_new", 1)]
        case "central.figure":
            metric = p.get("metric")
            return [(metric, 1)] if metric in CENTRAL_FIGURES else []
    return []


def _refused(payload: dict[str, Any]) -> list[tuple[str, int]]:
    return [("items_refused", 1), (f"items_refused.{slug(payload.get('result'))}", 1)]


def band_of(birth: date | None, at: date, child_under: int) -> str:
    """``child`` under ``child_under`` years on ``at``, ``adult`` from then, else unknown."""
    if birth is None:
        return "unknown"
    age = at.year - birth.year - ((at.month, at.day) < (birth.month, birth.day))
    return "child" if age < child_under else "adult"


def registration_band(
    etype: str, payload: dict[str, Any], at: datetime, child_under: int
) -> str | None:
    """The age band a registration event records, if it is one."""
    if etype == "desk.registration":
        band = payload.get("age_band", "unknown")
        return band if band in BANDS else "unknown"
    if etype == "reader.registered":
        year = payload.get("birth_year")
        if isinstance(year, int) and not isinstance(year, bool) and 1900 <= year <= at.year:
            return band_of(date(year, 1, 1), at.date(), child_under)
        return "unknown"
    return None


def _patron(payload: dict[str, Any]) -> str | None:
    pid = payload.get("patron_id")
    return pid if isinstance(pid, str) and 0 < len(pid) <= 64 else None


@dataclass(frozen=True)
class Grant:
    event_id: str
    site: str
    device_id: str
    at: datetime
    patron_id: str | None

    @property
    def key(self) -> tuple[datetime, str]:
        return (self.at, self.event_id)


def counted(grants: list[Grant], window: float) -> Iterator[tuple[Grant, bool]]:
    """Each grant of one reader at one site (sorted by ``key``) and whether it is a visit."""
    previous: datetime | None = None
    for g in grants:
        yield g, previous is None or (g.at - previous).total_seconds() >= window
        previous = g.at


@dataclass
class Tail:
    """A reader's latest grants at a site: those at the latest time ``at`` (``last_id`` the
    greatest event id among them), the first of them by event id, and whether it is a visit
    (the others at that time repeat it). Kept in ``report_last_grants``."""

    at: datetime
    last_id: str
    first_id: str
    first_device: str
    first_counted: bool

    def row(self, site: str, patron: str) -> tuple[str, str, int, str, str, str, bool]:
        """Its ``report_last_grants`` row, as the driver takes it (``_KEEP``)."""
        return (
            site,
            patron,
            _us(self.at),
            self.last_id,
            self.first_id,
            self.first_device,
            self.first_counted,
        )


def _us(at: datetime) -> int:
    """Microseconds since 1970 (UTC), exactly (an aware time: whole seconds, then its own
    microseconds)."""
    return int(at.timestamp()) * 1_000_000 + at.microsecond


def _from_us(us: int) -> datetime:
    return _EPOCH_UTC + timedelta(microseconds=us)


_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_by_key = attrgetter("at", "event_id")


class Rollups:
    """Keeps ``report_hours``, ``report_readers``, ``report_reader_years`` and ``reader_bands``
    as events arrive."""

    def __init__(self, settings: ReportsConfig | None = None) -> None:
        self.settings = settings or ReportsConfig()
        self.zone = ZoneInfo(self.settings.timezone)
        self.window = self.settings.passback_s
        self._days: dict[int, int] = {}

    def local_day(self, at: datetime) -> int:
        """The library's local day of ``at`` (days since 1970-01-01): by its UTC hour, since
        the zone is a whole number of hours from UTC (remembered: ingest asks per grant)."""
        hour = hour_of(at)
        day = self._days.get(hour)
        if day is None:
            if len(self._days) > 100_000:
                self._days.clear()
            day = self._days[hour] = (at.astimezone(self.zone).date() - EPOCH).days
        return day

    # -- at ingest ------------------------------------------------------------------------

    def apply(self, conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
        """Count events this transaction has just stored (``events`` rows as dicts). Called
        after they are inserted: the visits look them up beside the earlier ones."""
        cells: Counter[Cell] = Counter()
        readers: set[ReaderDay] = set()
        bands: dict[str, str] = {}
        grants: list[Grant] = []
        seen: set[str] = set()
        for r in rows:
            if r["event_id"] in seen:
                continue
            seen.add(r["event_id"])
            etype, payload, at = r["type"], r["payload"], r["occurred_at"]
            if not isinstance(payload, dict):
                continue
            site, device = r["site"], r["device_id"]
            if etype == GRANT and payload.get("decision") == "grant":
                patron = _patron(payload)
                # the reader's day is recorded by _visits, when it is a new one for them
                grants.append(Grant(r["event_id"], site, device, at, patron))
                continue
            hour = hour_of(at)
            for metric, n in contributions(etype, payload):
                if n:
                    cells[(site, device, hour, metric)] += n
            band = registration_band(etype, payload, at, self.settings.child_under)
            patron = _patron(payload)
            if band is not None and patron is not None:
                bands[patron] = band
                if etype == "reader.registered" or payload.get("returning") is not True:
                    cells[(site, device, hour, f"cards_new.{band}")] += 1
        if bands:
            self._store_bands(conn, bands)
        if grants:
            self._visits(conn, grants, cells, readers)
        self.write(conn, cells, readers)

    def _visits(
        self, conn: Connection, new: list[Grant], cells: Counter[Cell], readers: set[ReaderDay]
    ) -> None:
        """Count the new grants that are visits, and uncount the later ones they repeat.

        Each reader's latest grants per site are kept (``report_last_grants``, a ``Tail``):
        new grants at or after their time (the common case: a kiosk's outbox sends in order)
        are counted from it alone, one key look-up per reader and run. A reader with a grant
        before that time (a late event) is recounted from the grants around it."""
        by_reader: dict[tuple[str, str], list[Grant]] = {}
        for g in new:
            if g.patron_id is None:  # nobody to repeat: always a visit
                cells[(g.site, g.device_id, hour_of(g.at), "gate_visits")] += 1
                cells[(g.site, g.device_id, hour_of(g.at), "visits.unknown")] += 1
            else:
                by_reader.setdefault((g.site, g.patron_id), []).append(g)
        if not by_reader:
            return
        keys = sorted(by_reader)  # one lock order for concurrent transactions
        tails, bands = self._claim(conn, keys)
        late: dict[str, list[Grant]] = {}
        kept: list[tuple[str, str, int, str, str, str, bool]] = []
        repeat = int(self.window <= 0)  # what a grant at the same time as another counts
        window = timedelta(seconds=self.window)
        visits: Counter[tuple[str, str, int, str]] = Counter()  # (site, kiosk, hour, band)
        local_day = self.local_day
        for key in keys:
            grants = by_reader[key]
            if len(grants) > 1:
                grants.sort(key=_by_key)
            tail = tails.get(key)
            site = key[0]
            if tail is not None and grants[0].at < tail.at:
                late.setdefault(site, []).extend(grants)
                readers.update((site, local_day(g.at), key[1]) for g in grants)
                continue
            band = f"visits.{bands.get(key[1], 'unknown')}"
            day = None if tail is None else local_day(tail.at)
            for g in grants:
                hour = hour_of(g.at)
                if local_day(g.at) != day:  # the kept grant's day is recorded already
                    day = local_day(g.at)
                    readers.add((site, day, key[1]))
                if tail is None or g.at > tail.at:
                    visit = tail is None or g.at - tail.at >= window
                    tail = Tail(g.at, g.event_id, g.event_id, g.device_id, visit)
                    delta = int(visit)
                elif g.event_id > tail.first_id:  # same time as the first: a repeat
                    tail.last_id = max(tail.last_id, g.event_id)
                    delta = repeat
                else:  # same time, ordered before the first: it takes the first's place
                    visits[(site, tail.first_device, hour, band)] += repeat - tail.first_counted
                    tail.first_id, tail.first_device = g.event_id, g.device_id
                    delta = int(tail.first_counted)
                if delta:
                    visits[(site, g.device_id, hour, band)] += delta
            assert tail is not None
            kept.append(tail.row(*key))
        for (site, device, hour, band), n in visits.items():
            cells[(site, device, hour, "gate_visits")] += n
            cells[(site, device, hour, band)] += n
        for site, grants in late.items():
            for patron, statuses in self._recount(conn, site, grants, cells).items():
                tail = tails[(site, patron)]
                newest = max(g.at for g, _ in statuses)
                if newest < tail.at:  # the kept ones are beyond every new grant's window
                    continue
                group = [(g, visit) for g, visit in statuses if g.at == newest]
                first, visit = min(group, key=lambda gv: gv[0].key)
                last_id = max(g.event_id for g, _ in group)
                kept.append(
                    Tail(newest, last_id, first.event_id, first.device_id, visit).row(site, patron)
                )
        if kept:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.executemany(_KEEP[conn.dialect.name], kept)
            finally:
                cursor.close()

    @staticmethod
    def _claim(
        conn: Connection, keys: list[tuple[str, str]]
    ) -> tuple[dict[tuple[str, str], Tail], dict[str, str]]:
        """The kept latest grants of each (site, reader), locked until the transaction ends,
        and the readers' age bands (as ``reader_bands`` has them now), in one statement per
        site on the driver's cursor (a run of bench sync names 1,500 readers). On PostgreSQL
        a missing row is first made (empty), so that two transactions counting the same
        reader's first grants wait for each other; SQLite's writer already holds the whole
        database."""
        pg = conn.dialect.name == "postgresql"
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        last: dict[tuple[str, str], Tail] = {}
        bands: dict[str, str] = {}
        by_site: dict[str, list[str]] = {}
        for s, p in keys:
            by_site.setdefault(s, []).append(p)
        try:
            if pg:
                cursor.executemany(_CLAIM_PG, keys)
            for site, patrons in by_site.items():
                if pg:
                    cursor.execute(_TAILS_PG, (patrons, site))
                else:
                    cursor.execute(_TAILS_SQLITE, (site, orjson.dumps(patrons).decode()))
                for (
                    patron,
                    at_us,
                    last_id,
                    first_id,
                    first_device,
                    counted,
                    band,
                ) in cursor.fetchall():
                    if band is not None:
                        bands[patron] = band
                    if at_us is not None:  # else none yet (made just now on PostgreSQL)
                        last[(site, patron)] = Tail(
                            _from_us(at_us), last_id, first_id, first_device, bool(counted)
                        )
        finally:
            cursor.close()
        return last, bands

    def _recount(
        self, conn: Connection, site: str, grants: list[Grant], cells: Counter[Cell]
    ) -> dict[str, list[tuple[Grant, bool]]]:
        """Late grants of some readers at a site: count them among those readers' stored
        grants within the passback window around them, and uncount the later grants they
        now repeat (only a grant's successor can change: whether a grant is a visit depends
        on the one grant before it). Returns each reader's grants looked at, in order, and
        whether each is a visit now."""
        window = timedelta(seconds=self.window)
        fresh = {g.event_id for g in grants}
        near: dict[str, dict[str, Grant]] = {}
        bands: dict[str, str] = {}
        found = conn.execute(
            _NEAR[conn.dialect.name],
            {
                "site": site,
                "lo": min(g.at for g in grants) - window,
                "hi": max(g.at for g in grants) + window,
                "patrons": sorted({g.patron_id for g in grants if g.patron_id is not None}),
            },
        )
        for event_id, device, at, patron, band in found:
            near.setdefault(patron, {})[event_id] = Grant(event_id, site, device, at, patron)
            bands[patron] = band or "unknown"
        for g in grants:  # stored in this transaction: found above, unless a driver lags
            near.setdefault(g.patron_id or "", {})[g.event_id] = g
        out: dict[str, list[tuple[Grant, bool]]] = {}
        for patron, candidates in near.items():
            ordered = sorted(candidates.values(), key=lambda g: g.key)
            after = list(counted(ordered, self.window))
            before = dict(counted([g for g in ordered if g.event_id not in fresh], self.window))
            band = bands.get(patron, "unknown")
            for g, now in after:
                delta = int(now) - int(before.get(g, False))
                if delta:
                    hour = hour_of(g.at)
                    cells[(site, g.device_id, hour, "gate_visits")] += delta
                    cells[(site, g.device_id, hour, f"visits.{band}")] += delta
            out[patron] = after
        return out

    @staticmethod
    def _store_bands(conn: Connection, bands: dict[str, str]) -> None:
        now = datetime.now(UTC)
        rows = [{"patron_id": p, "band": b, "updated_at": now} for p, b in sorted(bands.items())]
        stmt = _insert(conn, reader_bands)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["patron_id"],
                set_={"band": stmt.excluded.band, "updated_at": stmt.excluded.updated_at},
            ),
            rows,
        )

    @staticmethod
    def write(conn: Connection, cells: Counter[Cell], readers: set[ReaderDay]) -> None:
        """Add ``cells`` to the hours' rows and record the readers of each day, on the
        driver's cursor (sorted: concurrent transactions lock rows in one order)."""
        pg = conn.dialect.name == "postgresql"
        rows = hour_rows(cells)
        days = sorted(readers)
        years = reader_years(days)
        if not (rows or days):
            return
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if rows:
                cursor.executemany(_ADD_HOURS_PG if pg else _ADD_HOURS_SQLITE, rows)
            if days:
                cursor.executemany(_ADD_DAY_PG if pg else _ADD_DAY_SQLITE, days)
                cursor.executemany(_ADD_YEAR_PG if pg else _ADD_YEAR_SQLITE, years)
        finally:
            cursor.close()

    def record_in(self, conn: Connection, site: str, metric: str) -> None:
        """Count something central itself did (``CENTRAL_FIGURES``), in the caller's
        transaction: an event ``central.figure`` stored and queued for the tally like a
        kiosk's (no reader named). Both through SQLAlchemy, so that central's journal
        (fleet/backup/journal.py) records them and a restore counts them again."""
        if metric not in CENTRAL_FIGURES:
            raise ValueError(f"central records none of {metric!r}")
        now = datetime.now(UTC)
        row = {
            "event_id": uuid7(),
            "device_id": CENTRAL,
            "site": site,
            "type": CENTRAL_FIGURE,
            "seq": 0,  # central's, not in a device's sequence
            "occurred_at": now,
            "received_at": now,
            "payload": {"metric": metric},
        }
        conn.execute(insert(events).values(**row))
        conn.execute(insert(report_pending).values(event_id=row["event_id"]))

    # -- from the raw events --------------------------------------------------------------

    def raw_cells(
        self, conn: Connection, lo: datetime | None = None, hi: datetime | None = None
    ) -> tuple[Counter[Cell], set[ReaderDay]]:
        """The rollups of events that happened in [lo, hi), computed from the events table
        alone: what ``apply`` must have kept. Bands as ``reader_bands`` has them now."""
        cells: Counter[Cell] = Counter()
        readers: set[ReaderDay] = set()
        bands = {r.patron_id: r.band for r in conn.execute(select(reader_bands))}
        window = timedelta(seconds=self.window)
        stmt = select(
            events.c.event_id,
            events.c.site,
            events.c.device_id,
            events.c.type,
            events.c.occurred_at,
            events.c.payload,
        )
        if lo is not None:  # grants just before may make the first ones repeats
            stmt = stmt.where(events.c.occurred_at >= lo - window)
        if hi is not None:
            stmt = stmt.where(events.c.occurred_at < hi)
        by_reader: dict[tuple[str, str], list[Grant]] = {}
        for r in conn.execute(stmt.execution_options(yield_per=20_000)):
            payload = r.payload
            if not isinstance(payload, dict):
                continue
            grant = r.type == GRANT and payload.get("decision") == "grant"
            patron = _patron(payload)
            if grant:
                g = Grant(r.event_id, r.site, r.device_id, r.occurred_at, patron)
                by_reader.setdefault((r.site, patron or f"\0{r.event_id}"), []).append(g)
            if lo is not None and r.occurred_at < lo:
                continue
            hour = hour_of(r.occurred_at)
            cell = (r.site, r.device_id, hour)
            for metric, n in contributions(r.type, payload):
                if n:
                    cells[(*cell, metric)] += n
            band = registration_band(r.type, payload, r.occurred_at, self.settings.child_under)
            new_card = r.type == "reader.registered" or payload.get("returning") is not True
            if band is not None and patron is not None and new_card:
                cells[(*cell, f"cards_new.{band}")] += 1
            if grant and patron is not None:
                readers.add((r.site, self.local_day(r.occurred_at), patron))
        for (site, patron), grants in by_reader.items():
            grants.sort(key=lambda g: g.key)
            band = bands.get(patron, "unknown") if not patron.startswith("\0") else "unknown"
            for g, visit in counted(grants, self.window):
                if visit and (lo is None or g.at >= lo):
                    cells[(site, g.device_id, hour_of(g.at), "gate_visits")] += 1
                    cells[(site, g.device_id, hour_of(g.at), f"visits.{band}")] += 1
        return cells, readers

    def backfill(self, conn: Connection) -> None:
        """Count every stored event once (the migration that creates the rollups): the age
        bands the registrations recorded first, then the figures."""
        bands: dict[str, str] = {}
        stmt = (
            select(events.c.type, events.c.occurred_at, events.c.payload)
            .where(events.c.type.in_(["desk.registration", "reader.registered"]))
            .order_by(events.c.occurred_at, events.c.id)
        )
        for r in conn.execute(stmt):
            patron = _patron(r.payload) if isinstance(r.payload, dict) else None
            band = registration_band(r.type, r.payload, r.occurred_at, self.settings.child_under)
            if patron is not None and band is not None:
                bands[patron] = band
        if bands:
            self._store_bands(conn, bands)
        cells, readers = self.raw_cells(conn)
        self.write(conn, cells, readers)


def _insert(conn: Connection, table: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_FIGURE_AT = {f: i for i, f in enumerate(HOUR_FIGURES)}
#: The kiosk of a site's own row in ``report_hours``: no kiosk id is empty (``valid_id``).
SITE_ROW = ""
_WIDTH = len(HOUR_FIGURES)


def hour_rows(cells: Counter[Cell]) -> list[tuple[Any, ...]]:
    """``cells`` as ``report_hours`` rows, as the driver takes them: (site, hour, kiosk, the
    figures in ``HOUR_FIGURES`` order, the breakdowns as JSON or None), in key order. Each
    site's hour is also a row of its own (kiosk ``SITE_ROW``): a report by site reads those,
    with nothing to add up."""
    wide: dict[tuple[str, int, str], list[Any]] = {}
    at = _FIGURE_AT.get
    for (site, device, hour, metric), value in cells.items():
        if not value:
            continue
        i = at(metric)
        for key in ((site, hour, device), (site, hour, SITE_ROW)):
            row = wide.get(key)
            if row is None:
                row = wide[key] = [0] * _WIDTH + [None]
            if i is not None:
                row[i] += value
            else:
                extra = row[_WIDTH] = row[_WIDTH] or {}
                extra[metric] = extra.get(metric, 0) + value
    return [
        (*key, *row[:_WIDTH], orjson.dumps(row[_WIDTH], option=orjson.OPT_SORT_KEYS).decode())
        if row[_WIDTH]
        else (*key, *row[:_WIDTH], None)
        for key, row in sorted(wide.items())
    ]


_YEAR_OF: dict[int, tuple[int, int, int]] = {}


def day_bit(day: int) -> tuple[int, int, int]:
    """(year, column, bit) of a local day (days since 1970-01-01) in ``report_reader_years``."""
    found = _YEAR_OF.get(day)
    if found is None:
        d = EPOCH + timedelta(days=day)
        j = (d - date(d.year, 1, 1)).days
        found = _YEAR_OF[day] = (d.year, j // 62, 1 << (j % 62))
    return found


def reader_years(days: list[ReaderDay]) -> list[tuple[Any, ...]]:
    """Readers' days as ``report_reader_years`` rows to OR in: (site, year, reader, d0-d5)."""
    bits: dict[tuple[str, int, str], list[int]] = {}
    for site, day, patron in days:
        year, column, bit = day_bit(day)
        row = bits.get((site, year, patron))
        if row is None:
            row = bits[(site, year, patron)] = [0] * 6
        row[column] |= bit
    return [(*key, *row) for key, row in sorted(bits.items())]


def _hour_upsert(mark: str) -> str:
    names = [f.replace(".", "_") for f in HOUR_FIGURES]
    columns = ", ".join(["site", "hour", "device_id", *names, "breakdown"])
    values = ", ".join([mark] * (len(names) + 4))
    adds = ", ".join(f"{c} = report_hours.{c} + excluded.{c}" for c in names)
    if mark == "?":
        each = (
            "SELECT key, value FROM json_each(report_hours.breakdown) UNION ALL "
            "SELECT key, value FROM json_each(excluded.breakdown)"
        )
        merged = (
            f"SELECT json_group_object(key, t) FROM (SELECT key, sum(value) AS t FROM ({each}) "
            "GROUP BY key HAVING t != 0 ORDER BY key)"
        )
    else:
        each = (
            "SELECT key, value::bigint AS value FROM json_each_text(report_hours.breakdown::json) "
            "UNION ALL SELECT key, value::bigint FROM json_each_text(excluded.breakdown::json)"
        )
        merged = (
            "SELECT coalesce(json_object_agg(key, t ORDER BY key), '{}')::text FROM "
            f"(SELECT key, sum(value) AS t FROM ({each}) AS u GROUP BY key "
            "HAVING sum(value) <> 0) AS s"
        )
    # breakdowns are added key by key; a row without any keeps the other side's as it is
    breakdown = (
        "breakdown = CASE WHEN excluded.breakdown IS NULL THEN report_hours.breakdown "
        "WHEN report_hours.breakdown IS NULL THEN excluded.breakdown "
        f"ELSE ({merged}) END"
    )
    return (
        f"INSERT INTO report_hours ({columns}) VALUES ({values}) "
        f"ON CONFLICT (site, hour, device_id) DO UPDATE SET {adds}, {breakdown}"
    )


def _year_upsert(mark: str) -> str:
    ors = ", ".join(f"d{i} = report_reader_years.d{i} | excluded.d{i}" for i in range(6))
    return (
        "INSERT INTO report_reader_years (site, year, patron_id, d0, d1, d2, d3, d4, d5) "
        f"VALUES ({', '.join([mark] * 9)}) "
        f"ON CONFLICT (site, year, patron_id) DO UPDATE SET {ors}"
    )


#: The figures and the readers' days, written on the driver's cursor: ingest runs them for
#: every batch, and SQLAlchemy's per-row parameter processing was much of their cost.
_ADD_HOURS_SQLITE = _hour_upsert("?")
_ADD_HOURS_PG = _hour_upsert("%s")
_ADD_DAY_SQLITE = (
    "INSERT INTO report_readers (site, day, patron_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
)
_ADD_DAY_PG = (
    "INSERT INTO report_readers (site, day, patron_id) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
)
_ADD_YEAR_SQLITE = _year_upsert("?")
_ADD_YEAR_PG = _year_upsert("%s")


#: The kept latest grants, written and read on the driver's cursor: ingest runs them for
#: every reader of a run, and SQLAlchemy's per-row parameter processing was most of their cost.
_COLUMNS = "site, patron_id, at_us, event_id, first_event_id, first_device_id, first_counted"
_SET = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS.split(", ")[2:])
_KEEP = {
    "sqlite": f"INSERT INTO report_last_grants ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    f"ON CONFLICT (site, patron_id) DO UPDATE SET {_SET}",
    "postgresql": f"INSERT INTO report_last_grants ({_COLUMNS}) "
    f"VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (site, patron_id) DO UPDATE SET {_SET}",
}
_CLAIM_PG = (
    "INSERT INTO report_last_grants (site, patron_id) VALUES (%s, %s) "
    "ON CONFLICT (site, patron_id) DO NOTHING"
)
_TAIL_COLUMNS = (
    "j.value, lg.at_us, lg.event_id, lg.first_event_id, lg.first_device_id, lg.first_counted, "
    "rb.band"
)
_TAILS_SQLITE = (
    f"SELECT {_TAIL_COLUMNS} FROM json_each(?2) AS j "
    "LEFT JOIN report_last_grants AS lg ON lg.site = ?1 AND lg.patron_id = j.value "
    "LEFT JOIN reader_bands AS rb ON rb.patron_id = j.value"
)
_TAILS_PG = (
    f"SELECT {_TAIL_COLUMNS} FROM unnest(%s::text[]) AS j(value) "
    "JOIN report_last_grants AS lg ON lg.site = %s AND lg.patron_id = j.value "
    "LEFT JOIN reader_bands AS rb ON rb.patron_id = j.value "
    "ORDER BY j.value FOR UPDATE OF lg"
)


def fill_last_grants(conn: Connection, window: float | None = None) -> None:
    """Keep each reader's latest grants per site (``Tail``) from the grants stored so far (the
    migration that creates ``report_last_grants``; the default passback window, as the
    migration that made the rollups counted with)."""
    window = ReportsConfig().passback_s if window is None else window
    patron: ColumnClause[str] = literal_column(PATRON_SQL[conn.dialect.name])
    stmt = select(
        events.c.site, patron, events.c.occurred_at, events.c.event_id, events.c.device_id
    ).where(events.c.type == GRANT, events.c.payload["decision"].as_string() == "grant")
    # (site, reader) -> [latest time, the time before it, first id, its device, last id]
    tails: dict[tuple[str, str], list[Any]] = {}
    for site, pid, at, event_id, device in conn.execute(stmt.execution_options(yield_per=20_000)):
        if not (isinstance(pid, str) and 0 < len(pid) <= 64):
            continue
        t = tails.get((site, pid))
        if t is None or at > t[0]:
            tails[(site, pid)] = [at, None if t is None else t[0], event_id, device, event_id]
        elif at == t[0]:
            if event_id < t[2]:
                t[2], t[3] = event_id, device
            t[4] = max(t[4], event_id)
        elif t[1] is None or at > t[1]:
            t[1] = at
    rows = [
        Tail(
            at, last, first, device, before is None or (at - before).total_seconds() >= window
        ).row(site, pid)
        for (site, pid), (at, before, first, device, last) in sorted(tails.items())
    ]
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for i in range(0, len(rows), 5000):
            cursor.executemany(_KEEP[conn.dialect.name], rows[i : i + 5000])
    finally:
        cursor.close()


#: The patron of an event, written out per database (no bound parameter in it), so that the
#: index ``ix_events_site_patron`` (migration 0013) serves the look-up of a reader's grants:
#: without it each stored run scanned every grant of the site within the window.
PATRON_SQL = {
    "sqlite": "json_extract(events.payload, '$.patron_id')",
    "postgresql": "(events.payload ->> 'patron_id')",
}


def _near(dialect: str) -> Select[Any]:
    """The grants of some readers at a site in a time window, with their age bands."""
    patron: ColumnClause[str] = literal_column(PATRON_SQL[dialect])
    # SQLite without statistics takes the (type, time) index, every grant of the window: a
    # unary + on the type keeps that index out of its choice (SQLite's documented way)
    kind: ColumnClause[str] = (
        literal_column("+events.type") if dialect == "sqlite" else events.c.type
    )
    return (
        select(
            events.c.event_id, events.c.device_id, events.c.occurred_at, patron, reader_bands.c.band
        )
        .select_from(events.outerjoin(reader_bands, reader_bands.c.patron_id == patron))
        .where(
            and_(
                events.c.site == bindparam("site"),
                patron.in_(bindparam("patrons", expanding=True)),
                events.c.occurred_at >= bindparam("lo", type_=UTCDateTime),
                events.c.occurred_at <= bindparam("hi", type_=UTCDateTime),
                kind == GRANT,
                events.c.payload["decision"].as_string() == "grant",
            )
        )
    )


_NEAR = {dialect: _near(dialect) for dialect in PATRON_SQL}

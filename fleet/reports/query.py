"""Answering a ``ReportQuery``: from the rollups (``report``, after counting what is pending),
or from the raw events (``raw_report``: the benchmark's baseline and the tests' oracle, same
figures by definition).

Rollups are kept per UTC hour; the library's zone is a whole number of hours from UTC
(``ReportsConfig`` checks), so every local hour, day, month and year is a set of whole UTC
hours. Visits are the gates' visits at a site that has an entry gate, else the exit gates'
counted entries (libraries without entry gates count visits at the exit gate). A site has an
entry gate when the registry has a gate there or a gate decided something there in the period.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Connection, and_, func, select

from biblioedge.fleet.db import HOUR_FIGURES, devices, events, report_readers
from biblioedge.fleet.reports.model import (
    BANDED_FAMILIES,
    BANDS,
    MAX_DAYS,
    METRICS,
    Figures,
    KioskProgress,
    Report,
    ReportError,
    ReportQuery,
    Row,
    label,
)
from biblioedge.fleet.reports.pending import Tally
from biblioedge.fleet.reports.rollup import EPOCH, SITE_ROW, Cell, ReaderDay, Rollups, day_bit
from biblioedge.fleet.reports.settings import ReportsConfig
from biblioedge.fleet.store import Db, engine_of
from biblioedge.protocol import YEARS, utc_now, valid_id

RowKey = tuple[str, str | None, str | None]


def check(query: ReportQuery, known_sites: Iterable[str]) -> None:
    """ReportError (the API's 422) for a question no report answers."""
    if query.start > query.end:
        raise ReportError("from", f"the range is reversed: {query.start} is after {query.end}")
    for name, day in (("from", query.start), ("to", query.end)):
        if not YEARS[0] <= day.year <= YEARS[1]:
            raise ReportError(name, f"{day} is outside the years {YEARS[0]}-{YEARS[1]}")
    if (query.end - query.start).days + 1 > MAX_DAYS:
        raise ReportError("to", "a report covers at most 10 years")
    known = set(known_sites)
    for site in query.sites:
        if not valid_id(site) or site not in known:
            raise ReportError("site", f"no site {site[:64]!r} is known")


def known_sites(conn: Connection) -> set[str]:
    """The registry's sites and every site with figures (kiosks since removed): the figures'
    sites by skipping from one to the next along the key, not by reading every row."""
    found = {r[0] for r in conn.execute(select(devices.c.site).distinct())}
    found.update(r[0] for r in conn.exec_driver_sql(_SITES_OF_HOURS) if r[0] is not None)
    return found


_SITES_OF_HOURS = (
    "WITH RECURSIVE s(site) AS (SELECT min(site) FROM report_hours UNION ALL "
    "SELECT (SELECT min(site) FROM report_hours WHERE report_hours.site > s.site) FROM s "
    "WHERE s.site IS NOT NULL) SELECT site FROM s"
)


@dataclass
class _Source:
    """Where the figures of a period come from: hour cells, and unique readers per days."""

    cells: Callable[[int, int, tuple[str, ...], bool], list[tuple[str, str, int, dict[str, int]]]]
    readers: Callable[[int, int, tuple[str, ...], bool], Iterable[tuple[str | None, int, int]]]
    distinct: Callable[[int, int, tuple[str, ...], bool, int | None], dict[str | None, int]]


class Reports:
    """Reports of one central database, by its settings (time zone, window, minimum cell)."""

    def __init__(self, db: Db, settings: ReportsConfig | None = None) -> None:
        self.engine = engine_of(db)
        self.settings = settings or ReportsConfig()
        self.zone = ZoneInfo(self.settings.timezone)
        self.rollups = Rollups(self.settings)

    def sites(self) -> set[str]:
        with self.engine.connect() as conn:
            return known_sites(conn)

    def report(self, query: ReportQuery, now: datetime | None = None) -> Report:
        """The report from the rollups; ReportError if the question is not answerable."""
        with self.engine.connect() as conn:
            check(query, known_sites(conn))
        tally = Tally(self.engine, self.rollups)
        if tally.any_pending():  # stored and not yet counted: counted first
            tally.drain()
        with self.engine.connect() as conn:
            known = known_sites(conn)
            return self._build(conn, query, _rollup_source(conn), now, known)

    def raw_report(self, query: ReportQuery, now: datetime | None = None) -> Report:
        """The same report computed from the raw events (slow: reads every event of the
        period and of the year before when ``compare``)."""
        with self.engine.connect() as conn:
            known = known_sites(conn)
            check(query, known)
            lo, hi = self._utc(query.start, query.end)
            spans = [(lo, hi)]
            if query.compare:
                spans.append(self._utc(*_year_before(query.start, query.end)))
            cells: Counter[Cell] = Counter()
            readers: set[ReaderDay] = set()
            for a, b in spans:
                c, r = self.rollups.raw_cells(conn, a, b)
                cells.update(c)
                readers |= r
            return self._build(conn, query, _memory_source(cells, readers), now, known)

    # -- building -------------------------------------------------------------------------

    def _utc(self, start: date, end: date) -> tuple[datetime, datetime]:
        """[local midnight of start, local midnight after end) in UTC."""
        lo = datetime(start.year, start.month, start.day, tzinfo=self.zone)
        after = end + timedelta(days=1)
        hi = datetime(after.year, after.month, after.day, tzinfo=self.zone)
        return lo.astimezone(UTC), hi.astimezone(UTC)

    def _build(
        self,
        conn: Connection,
        query: ReportQuery,
        source: _Source,
        now: datetime | None,
        known: set[str],
    ) -> Report:
        now = now or utc_now()
        scope = query.sites or tuple(sorted(known))  # by site: the readers' key leads with it
        progress = _progress(conn, query.sites)
        gate_sites = {
            r.site
            for r in conn.execute(select(devices.c.site).where(devices.c.role == "gate").distinct())
        }
        rows, total = self._period(
            query, scope, query.start, query.end, source, gate_sites, progress
        )
        previous: Figures | None = None
        previous_rows: list[Row] = []
        change: dict[str, float | None] = {}
        if query.compare:
            a, b = _year_before(query.start, query.end)
            previous_rows, previous = self._period(query, scope, a, b, source, gate_sites, progress)
            for key, value in total.items():
                before = previous.get(key)
                if value is None or before is None or key not in METRICS:
                    continue
                change[key] = None if before == 0 else round((value - before) * 100 / before, 1)
        _, hi = self._utc(query.start, query.end)
        grows = any(k.complete_up_to is not None and k.complete_up_to < hi for k in progress)
        keys = sorted({k for r in rows for k in r.figures} | set(total))
        return Report(
            query=query,
            timezone=self.settings.timezone,
            generated_at=now,
            min_cell=self.settings.min_cell,
            rows=rows,
            total=total,
            previous_year=previous,
            change_pct=change,
            previous_rows=previous_rows,
            complete=progress,
            may_still_grow=grows or hi > now,
            labels={k: label(k, query.lang) for k in keys},
        )

    def _period(
        self,
        query: ReportQuery,
        scope: tuple[str, ...],
        start: date,
        end: date,
        source: _Source,
        gate_sites: set[str],
        progress: list[KioskProgress],
    ) -> tuple[list[Row], Figures]:
        lo, hi = self._utc(start, end)
        h_lo, h_hi = int(lo.timestamp()) // 3600, int(hi.timestamp()) // 3600
        per_site = query.per_site or query.per_kiosk
        per_hour: dict[int, tuple[str, datetime]] = {}
        figures: dict[RowKey, dict[str, int]] = {}
        ends: dict[RowKey, datetime] = {}
        cells = source.cells(h_lo, h_hi, scope, query.per_kiosk)
        gated = set(gate_sites)
        for site, _, _, metrics in cells:  # a refusal is counted with its reason
            if site not in gated and ("gate_visits" in metrics or "refusals" in metrics):
                gated.add(site)
        by, kiosk = query.by, query.per_kiosk
        for site, device, hour, metrics in cells:
            known = per_hour.get(hour)
            if known is None:
                at = datetime.fromtimestamp(hour * 3600, self.zone)
                known = per_hour[hour] = (_period_key(by, at), min(_period_end(by, at, hi), hi))
            key: RowKey = (known[0], site if per_site else None, device if kiosk else None)
            visits = metrics.get("gate_visits" if site in gated else "exit_in", 0)
            bucket = figures.get(key)
            if bucket is None:  # by hour, each is its own row: nothing to add up
                metrics["visits"] = visits
                figures[key] = metrics
                ends[key] = known[1]
                continue
            ends[key] = max(ends[key], known[1])
            for metric, value in metrics.items():
                bucket[metric] = bucket.get(metric, 0) + value
            bucket["visits"] += visits
        total: dict[str, int] = {}
        add = total.get
        for bucket in figures.values():
            for metric, value in bucket.items():
                total[metric] = add(metric, 0) + value
        d_lo, d_hi = (start - EPOCH).days, (end - EPOCH).days
        if query.by != "hour":
            found = _unique(query.by, d_lo, d_hi, source, scope, per_site)
            for key, bucket in figures.items():
                if key[2] is None:
                    bucket["unique_readers"] = found.get(key[0], {}).get(key[1], 0)
        whole = source.distinct(d_lo, d_hi, scope, False, None)
        done = _done_by(progress)
        show = self._shown
        rows = [  # built from checked parts: 17,000 rows a year by hour need no re-validation
            _row(key, show(bucket), ends[key] > done(key[1], key[2]))
            for key, bucket in sorted(figures.items(), key=lambda kv: _order(kv[0]))
        ]
        shown = self._shown(total)
        shown["unique_readers"] = whole.get(None, 0)
        return rows, shown

    def _shown(self, counts: dict[str, int]) -> Figures:
        """The figures as a report shows them: families summed, small band cells hidden."""
        out: Figures = {**_ALWAYS, **counts}
        least = self.settings.min_cell
        get = counts.get
        for keys in _BAND_KEYS:
            for k in keys:
                n = get(k)
                if n is not None and 0 < n < least:
                    out.update(dict.fromkeys(keys))
                    break
        return out


#: Figures every row shows, 0 when nothing counted them (refusals and items refused are kept
#: at ingest beside their breakdown)
_ALWAYS: Figures = dict.fromkeys(
    ("visits", "gate_visits", "loans", "cards_new", "exit_in", "refusals", "items_refused"), 0
)
_BAND_KEYS = [[f"{family}.{b}" for b in BANDS] for family in BANDED_FAMILIES]
_ROW_FIELDS = frozenset(("period", "site", "device_id", "figures", "may_still_grow"))


def _row(key: RowKey, figures: Figures, grows: bool) -> Row:
    """A ``Row`` from checked parts, as ``Row.model_construct`` makes it without its per-field
    defaults pass (a year by hour is 17,000 rows)."""
    row = Row.__new__(Row)
    values = {
        "period": key[0],
        "site": key[1],
        "device_id": key[2],
        "figures": figures,
        "may_still_grow": grows,
    }
    object.__setattr__(row, "__dict__", values)
    object.__setattr__(row, "__pydantic_fields_set__", set(_ROW_FIELDS))
    object.__setattr__(row, "__pydantic_extra__", None)
    object.__setattr__(row, "__pydantic_private__", None)
    return row


def _unique(
    by: str, d_lo: int, d_hi: int, source: _Source, sites: tuple[str, ...], per_site: bool
) -> dict[str, dict[str | None, int]]:
    """Unique readers of each period (by site when ``per_site``): counted over the period's
    days together, never summed from days (a reader of two days is one reader)."""
    found: dict[str, dict[str | None, int]] = {}
    if by == "day":
        for site, day, n in source.readers(d_lo, d_hi, sites, per_site):
            found.setdefault((EPOCH + timedelta(days=day)).isoformat(), {})[site] = n
        return found
    if by == "weekday":
        for weekday in range(1, 8):
            found[str(weekday)] = source.distinct(d_lo, d_hi, sites, per_site, weekday)
        return found
    spans: dict[str, tuple[int, int]] = {}
    for day in range(d_lo, d_hi + 1):
        key = _period_key(by, datetime.combine(EPOCH + timedelta(days=day), datetime.min.time()))
        a, _ = spans.get(key, (day, day))
        spans[key] = (a, day)
    for key, (a, b) in spans.items():
        found[key] = source.distinct(a, b, sites, per_site, None)
    return found


def _period_key(by: str, at: datetime) -> str:
    match by:
        case "hour":
            return at.strftime("%Y-%m-%dT%H")
        case "day":
            return at.date().isoformat()
        case "weekday":
            return str(at.isoweekday())
        case "month":
            return at.strftime("%Y-%m")
        case "quarter":
            return f"{at.year}-Q{(at.month - 1) // 3 + 1}"
        case "year":
            return str(at.year)
    return "total"


def _period_end(by: str, at: datetime, hi: datetime) -> datetime:
    """When the period ``at`` falls in ends (UTC); the report's end for weekday and total."""
    zone = at.tzinfo
    day = datetime(at.year, at.month, at.day, tzinfo=zone)
    match by:
        case "hour":
            end = day.replace(hour=at.hour) + timedelta(hours=1)
        case "day":
            end = day + timedelta(days=1)
        case "month":
            end = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=zone)
        case "quarter":
            m = ((at.month - 1) // 3 + 1) * 3
            end = datetime(at.year + m // 12, m % 12 + 1, 1, tzinfo=zone)
        case "year":
            end = datetime(at.year + 1, 1, 1, tzinfo=zone)
        case _:
            return hi
    return end.astimezone(UTC)


def _order(key: RowKey) -> tuple[str, str, str]:
    """Rows in time order: every period key sorts as text (ISO dates, 2026-Q1, weekday 1-7)."""
    return (key[0], key[1] or "", key[2] or "")


def _year_before(start: date, end: date) -> tuple[date, date]:
    def back(d: date) -> date:
        return d.replace(year=d.year - 1, day=28 if (d.month, d.day) == (2, 29) else d.day)

    return back(start), back(end)


def _progress(conn: Connection, sites: tuple[str, ...]) -> list[KioskProgress]:
    """Per kiosk, up to when its events have arrived: the time of the newest event it sent
    (its outbox sends in order), or of its last state report if that said its outbox was
    empty, whichever is later."""
    stmt = select(
        devices.c.device_id,
        devices.c.site,
        devices.c.role,
        devices.c.reported,
        devices.c.reported_at,
    )
    if sites:
        stmt = stmt.where(devices.c.site.in_(sites))
    out = []
    for d in conn.execute(stmt.order_by(devices.c.site, devices.c.device_id)).all():
        newest = conn.execute(
            select(events.c.occurred_at)
            .where(events.c.device_id == d.device_id)
            .order_by(events.c.seq.desc())
            .limit(1)
        ).scalar()
        reported = d.reported if isinstance(d.reported, dict) else {}
        if d.reported_at is not None and reported.get("outbox_depth", 1) == 0:
            newest = d.reported_at if newest is None else max(newest, d.reported_at)
        out.append(
            KioskProgress(device_id=d.device_id, site=d.site, role=d.role, complete_up_to=newest)
        )
    return out


def _done_by(progress: list[KioskProgress]) -> Callable[[str | None, str | None], datetime]:
    """Up to when a row's figures are complete: the earliest of its kiosks."""
    far = datetime(YEARS[1], 12, 31, tzinfo=UTC)
    cache: dict[tuple[str | None, str | None], datetime] = {}

    def done(site: str | None, device: str | None) -> datetime:
        if (site, device) in cache:
            return cache[(site, device)]
        times = [
            k.complete_up_to
            for k in progress
            if k.complete_up_to is not None
            and (site is None or k.site == site)
            and (device is None or k.device_id == device)
        ]
        cache[(site, device)] = min(times, default=far)
        return cache[(site, device)]

    return done


_NAMES = tuple(f.replace(".", "_") for f in HOUR_FIGURES)


def _cells_sql(dialect: str, per_kiosk: bool, sites: int) -> str:
    """The hours' rows of some sites: the kiosks' rows, or each site's own (``SITE_ROW``)."""
    mark = "%s" if dialect == "postgresql" else "?"
    kiosks = f"device_id {'!=' if per_kiosk else '='} {mark}"
    return (
        f"SELECT site, device_id, hour, {', '.join(_NAMES)}, breakdown FROM report_hours "
        f"WHERE site IN ({', '.join([mark] * sites)}) AND hour >= {mark} AND hour < {mark} "
        f"AND {kiosks}"
    )


def _year_masks(d_lo: int, d_hi: int, weekday: int | None) -> dict[int, list[int]]:
    """Per year, the masks of ``report_reader_years``' columns for the days [d_lo, d_hi]
    (of one weekday, 1 = Monday, when given)."""
    masks: dict[int, list[int]] = {}
    for day in range(d_lo, d_hi + 1):
        if weekday is not None and (day + 3) % 7 != weekday - 1:  # day 0 was a Thursday
            continue
        year, column, bit = day_bit(day)
        masks.setdefault(year, [0] * 6)[column] |= bit
    return masks


def _rollup_source(conn: Connection) -> _Source:
    rd = report_readers.c
    pg = conn.dialect.name == "postgresql"
    mark = "%s" if pg else "?"

    def cells(
        h_lo: int, h_hi: int, sites: tuple[str, ...], per_kiosk: bool
    ) -> list[tuple[str, str, int, dict[str, int]]]:
        """One row per site (or kiosk) and hour with its figures (a year by hour is ~10,000
        rows), read on the driver's cursor."""
        if not sites:
            return []
        sql = _cells_sql(conn.dialect.name, per_kiosk, len(sites))
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, (*sites, h_lo, h_hi, SITE_ROW))
            found = cursor.fetchall()
        finally:
            cursor.close()
        loads = orjson.loads
        names = HOUR_FIGURES
        out = []
        for row in found:
            metrics = {k: v for k, v in zip(names, row[3:-1], strict=True) if v}
            if row[-1]:  # kept without zeros (``hour_rows``, the upsert's merge)
                metrics.update(loads(row[-1]))
            if metrics:  # else figures counted and uncounted again (a late repeat)
                out.append((row[0], row[1], row[2], metrics))
        return out

    def readers(
        d_lo: int, d_hi: int, sites: tuple[str, ...], per_site: bool
    ) -> Iterable[tuple[str | None, int, int]]:
        cols = [rd.site, rd.day] if per_site else [rd.day]
        stmt = select(*cols, func.count(func.distinct(rd.patron_id))).where(
            and_(rd.day >= d_lo, rd.day <= d_hi)
        )
        if sites:
            stmt = stmt.where(rd.site.in_(sites))
        rows = conn.execute(stmt.group_by(*cols)).all()
        return [(row[0], row[1], row[2]) if per_site else (None, row[0], row[1]) for row in rows]

    def distinct(
        d_lo: int, d_hi: int, sites: tuple[str, ...], per_site: bool, weekday: int | None
    ) -> dict[str | None, int]:
        """Readers who came on any of the days: a reader's row of a year counts when it has
        a bit of the days' mask (a reader of several years or sites is counted once)."""
        masks = _year_masks(d_lo, d_hi, weekday)
        if not masks or not sites:
            return {} if per_site else {None: 0}
        terms, params = [], []
        for year, mask in sorted(masks.items()):
            bits = [f"(d{i} & {mark}) != 0" for i, m in enumerate(mask) if m]
            terms.append(f"(year = {mark} AND ({' OR '.join(bits)}))")
            params += [year, *(m for m in mask if m)]
        head = "SELECT site, " if per_site else "SELECT "
        sql = (
            f"{head}count(DISTINCT patron_id) FROM report_reader_years "
            f"WHERE site IN ({', '.join([mark] * len(sites))}) AND year >= {mark} "
            f"AND year <= {mark} AND ({' OR '.join(terms)})"
            + (" GROUP BY site" if per_site else "")
        )
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, (*sites, min(masks), max(masks), *params))
            found = cursor.fetchall()
        finally:
            cursor.close()
        if per_site:
            return {site: int(n) for site, n in found}
        return {None: int(found[0][0]) if found else 0}

    return _Source(cells, readers, distinct)


def _memory_source(cells: Counter[Cell], readers: set[ReaderDay]) -> _Source:
    def cell_rows(
        h_lo: int, h_hi: int, sites: tuple[str, ...], per_kiosk: bool
    ) -> list[tuple[str, str, int, dict[str, int]]]:
        summed: dict[tuple[str, str, int], Counter[str]] = {}
        for (s, d, h, m), v in cells.items():
            if h_lo <= h < h_hi and s in sites and v:
                summed.setdefault((s, d if per_kiosk else "", h), Counter())[m] += v
        return [(s, d, h, {m: v for m, v in c.items() if v}) for (s, d, h), c in summed.items()]

    def days(
        d_lo: int, d_hi: int, sites: tuple[str, ...], per_site: bool
    ) -> Iterable[tuple[str | None, int, int]]:
        seen: dict[tuple[str | None, int], set[str]] = {}
        for s, d, p in readers:
            if d_lo <= d <= d_hi and (not sites or s in sites):
                seen.setdefault((s if per_site else None, d), set()).add(p)
        return [(s, d, len(ps)) for (s, d), ps in seen.items()]

    def distinct(
        d_lo: int, d_hi: int, sites: tuple[str, ...], per_site: bool, weekday: int | None
    ) -> dict[str | None, int]:
        seen: dict[str | None, set[str]] = {}
        for s, d, p in readers:
            if not (d_lo <= d <= d_hi and (not sites or s in sites)):
                continue
            if weekday is None or (d + 3) % 7 == weekday - 1:
                seen.setdefault(s if per_site else None, set()).add(p)
        return {k: len(v) for k, v in seen.items()} if per_site else {None: len(seen.get(None, ()))}

    return _Source(cell_rows, days, distinct)

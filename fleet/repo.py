"""What central does with its database: migrate, ingest, query, desired state.

Ingestion is exactly-once by construction: ``events.event_id`` is UNIQUE and inserts are
insert-or-ignore, so a batch delivered twice (lost ack, agent restart, broker redelivery)
stores each event once and is acknowledged again in full.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    delete,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from biblioedge.fleet import authz, migrations
from biblioedge.fleet.db import devices, events, make_engine, quarantine
from biblioedge.fleet.reports.pending import Tally, queue
from biblioedge.fleet.reports.rollup import CENTRAL, Rollups
from biblioedge.protocol import (
    BATCH_DEPTH,
    GALLERY_ROLES,
    DesiredState,
    Event,
    EventBatch,
    ProtocolError,
    ReportedState,
    decode,
    utc_now,
    validate_event,
)

log = logging.getLogger("biblioedge.fleet.repo")


class StaleVersion(Exception):
    """The desired state changed since the caller read it."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current desired version is {current}")
        self.current = current


class UnknownDevice(LookupError):
    pass


@dataclass
class Incoming:
    """One MQTT message for the ingest worker, topic already split."""

    site: str
    device_id: str
    channel: str
    payload: bytes


@dataclass
class AckOut:
    site: str
    device_id: str
    batch_id: str
    stored: list[str]
    rejected: dict[str, str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class IngestResult:
    acks: list[AckOut] = field(default_factory=list)
    inserted: int = 0
    duplicates: int = 0
    held: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    states: int = 0
    #: (site, device, gallery version) reported by each device in this run
    gallery_versions: list[tuple[str, str, int]] = field(default_factory=list)
    #: sites whose gallery changed in this run (a desk registered a reader)
    changed_sites: set[str] = field(default_factory=set)
    #: messages refused by the role table or the registry, by reason (see fleet/authz.py)
    security: dict[str, int] = field(default_factory=dict)
    #: attention cases raised in this run
    cases: list[authz.SecurityCase] = field(default_factory=list)
    #: the events this run stored, for the report figures kept in the same transaction
    stored_rows: list[dict[str, Any]] = field(default_factory=list)
    #: answers made in this run, by event id: a copy of the event in another message of the
    #: same run (an agent's resend after an ack timeout) gets the same answer, since the acks
    #: of one run go out together and may arrive in any order
    fresh: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: devices whose events this run stored or answered (their ``last_seen``)
    seen: set[str] = field(default_factory=set)

    def count(self, bucket: dict[str, int], reason: str, n: int = 1) -> None:
        bucket[reason] = bucket.get(reason, 0) + n

    def merge(self, other: IngestResult) -> None:
        self.acks += other.acks
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.held += other.held
        self.states += other.states
        for mine, theirs in ((self.quarantined, other.quarantined), (self.refused, other.refused)):
            for reason, n in theirs.items():
                self.count(mine, reason, n)
        self.gallery_versions += other.gallery_versions
        self.changed_sites |= other.changed_sites
        for reason, n in other.security.items():
            self.count(self.security, reason, n)
        self.cases += other.cases


def _insert_ignore(conn: Connection, table: Any, rows: list[dict[str, Any]], key: str) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite":
        stmt: Any = sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
    elif dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
    else:  # pragma: no cover - only the two supported backends
        raise RuntimeError(f"unsupported database {dialect}")
    conn.execute(stmt, rows)


class Effect(Protocol):
    """Work an event type does at central, in the transaction that stores the event."""

    def apply(self, conn: Connection, event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
        """(payload to store, answer for the device). ProtocolError refuses the event and
        must be raised before anything is written (no savepoints: pysqlite's are unreliable)."""
        ...

    def result_of(self, conn: Connection, event: Event) -> dict[str, Any] | None:
        """The answer to a resent event (its own device's: the repository refuses another
        device's event id before asking). It need not repeat what the first answer carried."""
        ...


def register_in(conn: Connection, device_id: str, site: str, role: str | None) -> None:
    """Mark a device registered (through the API or by enrolling), creating its row if new;
    ValueError if it is registered at another site."""
    row = conn.execute(select(devices).where(devices.c.device_id == device_id)).first()
    if row is None:
        conn.execute(
            insert(devices).values(
                device_id=device_id,
                site=site,
                role=role,
                registered=True,
                first_seen=None,
                last_seen=None,
                online=False,
                desired_version=0,
            )
        )
        return
    if row.site != site:
        raise ValueError(f"{device_id} is already registered at site {row.site}")
    conn.execute(
        update(devices)
        .where(devices.c.device_id == device_id)
        .values(registered=True, role=role or row.role)
    )


def _redacted(raw: Any) -> Any:
    """An event as quarantine keeps a refused one: the fact, without the personal data,
    templates or sealed blobs its payload carried."""
    if not isinstance(raw, dict):
        return raw
    payload = raw.get("payload")
    keys = sorted(str(k) for k in payload)[:20] if isinstance(payload, dict) else []
    return {**raw, "payload": {"redacted": True, "keys": keys}}


def _refuse_clear_names_without_key(conn: Connection) -> None:
    """Readers' names still in clear need central's key to be sealed (revision 0008). Refuse
    before the first migration runs: SQLite's DDL is not inside the transaction, so an
    earlier revision's schema change would stay while the chain stops, and the next try
    would fail on it."""
    inspector = inspect(conn)
    if not inspector.has_table("readers"):
        return
    columns = {c["name"] for c in inspector.get_columns("readers")}
    if "display_name" in columns and conn.execute(text("SELECT 1 FROM readers LIMIT 1")).first():
        raise RuntimeError(
            "sealing the readers' names needs central's template key: "
            "start central (it migrates with its keys) instead of migrating bare"
        )


#: how fresh a device's ``last_seen`` is kept by its events (its state reports set it always)
LAST_SEEN_STEP = timedelta(seconds=2)


class Repo:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self.effects: dict[str, Effect] = {}
        #: central runs with certificate identities (security.require): a device whose
        #: registry row has no role cannot be authorized, so its messages are held
        self.require_role = False
        self.cases = authz.SecurityCases()
        #: report figures: the events ingest stores are queued for them in the same
        #: transaction (fleet/reports/pending.py); central sets its ``[reports]`` settings,
        #: None keeps none (a benchmark's baseline)
        self.rollups: Rollups | None = Rollups()
        #: counts what ingest queued for the figures (central runs it; reports drain it)
        self.tally: Tally | None = None

    def migrate(self, template_key: bytes | None = None) -> None:
        """Bring the schema to head. ``template_key`` is central's sealing key: a migration
        that seals data stored in clear before needs it (and refuses without it)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
        with self.engine.begin() as conn:
            if template_key is None:
                _refuse_clear_names_without_key(conn)
            cfg.attributes["connection"] = conn
            cfg.attributes["template_key"] = template_key
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()

    # -- ingestion ----------------------------------------------------------------------

    def ingest(self, messages: list[Incoming], accept_unknown: bool) -> IngestResult:
        """Store a run of messages in one transaction; acks are only valid after it returns."""
        result = IngestResult()
        now = utc_now()
        with self.engine.begin() as conn:
            known, roles = self._known_devices(conn, {m.device_id for m in messages})
            for msg in messages:
                try:
                    if msg.channel == "state":
                        version = self._ingest_state(conn, msg, known, roles, accept_unknown, now)
                        result.states += 1
                        if version is not None:
                            result.gallery_versions.append((msg.site, msg.device_id, version))
                    elif msg.channel == "events":
                        self._ingest_events(conn, msg, known, roles, accept_unknown, now, result)
                except ProtocolError as exc:
                    result.count(result.refused, exc.reason)
                    if isinstance(exc, authz.Refused):
                        self._flag(conn, msg, known, roles, exc, now, result)
                    log.warning(
                        "refused %s message from %s/%s: %s",
                        msg.channel,
                        msg.site,
                        msg.device_id,
                        exc,
                    )
            if self.rollups is not None and result.stored_rows:  # counted beside ingest
                queue(conn, [r["event_id"] for r in result.stored_rows])
        if self.rollups is not None and result.stored_rows and self.tally is not None:
            self.tally.stored()
        if result.seen:
            self._touch(sorted(result.seen), now)
        return result

    def _touch(self, device_ids: list[str], now: datetime) -> None:
        """``last_seen`` of the devices heard, in a transaction of its own after the events
        committed, at most once per LAST_SEEN_STEP: inside the ingest transaction the row
        stayed locked until its commit, and central replicas ingesting the same kiosk's
        batches queued on it. Best effort: the events are stored whatever happens here."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(devices)
                    .where(
                        devices.c.device_id.in_(device_ids),
                        or_(
                            devices.c.last_seen.is_(None),
                            devices.c.last_seen < now - LAST_SEEN_STEP,
                        ),
                    )
                    .values(last_seen=now)
                )
        except DBAPIError as exc:
            log.warning("cannot note when %d devices were last seen: %s", len(device_ids), exc)

    def ingest_isolated(self, messages: list[Incoming], accept_unknown: bool) -> IngestResult:
        """``ingest``, and when a run fails on something unexpected, each message alone: the
        one that fails again costs only itself (quarantined, its events acknowledged as
        rejected, the cause logged), never the process or the other messages.

        A database error is not the message's fault: nothing is acknowledged then, and the
        devices send again once the database is back."""
        try:
            return self.ingest(messages, accept_unknown)
        except DBAPIError as exc:
            return self._database_down(messages, exc)
        except Exception as exc:
            if len(messages) == 1:
                return self._failed(messages[0], exc)
            log.warning(
                "a run of %d messages failed (%r): storing them one by one", len(messages), exc
            )
        merged = IngestResult()
        for msg in messages:
            try:
                merged.merge(self.ingest([msg], accept_unknown))
            except DBAPIError as exc:
                merged.merge(self._database_down([msg], exc))
            except Exception as exc:
                merged.merge(self._failed(msg, exc))
        return merged

    @staticmethod
    def _database_down(messages: list[Incoming], exc: DBAPIError) -> IngestResult:
        log.error(
            "database error, %d messages left for the devices to resend: %s",
            len(messages),
            exc.orig,
        )
        result = IngestResult()
        result.count(result.refused, "database_error", len(messages))
        return result

    def _failed(self, msg: Incoming, exc: Exception) -> IngestResult:
        reason = f"internal:{type(exc).__name__}"
        log.error(
            "%s message from %s/%s failed: quarantined",
            msg.channel,
            msg.site,
            msg.device_id,
            exc_info=exc,
        )
        result = IngestResult()
        result.count(result.refused, reason)
        if msg.channel != "events":
            return result
        try:
            batch = decode(EventBatch, msg.payload, BATCH_DEPTH, nul=True)
        except ProtocolError:
            return result
        ids = [e["event_id"] for e in batch.events if isinstance(e.get("event_id"), str)]
        ids = [i for i in ids if 0 < len(i) <= 64]
        now = utc_now()
        rows = [
            {
                "event_id": event_id,
                "device_id": msg.device_id,
                "site": msg.site,
                "reason": "internal_error",
                "detail": f"{type(exc).__name__}: {exc}"[:1000],
                "raw": msg.payload[:20_000].decode("utf-8", errors="replace"),
                "received_at": now,
            }
            for event_id in dict.fromkeys(ids)
        ]
        try:
            with self.engine.begin() as conn:
                _insert_ignore(conn, quarantine, rows, "event_id")
        except Exception:  # cannot even keep it aside: leave it unacknowledged
            log.exception("could not quarantine the failed message")
            return result
        result.count(result.quarantined, "internal_error", len(rows))
        result.acks.append(
            AckOut(
                msg.site, msg.device_id, batch.batch_id, [], dict.fromkeys(ids, "internal_error")
            )
        )
        return result

    def _known_devices(
        self, conn: Connection, ids: set[str]
    ) -> tuple[dict[str, str], dict[str, str | None]]:
        """(device -> site, device -> role) from the registry: what the messages are judged by."""
        rows = conn.execute(
            select(devices.c.device_id, devices.c.site, devices.c.role).where(
                devices.c.device_id.in_(ids)
            )
        ).all()
        return {r.device_id: r.site for r in rows}, {r.device_id: r.role for r in rows}

    def raise_case(self, case: authz.SecurityCase, role: str | None) -> bool:
        """Raise a security attention case found outside ingestion (a device that stays over
        its quota); the same once-per-window rule as the role table's cases."""
        with self.engine.begin() as conn:
            return self.cases.raise_in(conn, case, role, utc_now())

    def _flag(
        self,
        conn: Connection,
        msg: Incoming,
        known: dict[str, str],
        roles: dict[str, str | None],
        exc: ProtocolError,
        now: datetime,
        result: IngestResult,
    ) -> None:
        """Count a refusal of the role table or the registry, and raise its attention case
        under the device's registered site (at most one per device and reason per window)."""
        result.count(result.security, exc.reason)
        site = known.get(msg.device_id, msg.site)
        case = authz.SecurityCase(msg.device_id, site, exc.reason, exc.detail)
        if self.cases.raise_in(conn, case, roles.get(msg.device_id), now):
            result.cases.append(case)  # logged once per case: a flood does not flood the log
            log.warning("security case: %s/%s refused: %s", site, msg.device_id, exc)

    def _admit(
        self,
        conn: Connection,
        msg: Incoming,
        known: dict[str, str],
        accept_unknown: bool,
        now: datetime,
    ) -> bool:
        """Whether the device may be heard: registered, or admitted now on first contact
        (``accept_unknown``, with no role: only its registry row or its first report sets
        that); ``site_mismatch`` when it publishes under another site than its own."""
        site = known.get(msg.device_id)
        if site is None:
            if not accept_unknown:
                return False
            conn.execute(
                insert(devices).values(
                    device_id=msg.device_id,
                    site=msg.site,
                    role=None,
                    registered=False,
                    first_seen=now,
                    last_seen=now,
                    online=False,
                    desired_version=0,
                )
            )
            known[msg.device_id] = msg.site
            return True
        if site != msg.site:
            raise authz.Refused(
                "site_mismatch", f"{msg.device_id} belongs to {site}, published under {msg.site}"
            )
        return True

    def _ingest_state(
        self,
        conn: Connection,
        msg: Incoming,
        known: dict[str, str],
        roles: dict[str, str | None],
        accept: bool,
        now: datetime,
    ) -> int | None:
        """Role and site are the registry's: a report that claims others is refused (and
        flagged), never believed. A registry row without a role (a device admitted on first
        contact, without a certificate) takes its role from its first report, once."""
        if not msg.payload:
            return None  # a retained state cleared by an operator
        authz.check_state_size(msg.payload)
        state = decode(ReportedState, msg.payload, authz.MAX_STATE_DEPTH)
        if state.device_id != msg.device_id:
            raise authz.Refused("device_mismatch", "state names another device than its topic")
        if state.site != msg.site:
            raise authz.Refused("site_mismatch", f"state of site {state.site} on {msg.site}")
        if not self._admit(conn, msg, known, accept, now):
            raise ProtocolError("unknown_device", msg.device_id)
        role = roles.get(msg.device_id)
        if role is None and self.require_role:
            raise ProtocolError("role_unknown", f"{msg.device_id} has no role in the registry")
        authz.check_state(role, known[msg.device_id], state)
        values: dict[str, Any] = {}
        if role is None:  # first contact without a certificate: the role is set once
            values["role"] = roles[msg.device_id] = state.role
        conn.execute(
            update(devices)
            .where(devices.c.device_id == msg.device_id)
            .values(
                **values,
                online=state.online,
                reported=state.model_dump(mode="json"),
                reported_at=now,
                last_seen=now,
            )
        )
        return state.gallery_version if state.online and state.role in GALLERY_ROLES else None

    def _ingest_events(
        self,
        conn: Connection,
        msg: Incoming,
        known: dict[str, str],
        roles: dict[str, str | None],
        accept: bool,
        now: datetime,
        result: IngestResult,
    ) -> None:
        batch = decode(EventBatch, msg.payload, BATCH_DEPTH, nul=True)
        if batch.device_id != msg.device_id:
            raise ProtocolError("device_mismatch", "batch names another device than its topic")
        if not self._admit(conn, msg, known, accept, now):
            result.held += len(batch.events)
            result.count(result.refused, "unknown_device")
            log.warning(
                "holding %d events of unregistered device %s", len(batch.events), msg.device_id
            )
            return
        role = roles.get(msg.device_id)
        if role is None and self.require_role:
            result.held += len(batch.events)
            result.count(result.refused, "role_unknown")
            log.warning("holding %d events of %s: no role", len(batch.events), msg.device_id)
            return
        refusals: list[authz.Refused] = []
        good: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        ack = AckOut(msg.site, msg.device_id, batch.batch_id, [], {})
        valid: list[Event] = []
        for raw in batch.events:
            try:
                ev = validate_event(raw)
                if ev.device_id != msg.device_id or ev.site != msg.site:
                    raise authz.Refused("device_mismatch", f"event of {ev.device_id}/{ev.site}")
                authz.check_event(role, ev.type)  # before any effect
            except authz.Refused as exc:  # nothing of what it carried is kept
                self._reject(bad, ack, result, msg, _redacted(raw), exc, now)
                refusals.append(exc)
                continue
            except ProtocolError as exc:
                self._reject(bad, ack, result, msg, raw, exc, now)
                continue
            valid.append(ev)
        ids = [ev.event_id for ev in valid]
        have = {
            r.event_id: r.device_id
            for r in conn.execute(
                select(events.c.event_id, events.c.device_id).where(events.c.event_id.in_(ids))
            )
        }
        for ev in valid:
            payload = ev.payload
            if have.get(ev.event_id, ev.device_id) != ev.device_id:
                # another device's event id: never its answer, never "stored" for this one
                foreign = authz.Refused("foreign_event_id", f"{ev.event_id} is another device's")
                kept = _redacted(ev.model_dump(mode="json"))
                self._reject(bad, ack, result, msg, kept, foreign, now)
                refusals.append(foreign)
                continue
            effect = self.effects.get(ev.type)
            if effect is not None:
                answer: dict[str, Any] | None
                if ev.event_id in result.fresh:
                    answer = result.fresh[ev.event_id]
                elif ev.event_id in have:
                    answer = effect.result_of(conn, ev)
                else:
                    try:  # effects check everything before they write
                        payload, answer = effect.apply(conn, ev)
                    except ProtocolError as exc:
                        # quarantine the fact, not the personal data or templates it carried
                        kept = _redacted(ev.model_dump(mode="json"))
                        self._reject(bad, ack, result, msg, kept, exc, now)
                        if isinstance(exc, authz.Refused):
                            refusals.append(exc)
                        continue
                    result.changed_sites.add(ev.site)
                    if answer is not None:
                        result.fresh[ev.event_id] = answer
                if answer is not None:
                    ack.results[ev.event_id] = answer
            good.append(
                {
                    "event_id": ev.event_id,
                    "device_id": ev.device_id,
                    "site": ev.site,
                    "type": ev.type,
                    "seq": ev.seq,
                    "occurred_at": ev.occurred_at,
                    "received_at": now,
                    "payload": payload,
                }
            )
            ack.stored.append(ev.event_id)
        if good:
            fresh = [g for g in good if g["event_id"] not in have]
            _insert_ignore(conn, events, fresh, "event_id")
            result.stored_rows += fresh
            result.inserted += len(fresh)
            result.duplicates += len(good) - len(fresh)
        with_id = [b for b in bad if b["event_id"] is not None]
        _insert_ignore(conn, quarantine, with_id, "event_id")
        if len(with_id) < len(bad):
            conn.execute(insert(quarantine), [b for b in bad if b["event_id"] is None])
        result.seen.add(msg.device_id)  # last_seen: after the commit (_touch)
        for refusal in refusals:
            self._flag(conn, msg, known, roles, refusal, now, result)
        result.acks.append(ack)

    @staticmethod
    def _reject(
        bad: list[dict[str, Any]],
        ack: AckOut,
        result: IngestResult,
        msg: Incoming,
        raw: Any,
        exc: ProtocolError,
        now: datetime,
    ) -> None:
        sent_id = raw.get("event_id") if isinstance(raw, dict) else None
        event_id = sent_id if isinstance(sent_id, str) else None
        column = event_id  # kept in raw; a NUL or an overlong id cannot be a column value
        if column is not None and not (0 < len(column) <= 64 and column.isprintable()):
            column = None
        bad.append(
            {
                "event_id": column,
                "device_id": msg.device_id,
                "site": msg.site,
                "reason": exc.reason,
                "detail": exc.detail[:1000],
                "raw": orjson.dumps(raw).decode(),
                "received_at": now,
            }
        )
        result.count(result.quarantined, exc.reason)
        if event_id is not None and len(event_id) <= 64:  # the sender may drop it
            ack.rejected[event_id] = exc.reason

    # -- devices ------------------------------------------------------------------------

    def register_device(self, device_id: str, site: str, role: str | None) -> dict[str, Any]:
        with self.engine.begin() as conn:
            register_in(conn, device_id, site, role)
        device = self.get_device(device_id)
        assert device is not None
        return device

    def delete_device(self, device_id: str) -> None:
        """The registry row goes; events and quarantined messages it sent stay (they are the
        record of what happened)."""
        with self.engine.begin() as conn:
            res = conn.execute(delete(devices).where(devices.c.device_id == device_id))
        if res.rowcount == 0:
            raise UnknownDevice(device_id)

    def list_devices(self, site: str | None = None) -> list[dict[str, Any]]:
        stmt = select(devices).order_by(devices.c.site, devices.c.device_id)
        if site:
            stmt = stmt.where(devices.c.site == site)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def get_device(self, device_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(devices).where(devices.c.device_id == device_id)).first()
            return dict(row._mapping) if row else None

    def set_labels(self, device_id: str, labels: dict[str, str]) -> dict[str, Any]:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(devices).where(devices.c.device_id == device_id).values(labels=labels)
            )
            if res.rowcount != 1:
                raise UnknownDevice(device_id)
        device = self.get_device(device_id)
        assert device is not None
        return device

    def put_desired(
        self, device_id: str, base_version: int, doc: dict[str, Any]
    ) -> tuple[str, DesiredState]:
        """Compare-and-set: succeeds only if the stored version is still ``base_version``."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(devices.c.site, devices.c.desired_version).where(
                    devices.c.device_id == device_id
                )
            ).first()
            if row is None:
                raise UnknownDevice(device_id)
            desired = DesiredState.model_validate({**doc, "version": base_version + 1})
            res = conn.execute(
                update(devices)
                .where(
                    and_(
                        devices.c.device_id == device_id,
                        devices.c.desired_version == base_version,
                    )
                )
                .values(
                    desired=desired.model_dump(mode="json"),
                    desired_version=desired.version,
                    desired_updated_at=utc_now(),
                )
            )
            if res.rowcount != 1:
                raise StaleVersion(int(row.desired_version))
            return str(row.site), desired

    def all_desired(self) -> list[tuple[str, str, DesiredState]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(devices.c.site, devices.c.device_id, devices.c.desired).where(
                    devices.c.desired.is_not(None)
                )
            )
            return [(r.site, r.device_id, DesiredState.model_validate(r.desired)) for r in rows]

    # -- events -------------------------------------------------------------------------

    def list_events(
        self,
        *,
        device_id: str | None = None,
        site: str | None = None,
        type_: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: int | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> tuple[list[dict[str, Any]], int | None]:
        stmt = select(events)
        conds = []
        if device_id:
            conds.append(events.c.device_id == device_id)
        if site:
            conds.append(events.c.site == site)
        if type_:
            conds.append(events.c.type == type_)
        if since:
            conds.append(events.c.occurred_at >= since)
        if until:
            conds.append(events.c.occurred_at < until)
        if cursor is not None:
            conds.append(events.c.id < cursor if newest_first else events.c.id > cursor)
        if conds:
            stmt = stmt.where(and_(*conds))
        stmt = stmt.order_by(events.c.id.desc() if newest_first else events.c.id.asc())
        stmt = stmt.limit(limit + 1)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (int(rows[-1]["id"]) if more and rows else None)

    def gallery_versions(self, site: str) -> set[int]:
        """Gallery versions the online gates of ``site`` last reported."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(devices.c.reported).where(
                    (devices.c.site == site)
                    & (devices.c.online.is_(True))
                    & (devices.c.role.in_(sorted(GALLERY_ROLES)))
                )
            )
            return {int((r.reported or {}).get("gallery_version", 0)) for r in rows}

    def list_quarantine(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(quarantine).order_by(quarantine.c.id.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]

    def stats(self) -> dict[str, int]:
        """Counts of what the devices sent (central's own attention cases and report events
        excluded)."""
        sent = select(func.count()).select_from(events)
        sent = sent.where(events.c.device_id != CENTRAL, events.c.type != authz.SECURITY_ATTENTION)
        with self.engine.connect() as conn:
            return {
                "events": int(conn.scalar(sent) or 0),
                "devices": int(conn.scalar(select(func.count()).select_from(devices)) or 0),
                "quarantined": int(conn.scalar(select(func.count()).select_from(quarantine)) or 0),
            }

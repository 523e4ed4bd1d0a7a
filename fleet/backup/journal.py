"""The journal of changes made at central: what a backup cannot hold because it happened after.

Kiosks give back what central acknowledged after a backup (``replay.py``), but what central
itself decided through its API or CLI (enrollments and revocations, tokens, erasures and
consent withdrawals, card keys and revoked cards, desired state) is in no kiosk. Each such
transaction is therefore recorded, in the transaction itself, as one journal record.

Why this shape:

- **Statements, captured at the engine.** Every write statement a journaled transaction
  sends (an API request that is not a GET, a CLI command) is kept with its parameters, and at
  commit the list becomes one record in ``central_journal`` *in the same transaction*: a
  change is never committed without its record, nor a record without its change. Captured
  below the domain code, nothing that a new route writes can be forgotten; replaying the same
  statements in the same order onto the snapshot gives the same rows (a row id the original
  database chose is kept: SQLite's rowid is set back to it). Ingest and the leader's jobs are
  not journaled: kiosks give their events back, and the jobs run again.
- **Sealed and chained.** A record is sealed to the backup public key like a backup's chunks
  (only the offline key opens it), carries its sequence number, the central's id and the MAC
  of the record before it, and is authenticated with an HMAC key kept in ``keys/journal.key``
  (so it is in every backup): a record from another central, altered, missing from the middle
  or forged by whoever holds the public key is refused by name.
- **Shipped beside the backups.** The shipper writes each record to every backup place
  (``backup.dir``, ``backup.copies``, ``[[backup.s3]]``) as ``journal/<central>/<seq>.bej``,
  every ``backup.journal_ship_s`` seconds; a record's bytes are fixed when it is committed,
  so shipping twice (two replicas, a retry) writes the same file. The backup's manifest
  names the last record in its snapshot; ``central restore`` replays the records after it, in
  order, each in one transaction with its own row: exactly once, even when the restore is run
  again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import struct
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import Engine, event

from biblioedge.fleet.backup.container import BackupError, key_id
from biblioedge.fleet.store import Db, engine_of
from biblioedge.provisioning.sealing import SealError, open_sealed, seal

if TYPE_CHECKING:
    from biblioedge.fleet.config import CentralConfig

log = logging.getLogger("biblioedge.fleet.backup.journal")

MAGIC = b"BIBLIOEDGE-JOURNAL1\n"
SUFFIX = ".bej"
KEY_FILE = "journal.key"
STATUS = "journal-status.json"
#: pg_advisory_xact_lock key: one record at a time gets the next sequence number
LOCK = 0x626A6E6C  # "bjnl"
_MAC = 32
#: a record is one transaction's statements (an API body is at most 1 MiB): a bigger file in
#: a backup place is not read into memory, it is refused
MAX_RECORD = 64 * 2**20
_CONTEXT = b"biblioedge-journal\x00"
_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
_INSERT_INTO = re.compile(r'^\s*INSERT\s+(?:OR\s+\w+\s+)?INTO\s+"?([A-Za-z_][A-Za-z0-9_]*)"?', re.I)
_PENDING = "biblioedge.journal"
_MARKS = "biblioedge.journal.marks"

_source: ContextVar[str | None] = ContextVar("biblioedge_journal_source", default=None)


@contextlib.contextmanager
def journaled(source: str) -> Iterator[None]:
    """Record the writes made inside this block (and in threads started from it)."""
    token = _source.set(source)
    try:
        yield
    finally:
        _source.reset(token)


# -- parameters as JSON --------------------------------------------------------------------


def _enc(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$n": str(value)}
    if isinstance(value, UUID):
        return {"$u": str(value)}
    if isinstance(value, dict):
        return {"$m": {str(k): _enc(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return [_enc(v) for v in value]
    kind = type(value).__name__
    if kind in _WRAPPERS and hasattr(value, "obj"):  # psycopg's Binary, Json, Jsonb
        return {"$w": [kind, _enc(value.obj)]}
    raise TypeError(f"cannot journal a parameter of type {type(value).__name__}")


_WRAPPERS = frozenset({"Binary", "Json", "Jsonb"})


def _wrap(kind: str, obj: Any) -> Any:
    import psycopg
    from psycopg.types.json import Json, Jsonb

    if kind == "Binary":
        return psycopg.Binary(obj)
    return (Json if kind == "Json" else Jsonb)(_thaw(obj))


def _thaw(value: Any) -> Any:
    """JSON documents as they were: lists, not the tuples parameters are decoded to."""
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_dec(v) for v in value)
    if isinstance(value, dict):
        ((tag, raw),) = value.items()
        if tag == "$b":
            return base64.b64decode(raw)
        if tag == "$dt":
            return datetime.fromisoformat(raw)
        if tag == "$d":
            return date.fromisoformat(raw)
        if tag == "$n":
            return Decimal(raw)
        if tag == "$u":
            return UUID(raw)
        if tag == "$m":
            return {k: _dec(v) for k, v in raw.items()}
        if tag == "$w" and raw[0] in _WRAPPERS:
            return _wrap(raw[0], _dec(raw[1]))
        raise BackupError(f"corrupt journal record: unknown parameter tag {tag!r}")
    return value


# -- the record ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalKeys:
    """What central needs to write records: the backup public key, its MAC key, its id."""

    recipient: x25519.X25519PublicKey
    mac_key: bytes
    central_id: str


def _seal_record(keys: JournalKeys, seq: int, prev: str, at: str, body: bytes) -> bytes:
    header = json.dumps(
        {
            "central_id": keys.central_id,
            "seq": seq,
            "prev": prev,
            "at": at,
            "key_id": key_id(keys.recipient),
        },
        sort_keys=True,
    ).encode()
    sealed = seal(keys.recipient, body, _CONTEXT + header)
    return MAGIC + struct.pack(">I", len(header)) + header + sealed


def _mac(mac_key: bytes, record: bytes) -> str:
    return hmac.new(mac_key, record, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Record:
    seq: int
    prev: str
    at: str
    central_id: str
    key_id: str
    raw: bytes
    mac: str
    header: bytes
    sealed: bytes = field(repr=False)


def parse(blob: bytes, mac_key: bytes, where: str) -> Record:
    """A shipped record (``record | raw MAC``), its MAC checked; raises ``BackupError``."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4 + _MAC:
        raise BackupError(f"{where} is not a journal record")
    raw, tag = blob[:-_MAC], blob[-_MAC:]
    if not hmac.compare_digest(hmac.new(mac_key, raw, hashlib.sha256).digest(), tag):
        raise BackupError(
            f"{where} fails its MAC: altered, or written by another central or journal key"
        )
    (n,) = struct.unpack(">I", raw[len(MAGIC) : len(MAGIC) + 4])
    header = raw[len(MAGIC) + 4 : len(MAGIC) + 4 + n]
    try:
        doc = json.loads(header)
        return Record(
            seq=int(doc["seq"]),
            prev=str(doc["prev"]),
            at=str(doc["at"]),
            central_id=str(doc["central_id"]),
            key_id=str(doc["key_id"]),
            raw=raw,
            mac=tag.hex(),
            header=header,
            sealed=raw[len(MAGIC) + 4 + n :],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{where}: corrupt journal header ({exc})") from None


def open_record(record: Record, private: x25519.X25519PrivateKey) -> dict[str, Any]:
    mine = key_id(private.public_key())
    if record.key_id != mine:
        raise BackupError(
            f"journal record {record.seq} is sealed to backup key {record.key_id}, "
            f"not to the given key {mine}"
        )
    try:
        body: dict[str, Any] = json.loads(
            open_sealed(private, record.sealed, _CONTEXT + record.header)
        )
    except (SealError, ValueError):
        raise BackupError(f"journal record {record.seq} does not open with the given key") from None
    return body


# -- capture -----------------------------------------------------------------------------------


def _ph(dialect: str) -> str:
    return "?" if dialect == "sqlite" else "%s"


def attach(db: Db, keys: JournalKeys) -> None:
    """Journal the writes of every transaction made under ``journaled`` on ``db``'s engine."""
    engine = engine_of(db)
    dialect = engine.dialect.name
    ph = _ph(dialect)

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(conn: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        source = _source.get()
        if source is None or not _WRITE.match(statement) or "central_journal" in statement:
            return
        pending = conn.info.setdefault(_PENDING, [])
        pending.append([statement, _enc(params), bool(many), None, source])

    @event.listens_for(engine, "after_cursor_execute")
    def _rowid(conn: Any, cur: Any, statement: str, _p: Any, _ctx: Any, many: bool) -> None:
        pending = conn.info.get(_PENDING)
        if (
            pending
            and pending[-1][0] is statement
            and not many
            and dialect == "sqlite"
            and _INSERT_INTO.match(statement)
        ):
            pending[-1][3] = cur.lastrowid

    @event.listens_for(engine, "savepoint")
    def _savepoint(conn: Any, name: str) -> None:
        conn.info.setdefault(_MARKS, {})[name] = len(conn.info.get(_PENDING, []))

    @event.listens_for(engine, "rollback_savepoint")
    def _rollback_savepoint(conn: Any, name: str, _ctx: Any) -> None:
        mark = conn.info.get(_MARKS, {}).pop(name, None)
        if mark is not None and _PENDING in conn.info:
            del conn.info[_PENDING][mark:]

    @event.listens_for(engine, "rollback")
    def _rollback(conn: Any) -> None:
        conn.info.pop(_PENDING, None)
        conn.info.pop(_MARKS, None)

    @event.listens_for(engine.pool, "checkin")
    def _checkin(_dbapi: Any, record: Any) -> None:  # a connection returned mid-transaction
        record.info.pop(_PENDING, None)
        record.info.pop(_MARKS, None)

    @event.listens_for(engine, "commit")
    def _commit(conn: Any) -> None:
        pending = conn.info.pop(_PENDING, None)
        conn.info.pop(_MARKS, None)
        if not pending:
            return
        body = json.dumps(
            {
                "dialect": dialect,
                "source": pending[0][4],
                "statements": [
                    {"sql": s, "params": p, "many": m, "rowid": r} for s, p, m, r, _ in pending
                ],
            },
            separators=(",", ":"),
        ).encode()
        cur = conn.connection.dbapi_connection.cursor()
        try:
            if dialect == "postgresql":
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
            cur.execute("SELECT seq, mac FROM central_journal ORDER BY seq DESC LIMIT 1")
            last = cur.fetchone()
            seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, "")
            at = datetime.now(UTC).isoformat()
            record = _seal_record(keys, seq, prev, at, body)
            cur.execute(
                "INSERT INTO central_journal (seq, at, mac, record) "
                f"VALUES ({ph}, {ph}, {ph}, {ph})",
                (seq, at, _mac(keys.mac_key, record), record),
            )
        finally:
            cur.close()


def head(conn_or_cursor: Any) -> tuple[int, str]:
    """(seq, MAC) of the last record in a database (0, "" for none), from a DBAPI cursor."""
    conn_or_cursor.execute("SELECT seq, mac FROM central_journal ORDER BY seq DESC LIMIT 1")
    row = conn_or_cursor.fetchone()
    return (int(row[0]), str(row[1])) if row else (0, "")


# -- the places records are shipped to ---------------------------------------------------------


class Place(Protocol):
    kind: str
    where: str

    def put(self, name: str, data: bytes) -> None: ...
    def names(self) -> list[str]: ...
    def get(self, name: str) -> bytes: ...


class DirPlace:
    kind = "dir"

    def __init__(self, root: Path, central_id: str) -> None:
        self.dir = root / "journal" / central_id
        self.where = str(root)

    def put(self, name: str, data: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / name
        tmp = self.dir / f".{name}.{os.getpid()}.tmp"
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir() if p.name.endswith(SUFFIX))

    def get(self, name: str) -> bytes:
        path = self.dir / name
        if path.stat().st_size > MAX_RECORD:
            raise BackupError(f"journal record {name} in {self.where} is too large to be one")
        return path.read_bytes()


class S3Place:
    kind = "s3"

    def __init__(self, target: Any, central_id: str) -> None:
        self.target = target
        self.prefix = f"{target.prefix}journal/{central_id}/"
        self.where = str(target.where())
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            from biblioedge.fleet.backup.s3 import client

            self._client = client(self.target)
        return self._client

    def put(self, name: str, data: bytes) -> None:
        self._s3().put_object(Bucket=self.target.bucket, Key=self.prefix + name, Body=data)

    def names(self) -> list[str]:
        out: list[str] = []
        pages = self._s3().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.target.bucket, Prefix=self.prefix):
            out += [o["Key"][len(self.prefix) :] for o in page.get("Contents", [])]
        return sorted(n for n in out if n.endswith(SUFFIX) and "/" not in n)

    def get(self, name: str) -> bytes:
        obj = self._s3().get_object(Bucket=self.target.bucket, Key=self.prefix + name)
        if int(obj.get("ContentLength", 0)) > MAX_RECORD:
            raise BackupError(f"journal record {name} in {self.where} is too large to be one")
        data: bytes = obj["Body"].read(MAX_RECORD + 1)
        return data


def record_name(seq: int) -> str:
    return f"{seq:012d}{SUFFIX}"


# -- replay ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """The journal records after a snapshot's point, checked, in order."""

    records: list[Record]
    places: list[str]


def collect(
    places: list[Place], central_id: str, mac_key: bytes, after: int, after_mac: str
) -> Found:
    """Read every place's records after ``after`` and check the chain from the snapshot's
    last record; a place that cannot be read costs that place (another may hold the same
    records), a record that is wrong in any way refuses the whole journal."""
    by_seq: dict[int, Record] = {}
    read: list[str] = []
    for place in places:
        try:
            names = place.names()
        except Exception as exc:  # a missing mount or bucket: said, then the others
            log.warning("cannot list the journal in %s: %s", place.where, exc)
            continue
        read.append(place.where)
        for name in names:
            try:
                seq = int(name.removesuffix(SUFFIX))
            except ValueError:
                continue
            if seq <= after or seq in by_seq:
                continue
            where = f"journal record {name} in {place.where}"
            record = parse(place.get(name), mac_key, where)
            if record.central_id != central_id:
                raise BackupError(
                    f"{where} is of central {record.central_id}, not of central {central_id}"
                )
            if record.seq != seq:
                raise BackupError(f"{where} holds record {record.seq}")
            by_seq[seq] = record
    records = [by_seq[s] for s in sorted(by_seq)]
    prev_seq, prev_mac = after, after_mac
    for record in records:
        if record.seq != prev_seq + 1:
            raise BackupError(
                f"broken journal chain: record {prev_seq + 1} is missing "
                f"(found {record.seq} next); nothing after {prev_seq} can be replayed safely"
            )
        if record.prev != prev_mac:
            raise BackupError(
                f"broken journal chain at record {record.seq}: it does not follow record "
                f"{prev_seq} of this backup"
            )
        prev_seq, prev_mac = record.seq, record.mac
    return Found(records, read)


def replay(engine: Engine, found: Found, private: x25519.X25519PrivateKey) -> dict[str, Any]:
    """Apply each record after the database's own last one, in its own transaction with its
    row: a record is applied exactly once, whatever was replayed before."""
    dialect = engine.dialect.name
    ph = _ph(dialect)
    bodies = [(r, open_record(r, private)) for r in found.records]  # all open, or none applied
    for record, body in bodies:
        if body.get("dialect") != dialect:
            raise BackupError(
                f"journal record {record.seq} was written on {body.get('dialect')}, "
                f"this central runs {dialect}"
            )
    applied = 0
    raw = engine.raw_connection()
    try:
        for record, body in bodies:
            cur = raw.cursor()
            try:
                if dialect == "postgresql":
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
                seq, _ = head(cur)
                if record.seq <= seq:
                    raw.rollback()
                    continue
                for st in body["statements"]:
                    params = _dec(st["params"])
                    if st["many"]:
                        cur.executemany(st["sql"], list(params))
                    else:
                        cur.execute(st["sql"], params)
                    want = st.get("rowid")
                    table = _INSERT_INTO.match(st["sql"])
                    if want is not None and table and cur.lastrowid != want:
                        cur.execute(
                            f'UPDATE "{table.group(1)}" SET rowid = {ph} WHERE rowid = {ph}',
                            (want, cur.lastrowid),
                        )
                cur.execute(
                    f"INSERT INTO central_journal (seq, at, mac, record, shipped_at) "
                    f"VALUES ({ph}, {ph}, {ph}, {ph}, {ph})",
                    (record.seq, record.at, record.mac, record.raw, record.at),
                )
                raw.commit()
                applied += 1
            except BackupError:
                raw.rollback()
                raise
            except Exception as exc:
                raw.rollback()
                raise BackupError(
                    f"journal record {record.seq} does not apply to this database: {exc}"
                ) from None
            finally:
                cur.close()
    finally:
        raw.close()
    last = found.records[-1].seq if found.records else None
    return {"replayed": applied, "to_seq": last, "read": found.places}


# -- shipping ----------------------------------------------------------------------------------


def places_of(cfg: CentralConfig, central_id: str) -> list[Place]:
    """Every backup place: ``backup.dir``, each of ``backup.copies``, each S3 store."""
    out: list[Place] = [DirPlace(cfg.backup_dir, central_id)]
    out += [DirPlace(d, central_id) for d in cfg.backup.copies]
    out += [S3Place(t, central_id) for t in cfg.backup.s3]
    return out


def open_keys(cfg: CentralConfig) -> JournalKeys | None:
    """The journal's keys, or None while backups are not configured (nothing to seal to)."""
    from biblioedge.fleet.backup.parts import central_id
    from biblioedge.keys import load_or_create_key
    from biblioedge.provisioning.sealing import load_x25519_public

    if cfg.backup.public_key is None:
        return None
    cid = central_id(cfg.data_dir)
    if cid is None:
        return None
    return JournalKeys(
        recipient=load_x25519_public(cfg.backup.public_key),
        mac_key=load_or_create_key(cfg.data_dir / "keys" / KEY_FILE),
        central_id=cid,
    )


def ship_once(engine: Engine, places: list[Place], status_path: Path) -> dict[str, Any]:
    """Write every unshipped record to every place; a record counts as shipped once every
    place has it. A place that fails is retried at the next round and named in the status."""
    from sqlalchemy import delete, select, update

    from biblioedge.fleet.db import central_journal as j

    started = datetime.now(UTC)  # what was committed before this is shipped by this round
    with engine.connect() as conn:
        rows = conn.execute(
            select(j.c.seq, j.c.at, j.c.mac, j.c.record)
            .where(j.c.shipped_at.is_(None))
            .order_by(j.c.seq)
            .limit(1000)
        ).all()
        last = conn.execute(
            select(j.c.seq).where(j.c.shipped_at.is_not(None)).order_by(j.c.seq.desc()).limit(1)
        ).scalar()
    states: dict[str, str] = {p.where: "ok" for p in places}
    shipped: list[int] = []
    for seq, _at, mac, record in rows:
        ok = True
        for place in places:
            if states[place.where] != "ok":
                ok = False
                continue
            try:
                place.put(record_name(int(seq)), bytes(record) + bytes.fromhex(mac))
            except Exception as exc:  # a missing mount costs a delay, not the record
                states[place.where] = f"failed: {getattr(exc, 'strerror', None) or exc}"
                ok = False
        if not ok:
            break
        shipped.append(int(seq))
    now = datetime.now(UTC)
    if shipped:
        with engine.begin() as conn:
            conn.execute(update(j).where(j.c.seq.in_(shipped)).values(shipped_at=now.isoformat()))
            # shipped records are in every place: the database keeps only the chain's head
            # (a backup's point, and the MAC the next record chains to)
            conn.execute(delete(j).where(j.c.shipped_at.is_not(None), j.c.seq < shipped[-1]))
        last = shipped[-1]
    left = rows[len(shipped) :]
    oldest = None
    if left:
        oldest = round((now - datetime.fromisoformat(str(left[0][1]))).total_seconds(), 1)
    status = {
        "at": started.isoformat(),
        "shipped_to": last,
        "pending": len(left),
        "oldest_pending_s": oldest,
        "places": [
            {
                "kind": p.kind,
                "where": p.where,
                "ok": states[p.where] == "ok",
                "state": states[p.where],
            }
            for p in places
        ],
    }
    tmp = status_path.with_name(f".{status_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, indent=1))
    os.replace(tmp, status_path)
    return status


async def ship_loop(cfg: CentralConfig, db: Db) -> None:
    """Central's shipper: every ``backup.journal_ship_s``, the new records to every place.
    Safe to run on two replicas at once: a record's bytes never change."""
    import asyncio

    keys = await asyncio.to_thread(open_keys, cfg)
    if keys is None:
        return
    places = places_of(cfg, keys.central_id)
    failing = False
    while True:
        try:
            status = await asyncio.to_thread(
                ship_once, engine_of(db), places, cfg.data_dir / STATUS
            )
            bad = [p["where"] for p in status["places"] if not p["ok"]]
            if bad and not failing:
                log.error("cannot ship central's journal to %s", ", ".join(bad))
            elif failing and not bad:
                log.info("central's journal ships again")
            failing = bool(bad)
        except Exception:  # the database away: the next round tries again
            log.exception("journal shipping failed")
        await asyncio.sleep(cfg.backup.journal_ship_s)


# -- where changes come from -------------------------------------------------------------------

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class JournalRequests:
    """ASGI middleware: every API or dashboard request that may change something (not GET,
    HEAD, OPTIONS) runs journaled, so what it commits is recorded."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("method") not in _READS:
            with journaled("api"):
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def journal_here(cfg: CentralConfig, engine: Engine, source: str) -> bool:
    """For a CLI command that changes central's database: journal all of this process's
    writes (its records are shipped by the running central). False: backups are off."""
    keys = open_keys(cfg)
    if keys is None:
        return False
    attach(engine, keys)
    _source.set(source)
    return True


def shipping_problems(
    cfg: CentralConfig, now: datetime | None = None, *, places: bool = True
) -> list[str]:
    """What IT should know about the journal's shipping, in words: a place it cannot write
    (named only when ``places``: ``/health`` answers anyone), records waiting too long, or
    a shipper that stopped running. Empty while backups are off."""
    if cfg.backup.public_key is None:
        return []
    try:
        doc = json.loads((cfg.data_dir / STATUS).read_text())
        at = datetime.fromisoformat(doc["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return []  # not shipped yet: central's first round is seconds away
    limit = max(60.0, 10 * cfg.backup.journal_ship_s)
    out: list[str] = []
    bad = [p for p in doc.get("places", []) if isinstance(p, dict) and not p.get("ok")]
    if bad and places:
        out += [f"the journal of changes cannot be written to {p.get('where')}" for p in bad]
    elif bad:
        out.append(f"the journal of changes cannot be written to {len(bad)} backup place(s)")
    late = doc.get("oldest_pending_s")
    if isinstance(late, int | float) and late > limit:
        out.append(
            f"{doc.get('pending')} changes made at central are not in every backup place "
            f"after {late:.0f} s"
        )
    idle = ((now or datetime.now(UTC)) - at).total_seconds()
    if idle > limit and doc.get("pending"):
        out.append(f"the journal's shipper has not run for {idle:.0f} s")
    return out

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from biblioedge.agent.store import SCHEMA_VERSION, OutboxFull, Store, StoreError
from biblioedge.protocol import Event, validate_event


def append(store: Store, n: int, **kw: object) -> list[Event]:
    return store.append(
        [("gate.decision", {"decision": "grant", "i": i}) for i in range(n)],
        device_id="gate-01",
        site="tv-tinh",
        **kw,  # type: ignore[arg-type]
    )


def test_append_assigns_unique_monotonic_seq_and_valid_events(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.sqlite3")
    first = append(store, 3)
    second = append(store, 2)
    assert [e.seq for e in first + second] == [1, 2, 3, 4, 5]
    assert len({e.event_id for e in first + second}) == 5
    rows = store.read_batch(0, 10, 1 << 20)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert validate_event(orjson.loads(rows[0].body)).event_id == first[0].event_id


def test_seq_never_repeats_after_outbox_empties_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    store = Store(path)
    events = append(store, 4)
    assert store.delete_acked(e.event_id for e in events) == 4
    assert store.outbox_depth() == 0
    store.close()
    store = Store(path)
    assert append(store, 1)[0].seq == 5


def test_read_batch_respects_cursor_count_and_bytes(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.sqlite3")
    append(store, 10)
    assert [r.seq for r in store.read_batch(4, 3, 1 << 20)] == [5, 6, 7]
    one_size = len(store.read_batch(0, 1, 1 << 20)[0].body)
    assert len(store.read_batch(0, 10, one_size * 2 + 2)) == 2
    # a single event larger than the byte budget still goes, alone
    assert len(store.read_batch(0, 10, 10)) == 1


def test_outbox_bound_refuses_whole_append(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.sqlite3")
    append(store, 8, max_events=10)
    with pytest.raises(OutboxFull):
        append(store, 3, max_events=10)
    assert store.outbox_depth() == 8
    assert append(store, 2, max_events=10)[-1].seq == 10


def test_durability_pragmas_and_schema(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.sqlite3")
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.schema_version() == SCHEMA_VERSION
    assert store.integrity_check() == "ok"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 0)")
    with pytest.raises(StoreError, match="newer than this software"):
        Store(path)


def test_desired_state_roundtrip(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.sqlite3")
    assert store.load_desired() is None
    store.save_desired(3, {"version": 3, "config": {"log": {"level": "DEBUG"}}})
    store.save_desired(4, {"version": 4})
    assert store.load_desired() == (4, {"version": 4})


WRITER = """
import sys
from pathlib import Path
from biblioedge.agent.store import Store
store = Store(Path(sys.argv[1]))
out = sys.stdout
while True:
    events = store.append([("gate.decision", {"x": 1})] * 7, device_id="gate-01", site="tv-tinh")
    out.write("A " + " ".join(str(e.seq) for e in events) + "\\n"); out.flush()
    batch = store.read_batch(0, 3, 1 << 20)
    out.write("R " + " ".join(str(r.seq) for r in batch) + "\\n"); out.flush()
    store.delete_acked(r.event_id for r in batch)
    out.write("D\\n"); out.flush()
"""


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.7])
def test_kill_9_loses_no_committed_event(tmp_path: Path, delay: float) -> None:
    """Every event the writer was told is committed is still queued unless it was acked."""
    path = tmp_path / "a.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the writer is up and has committed once
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate()
    appended: set[int] = set()
    deleted: set[int] = set()
    maybe_deleted: set[int] = set()
    for line in (first + rest).splitlines():
        kind, *nums = line.split()
        if kind == "A":
            appended.update(map(int, nums))
        elif kind == "R":
            maybe_deleted = set(map(int, nums))
        elif kind == "D":
            deleted |= maybe_deleted
            maybe_deleted = set()
    store = Store(path)
    assert store.integrity_check() == "ok"
    queued = {r.seq for r in store.read_batch(0, 10**9, 1 << 40)}
    assert appended - deleted - maybe_deleted <= queued
    assert not (queued & deleted)
    assert store.last_seq() >= max(appended)
    assert len(appended) >= 7


def test_patron_cache_upsert_lookup_remove(tmp_path: Path) -> None:
    from biblioedge.agent.store import Patron

    path = tmp_path / "a.sqlite3"
    store = Store(path)
    an = Patron("P000001", "2000000001", "Nguyễn Văn An", "active", "2030-01-01")
    binh = Patron("P000002", "2000000002", "Trần Thị Bình", "active", "2030-01-01")
    assert store.upsert_patrons([an, binh]) == 2
    store.upsert_patrons(
        [Patron("P000002", "2000000002", "Trần Thị Bình", "blocked", "2030-01-01")]
    )
    store.close()
    store = Store(path)  # survives a restart
    # the kiosk keeps the given name it greets with, never the full name
    assert store.patron_by_barcode("2000000001") == replace(an, display_name="An")
    found = store.patron_by_barcode("2000000002")
    assert found is not None and found.status == "blocked"
    assert store.remove_patrons(["P000001", "P404"]) == 1
    assert store.patron_by_barcode("2000000001") is None
    assert store.patron_by_barcode("junk'; DROP TABLE outbox; --") is None
    assert store.outbox_depth() == 0

"""Acknowledged events a kiosk keeps for a central restored from backup (issue 24): kept on
ack, sent again on request exactly as they were, forgotten after their time, and the first
thing given up when the disk fills."""

from __future__ import annotations

import time
from pathlib import Path

from biblioedge.agent.store import Store


def _store(tmp_path: Path, n: int) -> tuple[Store, list[str]]:
    store = Store(tmp_path / "agent.sqlite3")
    events = store.append(
        [("gate.decision", {"decision": "grant", "i": i}) for i in range(n)],
        device_id="gate-01",
        site="tv-tinh",
    )
    return store, [e.event_id for e in events]


def test_acked_events_are_kept_and_requeued_after_a_point_byte_for_byte(tmp_path: Path) -> None:
    store, ids = _store(tmp_path, 10)
    bodies = {r.event_id: r.body for r in store.read_batch(0, 100, 1 << 20)}
    assert store.delete_acked(ids) == 10
    assert store.outbox_depth() == 0 and store.kept_count() == 10

    assert store.requeue_kept(after_seq=6) == 4  # seqs 7..10
    again = store.read_batch(0, 100, 1 << 20)
    assert [r.seq for r in again] == [7, 8, 9, 10]
    assert all(r.body == bodies[r.event_id] for r in again)  # the same events, not new ones
    assert store.kept_count() == 6
    # a second request for the same point has nothing more to send
    assert store.requeue_kept(after_seq=6) == 0
    # new events still get new sequence numbers after the requeued ones
    new = store.append([("gate.decision", {})], device_id="gate-01", site="tv-tinh")
    assert new[0].seq == 11
    store.close()


def test_kept_events_are_forgotten_after_their_time_and_dropped_first_under_pressure(
    tmp_path: Path,
) -> None:
    store, ids = _store(tmp_path, 6)
    store.delete_acked(ids[:3])
    assert store.prune_kept(older_than=time.time() - 3600) == 0  # still young
    assert store.prune_kept(older_than=time.time() + 1) == 3
    store.delete_acked(ids[3:])
    assert store.drop_kept() == 3 and store.kept_count() == 0
    store.close()


def test_keeping_can_be_turned_off(tmp_path: Path) -> None:
    store, ids = _store(tmp_path, 3)
    store.keep_acked = False
    store.delete_acked(ids)
    assert store.kept_count() == 0
    store.close()

"""A full disk on a kiosk: the store says so clearly, the kiosk degrades instead of dying, and
everything committed before is still delivered. On a real (tmpfs) file system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from disk import fill, tmpfs
from test_integration import device, scrape, stored_seqs

from biblioedge.agent.store import DiskFull, Store
from biblioedge.demo.launch import CentralProcess, free_port, wait_until
from biblioedge.settings import check_data_dir

WHO = {"device_id": "gate-07", "site": "tv-tinh"}


def test_the_store_names_a_full_disk_and_keeps_what_it_committed(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", 4) as disk:
        store = Store(disk / "agent.sqlite3")
        events = store.append(
            [("gate.decision", {"n": i}) for i in range(50)], device_id="g", site="s"
        )
        filler = fill(disk)
        with pytest.raises(DiskFull, match="disk is full"):  # not "cannot rollback"
            for i in range(10_000):
                store.append(
                    [("gate.decision", {"pad": "x" * 4000, "n": i})], device_id="g", site="s"
                )
        with pytest.raises(DiskFull):
            store.probe()
        assert store.integrity_check() == "ok"
        kept = store.read_batch(0, 100_000, 1 << 30)
        assert [r.event_id for r in kept[:50]] == [e.event_id for e in events]
        seqs = [r.seq for r in kept]
        assert seqs == list(range(1, len(seqs) + 1))  # a refused append leaves no gap
        filler.unlink()
        store.probe()
        (after,) = store.append([("gate.decision", {})], **WHO)
        assert after.seq == seqs[-1] + 1
        store.close()


def test_a_full_data_dir_is_still_a_valid_one(tmp_path: Path) -> None:
    """A kiosk restarted on a full disk must start (degraded), not exit as misconfigured."""
    with tmpfs(tmp_path / "disk", 1) as disk:
        fill(disk)
        assert check_data_dir(disk) == disk.resolve()
        assert not list(disk.glob(".write-probe-*"))


@pytest.mark.integration
def test_a_kiosk_on_a_full_disk_degrades_delivers_and_resumes(
    tmp_path: Path, central: CentralProcess, make_agent: Any
) -> None:
    port = free_port()
    with tmpfs(tmp_path / "gate-07", 24) as disk:
        agent = make_agent(
            "gate-07",
            simulator={"enabled": True, "rate_per_s": 40.0},
            metrics={"port": port},
            storage={"reserve_mb": 2, "check_s": 0.2},
        )
        agent.log_path = tmp_path / "gate-07.log"  # a kiosk logs to the journal, not its data
        agent.start()
        wait_until(lambda: len(stored_seqs(central, "gate-07")) >= 20, 30, what="events flowing")
        filler = fill(disk)  # completely: whichever notices first, SQLite or the guard
        wait_until(
            lambda: device(central, "gate-07")["reported"].get("degraded") == ["disk_full"],
            15,
            what="degraded state reported",
        )
        m = scrape(port)
        assert m["agent_storage_full"] == 1 and agent.alive()
        wait_until(
            lambda: scrape(port).get("agent_events_refused_total{reason=disk_full}", 0) > 0,
            10,
            what="events refused while full",
        )
        seqs = stored_seqs(central, "gate-07")  # what was committed keeps being delivered
        assert seqs == list(range(1, len(seqs) + 1)), "an event committed before was lost"
        # a kiosk restarted on a disk that stayed full starts, degraded, rather than exiting;
        # closing the store freed its WAL, so fill that too
        assert agent.stop() == 0
        fill(disk)
        agent.start()
        full = lambda: scrape(port).get("agent_storage_full") == 1  # noqa: E731
        wait_until(full, 20, what=f"degraded at start: {agent.log_tail()}")
        assert agent.alive()
        filler.unlink()
        wait_until(
            lambda: device(central, "gate-07")["reported"].get("degraded") == [],
            20,
            what="recovered by itself",
        )
        drained = lambda: scrape(port).get("agent_outbox_depth", 1) == 0  # noqa: E731
        wait_until(drained, 30, what="outbox drained")
        before = max(stored_seqs(central, "gate-07"))
        wait_until(
            lambda: max(stored_seqs(central, "gate-07")) > before + 20, 30, what="recording again"
        )
        seqs = stored_seqs(central, "gate-07")
        assert seqs == list(range(1, len(seqs) + 1)), "lost or duplicated across the episode"
        with central.client() as api:
            kinds = {
                e["payload"]["state"]
                for e in api.get(
                    "/events", params={"device_id": "gate-07", "type": "device.storage_full"}
                ).json()["items"]
            }
        assert "cleared" in kinds
        assert agent.stop() == 0

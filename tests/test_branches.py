"""One reader, every branch (issue 22): her card and face at the other branch's gates where
her consent allows, and the card's life (renew, lost card and replacement, leaving), each
followed by every kiosk of every branch at its next sync.

The kiosks are gates built from the gate's own parts (biblioedge.bench.lifecycle_kiosks:
gallery sync and store, card verifier, gate policy, 1:N gallery); central is its repository,
its desk-registration effect and its API.
"""

import json
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from biblioedge.bench.lifecycle_kiosks import (
    HOME,
    OTHER,
    BranchGate,
    Library,
    other_branch_granted,
    replaced_card_refused_s,
    unit,
)
from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Tokens
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.lifecycle import ERASED, RENEWED, REPLACED, Lifecycle
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.readers import Readers, UnknownReader
from biblioedge.fleet.repo import Repo
from biblioedge.keys import load_or_create_key as central_key


@pytest.fixture
def lib(tmp_path: Path) -> Any:
    library = Library(tmp_path, gates_per_branch=2)
    yield library
    library.close()


def api_for(lib: Library, tmp_path: Path, role: str = "librarian") -> TestClient:
    app = create_app(
        CentralConfig(data_dir=tmp_path), lib.repo, None, CentralMetrics(), lib.readers, lib.cards
    )
    client = TestClient(app)
    token = Tokens(lib.repo.engine).create(f"{role}-1", role)[1]
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def gates_at(lib: Library, site: str) -> list[BranchGate]:
    return [g for g in lib.gates if g.site == site]


def test_a_reader_registered_at_one_branch_enters_the_other_by_card_and_face() -> None:
    out = other_branch_granted()
    assert out["other_branch_granted"] is True, out
    assert out["baseline_home_branch_granted"] is True, out


def test_the_other_branch_keeps_her_anti_passback_and_greets_her(lib: Library) -> None:
    answer = lib.register(seed=3)
    lib.sync_all()
    gate = gates_at(lib, OTHER)[0]
    token = answer["card"]["token"]
    assert gate.card(token).granted
    again = gate.card(token)  # the card handed back over the turnstile to a friend
    assert (again.granted, again.reason) == (False, "passback")
    row = gate.store.conn.execute(
        "SELECT display_name FROM patron_cache WHERE patron_id = ?", (answer["patron_id"],)
    ).fetchone()
    assert row == ("Bình",)  # the given name, as at her home branch


def test_consent_says_where_the_face_is_used(lib: Library, tmp_path: Path) -> None:
    answer = lib.register(seed=5)
    pid = answer["patron_id"]
    api = api_for(lib, tmp_path)
    narrowed = api.post(
        f"/api/v1/readers/{pid}/consents",
        json={"text_version": "vi-2026-2", "granted": True, "librarian": "lan", "sites": [HOME]},
    )
    assert narrowed.status_code == 201 and narrowed.json()["sites"] == [HOME]
    lib.sync_all()
    home, other = gates_at(lib, HOME)[0], gates_at(lib, OTHER)[0]
    assert home.face(unit(5)).granted
    refused = other.face(unit(5))
    assert (refused.granted, refused.reason) == (False, "empty_gallery")  # no face there
    assert other.card(answer["card"]["token"]).granted  # her card works at every branch
    everywhere = api.post(
        f"/api/v1/readers/{pid}/consents",
        json={"text_version": "vi-2026-3", "granted": True, "librarian": "lan"},
    )
    assert everywhere.status_code == 201 and everywhere.json()["sites"] is None
    lib.sync_all()
    assert gates_at(lib, OTHER)[1].face(unit(5)).granted
    bad = api.post(
        f"/api/v1/readers/{pid}/consents",
        json={"text_version": "v", "granted": True, "librarian": "l", "sites": ["Không hợp lệ"]},
    )
    assert bad.status_code == 422


def test_renewal_gives_a_new_expiry_every_branch_follows(lib: Library, tmp_path: Path) -> None:
    answer = lib.register(seed=11)
    pid = answer["patron_id"]
    lib.sync_all()
    api = api_for(lib, tmp_path)
    until = (datetime.now(UTC).date() + timedelta(days=730)).isoformat()
    r = api.post(f"/api/v1/readers/{pid}/renewal", json={"valid_days": 730})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_at"] == until and body["card"]["token"].startswith("BE1.")
    assert body["site"] == HOME and body["revoked"] == []
    lib.sync_all()
    for gate in lib.gates:
        row = gate.store.conn.execute(
            "SELECT expires_at, status FROM patron_cache WHERE patron_id = ?", (pid,)
        ).fetchone()
        assert row == (until, "active")
        assert gate.card(answer["card"]["token"]).granted  # her old card still opens
    events = api.get("/api/v1/events", params={"type": RENEWED}).json()["items"]
    assert [e["payload"] for e in events] == [{"patron_id": pid, "expires_at": until}]
    for bad in ({"valid_days": 3651}, {"valid_days": 0}, {"until": "2030-01-01"}):
        assert api.post(f"/api/v1/readers/{pid}/renewal", json=bad).status_code == 422, bad
    assert api.post("/api/v1/readers/P404/renewal", json={}).status_code == 404
    viewer = api_for(lib, tmp_path, "viewer")
    assert viewer.post(f"/api/v1/readers/{pid}/renewal", json={}).status_code == 403


def test_an_expired_reader_renewed_is_let_in_again_a_blocked_one_is_not(
    lib: Library,
) -> None:
    a, b = lib.register(seed=21), lib.register(seed=22)
    for answer, status in ((a, "expired"), (b, "blocked")):
        pid = answer["patron_id"]
        doc = lib.readers.get(pid)
        lib.readers.upsert(pid, site=HOME, display_name=str(doc["display_name"]), status=status)
        lib.life.renew(pid, until=date.today() + timedelta(days=365))
    lib.sync_all()
    gate = gates_at(lib, OTHER)[0]
    assert gate.card(a["card"]["token"]).granted
    refused = gate.card(b["card"]["token"])
    assert (refused.granted, refused.reason) == (False, "blocked")


def test_a_lost_card_is_refused_at_every_gate_after_one_sync(lib: Library, tmp_path: Path) -> None:
    answer = lib.register(seed=31)
    pid, old = answer["patron_id"], answer["card"]["token"]
    other_reader = lib.register(seed=32)["patron_id"]
    lib.life.replace(other_reader, barcode="TV-0000032")
    api = api_for(lib, tmp_path)
    doc = lib.readers.get(pid)
    lib.readers.upsert(pid, site=HOME, display_name=str(doc["display_name"]), barcode="TV-31")
    lib.sync_all()
    assert lib.gates[0].synced.store.patron_by_barcode("TV-31") is not None
    taken = api.post(f"/api/v1/readers/{pid}/replacement", json={"barcode": "TV-0000032"})
    assert taken.status_code == 409  # another reader's barcode: nothing changed
    r = api.post(f"/api/v1/readers/{pid}/replacement", json={"barcode": "TV-31-B"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["revoked"] == [answer["card"]["jti"]]
    new = body["card"]["token"]
    for gate in lib.gates:
        assert gate.sync(lib.readers) == 1  # one sync
    for gate in lib.gates:
        refused = gate.card(old)
        assert (refused.granted, refused.reason) == (False, "revoked"), gate.device_id
        assert gate.store.patron_by_barcode("TV-31") is None  # the lost card's barcode too
        assert gate.store.patron_by_barcode("TV-31-B") is not None
    for gate in gates_at(lib, HOME)[:1] + gates_at(lib, OTHER)[:1]:
        assert gate.card(new).granted
    events = api.get("/api/v1/events", params={"type": REPLACED}).json()["items"]
    assert {e["payload"]["patron_id"] for e in events} == {pid, other_reader}
    assert api.post("/api/v1/readers/P404/replacement", json={}).status_code == 404
    assert (
        api.post(f"/api/v1/readers/{pid}/replacement", json={"barcode": "a\nb"}).status_code == 422
    )


def test_leaving_erases_her_everywhere(lib: Library, tmp_path: Path) -> None:
    answer = lib.register(seed=41)
    stays = lib.register(seed=42)
    pid = answer["patron_id"]
    lib.sync_all()
    assert all(g.face(unit(41)).granted for g in gates_at(lib, OTHER)[:1])
    api = api_for(lib, tmp_path)
    assert api.delete(f"/api/v1/readers/{pid}").status_code == 204
    lib.sync_all()
    for gate in lib.gates:
        assert gate.store.conn.execute(
            "SELECT count(*) FROM patron_cache WHERE patron_id = ?", (pid,)
        ).fetchone() == (0,)
        assert pid not in gate.synced.templates.load("bench-embedder@1", 128)[0]
        refused = gate.card(answer["card"]["token"])
        assert (refused.granted, refused.reason) == (False, "revoked")
    assert gates_at(lib, OTHER)[1].face(unit(42)).granted  # the others stay
    assert stays["patron_id"] != pid
    assert api.get(f"/api/v1/readers/{pid}").status_code == 404
    with pytest.raises(UnknownReader):
        lib.life.leave(pid)
    events = api.get("/api/v1/events", params={"type": ERASED}).json()["items"]
    assert [e["payload"] for e in events] == [{"patron_id": pid}]
    assert api.delete(f"/api/v1/readers/{pid}").status_code == 404


class ListQueue:
    """A library-system queue that keeps what it was given, or refuses (a full disk)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, dict[str, str]]] = []
        self.refuse = False

    def __call__(
        self, conn: Connection, patron_id: str, op: str, data: Mapping[str, str] | None
    ) -> int:
        if self.refuse:
            raise OSError("the queue cannot be written")
        self.items.append((patron_id, op, dict(data or {})))
        return len(self.items)


def test_each_change_is_queued_for_the_library_system_in_its_transaction(lib: Library) -> None:
    queue = ListQueue()
    life = Lifecycle(lib.readers, lib.cards, queue)
    answer = lib.register(seed=51)
    pid = answer["patron_id"]
    life.renew(pid, until=date.today() + timedelta(days=100))
    life.replace(pid, barcode="B-51")
    assert [op for _, op, _ in queue.items] == ["renew", "update"]
    queue.refuse = True  # the push cannot be queued: the erasure does not happen either
    with pytest.raises(OSError):
        life.leave(pid)
    assert lib.readers.get(pid)["barcode"] == "B-51"
    queue.refuse = False
    life.leave(pid)
    # the erasure carries what finds her in the library system once she is gone here
    assert queue.items[-1] == (pid, "erase", {"cardnumber": "B-51", "citizen_ref": f"{51:064x}"})


def test_the_card_life_reaches_the_ils_queue(lib: Library) -> None:
    """Through the real queue (fleet/ils): renew, replace and leave each queue one push,
    in order after the registration's."""
    from biblioedge.fleet.ils.queue import Queue

    pid = lib.register(seed=61)["patron_id"]
    lib.life.renew(pid, days=30)
    lib.life.replace(pid)
    lib.life.leave(pid)
    queue = Queue(lib.repo.engine)
    ops: list[str] = []
    while items := [i for i in queue.due(limit=50) if i.patron_id == pid]:
        (item,) = items  # one at a time per reader, in order
        ops.append(item.op)
        queue.done(item, None)  # as the worker marks what the library system took
    assert ops == ["create", "renew", "update", "erase"]


def test_bench_replaced_card_refused_within_one_sync() -> None:
    out = replaced_card_refused_s(gates_per_branch=1, runs=2)
    assert out["old_card_refused_at_every_gate"] is True, out
    assert out["syncs_needed"] == 1 and out["gates"] == 2
    assert out["replaced_card_refused_s"] > 0 and out["baseline_renewal_followed_s"] > 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "biblioedge", *args], capture_output=True, text=True, timeout=120
    )


def test_the_card_life_from_centrals_host(tmp_path: Path) -> None:
    data = tmp_path / "central"
    conf = tmp_path / "central.toml"
    conf.write_text(f'data_dir = "{data}"\n')
    repo = Repo(f"sqlite:///{data / 'central.sqlite3'}")
    key = central_key(data / "keys" / "templates.key")
    repo.migrate(key)
    readers = Readers(repo, key)
    readers.upsert("BE0000001", site=HOME, display_name="Lê Thị Hoa", barcode="OLD-1")
    Cards(readers, central_key(data / "keys" / "cards.key")).issue_card("BE0000001")
    repo.close()
    renewed = _cli("central", "reader", "renew", "BE0000001", "--days", "30", "--config", str(conf))
    assert renewed.returncode == 0, renewed.stderr
    doc = json.loads(renewed.stdout)
    assert doc["expires_at"] == (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
    replaced = _cli("central", "reader", "replace", "BE0000001", "--config", str(conf))
    assert replaced.returncode == 0, replaced.stderr
    assert len(json.loads(replaced.stdout)["revoked"]) == 2  # the desk's card and the renewal's
    refused = _cli("central", "reader", "leave", "BE0000001", "--config", str(conf))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    left = _cli("central", "reader", "leave", "BE0000001", "--yes", "--config", str(conf))
    assert left.returncode == 0, left.stderr
    again = _cli("central", "reader", "renew", "BE0000001", "--config", str(conf))
    assert again.returncode == 2 and "no reader BE0000001" in again.stderr
    assert "Traceback" not in again.stderr


def test_a_self_check_of_the_other_branch_knows_her_by_cccd_and_face_where_consented(
    lib: Library, tmp_path: Path
) -> None:
    from biblioedge.agent.gallery_store import GalleryStore
    from biblioedge.agent.gallery_sync import GallerySync
    from biblioedge.agent.store import Store
    from biblioedge.protocol import GalleryDelta, dumps

    answer = lib.register(seed=71)
    pid = answer["patron_id"]
    store = Store(tmp_path / "selfcheck.sqlite3")
    kiosk = GallerySync(
        store,
        GalleryStore(store, b"s" * 32),
        keep_citizen_ref=True,
        purpose="face_selfcheck",
        keep_name=False,
    )
    kiosk.dims["bench-embedder@1"] = 128

    def sync() -> None:
        while (delta := lib.readers.delta(OTHER, kiosk.version())) is not None:
            assert kiosk.apply(GalleryDelta.model_validate_json(dumps(delta)))

    try:
        sync()
        assert kiosk.reader(citizen_ref=f"{71:064x}") == (pid, "active")  # the CCCD QR
        assert kiosk.templates.load("bench-embedder@1", 128)[0] == []  # gate consent only
        lib.cards.record_consent(
            pid, purpose="face_selfcheck", text_version="v1", granted=True, librarian="lan"
        )
        sync()
        assert kiosk.templates.load("bench-embedder@1", 128)[0] == [pid]
    finally:
        store.close()

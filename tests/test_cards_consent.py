"""Central's library cards and consent; card keys reach gates with the gallery."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from biblioedge.agent.gallery_store import GalleryStore, load_or_create_key
from biblioedge.agent.gallery_sync import GallerySync
from biblioedge.agent.store import Store
from biblioedge.cardtoken import CardTokenError, CardVerifier, load_public_key
from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Tokens
from biblioedge.fleet.cards import CardError, Cards
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.repo import Repo
from biblioedge.keys import load_or_create_key as central_key


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Readers, Cards]:
    repo = Repo(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    repo.migrate()
    readers = Readers(repo, central_key(tmp_path / "t.key"))
    cards = Cards(readers, central_key(tmp_path / "c.key"))
    readers.upsert("P1", site="tv-tinh", display_name="Nguyễn Văn An")
    return readers, cards


def verifier(cards: Cards) -> CardVerifier:
    return CardVerifier({k: load_public_key(v) for k, v in cards.public_keys().items()})


def test_issue_rotate_retire(setup: tuple[Readers, Cards]) -> None:
    _, cards = setup
    first = cards.issue_card("P1", 30)  # the first card creates the first key
    assert verifier(cards).verify(first["token"]).pid == "P1"
    new_kid = cards.rotate()
    second = cards.issue_card("P1", 30)
    assert second["kid"] == new_kid != first["kid"]
    v = verifier(cards)
    assert v.verify(first["token"]).pid == v.verify(second["token"]).pid == "P1"  # old still valid
    with pytest.raises(CardError, match="rotate before"):
        cards.retire(new_kid)
    cards.retire(first["kid"])
    with pytest.raises(CardTokenError, match="unknown_key"):
        verifier(cards).verify(first["token"])
    with pytest.raises(CardError):
        cards.issue_card("P1", 0)


def test_consent_is_idempotent_and_withdrawal_erases_templates(
    tmp_path: Path, setup: tuple[Readers, Cards]
) -> None:
    readers, cards = setup
    v = np.random.default_rng(0).standard_normal(128)
    readers.put_templates("P1", "dlib-resnet@1", [list(v)])
    a = cards.record_consent(
        "P1",
        purpose="face_gate",
        text_version="vi-2026-01",
        granted=True,
        librarian="lib01",
        idempotency_key="desk-01:42",
    )
    b = cards.record_consent(
        "P1",
        purpose="face_gate",
        text_version="vi-2026-01",
        granted=True,
        librarian="lib01",
        idempotency_key="desk-01:42",
    )
    assert a["id"] == b["id"] and cards.has_biometric_consent("P1")
    # a gate syncs, then the reader withdraws consent
    store = Store(tmp_path / "gate.sqlite3")
    gate = GallerySync(store, GalleryStore(store, load_or_create_key(tmp_path / "g.key")))
    d1 = readers.delta("tv-tinh", 0)
    assert (
        d1 is not None and gate.apply(d1) and gate.templates.load("dlib-resnet@1", 128)[0] == ["P1"]
    )
    assert cards.withdraw("P1") == 1 and not cards.has_biometric_consent("P1")
    assert readers.get("P1")["templates"] == {}
    d2 = readers.delta("tv-tinh", d1.version)
    assert d2 is not None and d2.upserts[0].templates == []
    assert gate.apply(d2) and gate.templates.load("dlib-resnet@1", 128)[0] == []


def test_card_keys_travel_with_the_gallery(tmp_path: Path, setup: tuple[Readers, Cards]) -> None:
    readers, cards = setup
    store = Store(tmp_path / "gate.sqlite3")
    gate = GallerySync(store, GalleryStore(store, load_or_create_key(tmp_path / "g.key")))
    d1 = readers.delta("tv-tinh", 0)
    assert d1 is not None and gate.apply(d1)
    kid = cards.rotate()  # a key change moves every site's gallery on
    d2 = readers.delta("tv-tinh", d1.version)
    assert d2 is not None and d2.upserts == [] and kid in d2.card_keys
    assert gate.apply(d2) and kid in gate.card_keys()


def test_cards_and_consent_api(tmp_path: Path, setup: tuple[Readers, Cards]) -> None:
    readers, cards = setup
    cfg = CentralConfig(data_dir=tmp_path)
    api = TestClient(create_app(cfg, readers.repo, None, CentralMetrics(), readers, cards))
    token = Tokens(readers.repo.engine).create("librarian-1", "librarian")[1]
    api.headers["Authorization"] = f"Bearer {token}"
    r = api.post("/api/v1/readers/P1/cards", json={"valid_days": 365})
    assert r.status_code == 201 and r.json()["token"].startswith("BE1.")
    assert api.post("/api/v1/readers/P404/cards", json={}).status_code == 404
    keys = api.get("/api/v1/card-keys").json()
    assert r.json()["kid"] in keys
    c = api.post(
        "/api/v1/readers/P1/consents",
        json={"text_version": "vi-2026-01", "granted": True, "librarian": "lib01"},
    )
    assert c.status_code == 201 and c.json()["granted"] is True
    assert len(api.get("/api/v1/readers/P1/consents").json()) == 1
    assert api.post("/api/v1/readers/P1/consents/withdraw").json() == {"withdrawn": 1}
    assert (
        api.post(
            "/api/v1/readers/P1/consents",
            json={"text_version": "x", "granted": True, "librarian": "l", "purpose": "ads"},
        ).status_code
        == 422
    )
    assert api.post("/api/v1/card-keys/rotate").status_code == 403  # keys are IT's
    api.headers["Authorization"] = f"Bearer {Tokens(readers.repo.engine).create('it', 'admin')[1]}"
    rot = api.post("/api/v1/card-keys/rotate")
    assert (
        rot.status_code == 201
        and api.delete(f"/api/v1/card-keys/{rot.json()['active']}").status_code == 409
    )


def test_consent_keys_are_checked_and_bodies_are_bounded(
    tmp_path: Path, setup: tuple[Readers, Cards]
) -> None:
    readers, cards = setup
    readers.upsert("P2", site="tv-tinh", display_name="Lê Thị Hoa")
    cfg = CentralConfig(data_dir=tmp_path)
    api = TestClient(create_app(cfg, readers.repo, None, CentralMetrics(), readers, cards))
    api.headers["Authorization"] = (
        f"Bearer {Tokens(readers.repo.engine).create('l', 'librarian')[1]}"
    )
    body = {"text_version": "vi-2026-1", "granted": True, "librarian": "lan"}
    for bad in ("", " ", "khóa"):  # empty once gave 500 for ever after
        r = api.post("/api/v1/readers/P1/consents", json={**body, "idempotency_key": bad})
        assert r.status_code == 422, bad
    first = api.post("/api/v1/readers/P1/consents", json={**body, "idempotency_key": "k-1"})
    again = api.post("/api/v1/readers/P1/consents", json={**body, "idempotency_key": "k-1"})
    assert (
        first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    )
    other = api.post("/api/v1/readers/P2/consents", json={**body, "idempotency_key": "k-1"})
    assert other.status_code == 409  # not the first reader's record under another's name
    assert len(api.get("/api/v1/readers/P1/consents").json()) == 1
    assert api.get("/api/v1/readers/P2/consents").json() == []
    big = b'{"display_name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = api.put("/api/v1/readers/P3", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and len(r.content) < 200

    def chunks() -> Any:  # no Content-Length: counted as it streams
        for _ in range(40):
            yield b"x" * 65536

    r = api.put(
        "/api/v1/readers/P3", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413


def test_many_rotations_in_a_day_never_reuse_a_key_id(setup: tuple[Readers, Cards]) -> None:
    """Found by schemathesis: 16 random bits per day collided after a few hundred rotations
    (a 500 from a UNIQUE constraint)."""
    _, cards = setup
    kids = {cards.rotate() for _ in range(1000)}
    assert len(kids) == 1000 and all(len(k) <= 32 for k in kids)

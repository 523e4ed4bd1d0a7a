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


def test_each_face_purpose_is_its_own_consent_and_each_kiosk_keeps_only_its_own(
    tmp_path: Path, setup: tuple[Readers, Cards]
) -> None:
    readers, cards = setup
    readers.upsert("P2", site="tv-tinh", display_name="Trần Thị Bình")
    for pid in ("P1", "P2"):
        readers.put_templates(pid, "dlib-resnet@1", [list(np.random.default_rng(1).random(128))])
        cards.record_consent(
            pid, purpose="face_gate", text_version="vi-1", granted=True, librarian="lib"
        )
    cards.record_consent(
        "P2", purpose="face_selfcheck", text_version="vi-1", granted=True, librarian="lib"
    )

    def kiosk(name: str, purpose: str) -> GallerySync:
        store = Store(tmp_path / f"{name}.sqlite3")
        key = load_or_create_key(tmp_path / f"{name}.key")
        return GallerySync(store, GalleryStore(store, key), purpose=purpose)

    gate, selfcheck = kiosk("gate", "face_gate"), kiosk("sc", "face_selfcheck")
    d1 = readers.delta("tv-tinh", 0)
    assert d1 is not None
    assert {r.patron_id: r.face_purposes for r in d1.upserts} == {
        "P1": ["face_gate"],
        "P2": ["face_gate", "face_selfcheck"],
    }
    assert gate.apply(d1) and selfcheck.apply(d1)
    assert sorted(gate.templates.load("dlib-resnet@1", 128)[0]) == ["P1", "P2"]
    assert selfcheck.templates.load("dlib-resnet@1", 128)[0] == ["P2"]  # only who agreed
    # P2 withdraws the gate consent only: the gate drops her face, the self-check keeps it
    assert cards.withdraw("P2", "face_gate") == 1
    assert readers.get("P2")["templates"] != {}
    d2 = readers.delta("tv-tinh", d1.version)
    assert d2 is not None and gate.apply(d2) and selfcheck.apply(d2)
    assert gate.templates.load("dlib-resnet@1", 128)[0] == ["P1"]
    assert selfcheck.templates.load("dlib-resnet@1", 128)[0] == ["P2"]
    # and the last face purpose withdrawn: erased at central and everywhere
    assert cards.withdraw("P2", "face_selfcheck") == 1
    assert readers.get("P2")["templates"] == {}
    d3 = readers.delta("tv-tinh", d2.version)
    assert d3 is not None and selfcheck.apply(d3)
    assert selfcheck.templates.load("dlib-resnet@1", 128)[0] == []


def test_a_self_check_finds_the_reader_by_card_qr_and_cccd_qr_a_gate_keeps_no_hash(
    tmp_path: Path, setup: tuple[Readers, Cards]
) -> None:
    from sqlalchemy import insert

    from biblioedge.agent.citizen import citizen_ref
    from biblioedge.agent.config import validate_config
    from biblioedge.agent.selfcheck.build import card_identifier, cccd_identifier
    from biblioedge.fleet.db import reader_profiles
    from biblioedge.protocol import utc_now

    readers, cards = setup
    pepper = tmp_path / "citizen.pepper"
    pepper.write_bytes(b"p" * 32)
    ref = citizen_ref(b"p" * 32, "001090012345")
    with readers.repo.engine.begin() as conn:  # as a desk registration leaves it
        conn.execute(
            insert(reader_profiles).values(
                patron_id="P1", citizen_ref=ref, nonce=b"n" * 12, sealed=b"s", updated_at=utc_now()
            )
        )
    card = cards.issue_card("P1", 30)
    readers.upsert("P1", site="tv-tinh", display_name="Nguyễn Văn An")  # the change is logged

    def kiosk(name: str, keep: bool) -> GallerySync:
        store = Store(tmp_path / f"{name}.sqlite3")
        key = load_or_create_key(tmp_path / f"{name}.key")
        return GallerySync(store, GalleryStore(store, key), keep_citizen_ref=keep)

    selfcheck, gate = kiosk("sc", True), kiosk("gate", False)
    delta = readers.delta("tv-tinh", 0)
    assert delta is not None and delta.upserts[0].citizen_ref == ref
    assert selfcheck.apply(delta) and gate.apply(delta)
    assert gate.reader(citizen_ref=ref) is None  # the gate has no use for it: not kept
    cfg = validate_config(
        {
            "role": "selfcheck",
            "site": "tv-tinh",
            "device_id": "sc-01",
            "data_dir": str(tmp_path),
            "selfcheck": {
                "ils": "sip2://kiosk:kiosk@127.0.0.1:6001",
                "pepper_file": str(pepper),
            },
        }
    )
    by_card = card_identifier(selfcheck, cfg)
    assert by_card(card["token"]) == "P1"
    assert by_card(card["token"][:-4] + "AAAA") is None  # a forged signature
    by_cccd = cccd_identifier(selfcheck, cfg)
    qr = "001090012345|123456789|Nguyễn Văn An|15031990|Nam|Số 1 Tràng Tiền, Hà Nội|20052021"
    assert by_cccd(qr) == "P1"
    assert by_cccd(qr.replace("001090012345", "001090099999")) is None  # not registered
    assert by_cccd("not a cccd") is None

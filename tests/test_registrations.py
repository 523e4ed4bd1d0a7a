"""Desk registrations at central: applied with the event, answered in the ack, exactly once."""

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sqlalchemy import select

from biblioedge.cardtoken import CardVerifier, load_public_key
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.db import events, quarantine, reader_profiles, registrations
from biblioedge.fleet.readers import Readers, UnknownReader
from biblioedge.fleet.registrations import REGISTRATION, Registrar
from biblioedge.fleet.repo import Incoming, Repo
from biblioedge.keys import load_or_create_key
from biblioedge.protocol import uuid7

SITE, DESK = "tv-tinh", "desk-1"


class Central:
    def __init__(self, tmp: Path) -> None:
        self.repo = Repo(f"sqlite:///{tmp / 'c.sqlite3'}")
        self.repo.migrate()
        self.repo.register_device(DESK, SITE, "desk")
        self.readers = Readers(self.repo, load_or_create_key(tmp / "t.key"))
        self.cards = Cards(self.readers, load_or_create_key(tmp / "c.key"))
        self.registrar = Registrar(self.readers, self.cards)
        self.repo.effects[REGISTRATION] = self.registrar
        self.seq = 0

    def event(self, payload: dict[str, Any], etype: str = REGISTRATION) -> dict[str, Any]:
        self.seq += 1
        return {
            "event_id": uuid7(),
            "device_id": DESK,
            "site": SITE,
            "type": etype,
            "seq": self.seq,
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": payload,
        }

    def send(self, *evs: dict[str, Any]) -> Any:
        body = {"batch_id": str(uuid.uuid4()), "device_id": DESK, "events": list(evs)}
        result = self.repo.ingest([Incoming(SITE, DESK, "events", orjson.dumps(body))], True)
        (ack,) = result.acks
        return ack, result


def template(seed: int) -> str:
    v = np.random.default_rng(seed).standard_normal(128).astype("<f4")
    return base64.b64encode((v / np.linalg.norm(v)).astype("<f4").tobytes()).decode()


def registration(ref: str = "a" * 64, granted: bool = True, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "registration_id": uuid7(),
        "citizen_ref": ref,
        "display_name": "Nguye\u0302\u0303n Thị Bình",  # decomposed: central stores NFC
        "profile": {"date_of_birth": "1990-05-17", "gender": "Nữ"},
        "consent": {
            "purpose": "face_gate",
            "granted": granted,
            "text_version": "vi-2026-1",
            "librarian": "lan",
        },
        "check": {"method": "chip_face", "passive_auth": "ok", "face_score": 0.97},
        "card_valid_days": 365,
    }
    if granted:
        doc["face"] = {"model": "dlib-resnet@1", "templates": [template(1), template(2)]}
    doc.update(over)
    return doc


@pytest.fixture
def central(tmp_path: Path) -> Central:
    return Central(tmp_path)


def test_registration_creates_reader_card_consent_templates(central: Central) -> None:
    ev = central.event(registration())
    ack, result = central.send(ev)
    answer = ack.results[ev["event_id"]]
    pid = answer["patron_id"]
    assert pid == "BE0000001" and answer["display_name"] == "Nguyễn Thị Bình"
    assert answer["templates"] == 2 and not answer["returning"]
    assert result.changed_sites == {SITE}
    keys = {k: load_public_key(v) for k, v in central.cards.public_keys().items()}
    assert CardVerifier(keys).verify(answer["card"]["token"]).pid == pid
    reader = central.readers.get(pid)
    assert reader["site"] == SITE and reader["templates"] == {"dlib-resnet@1": 2}
    (consent,) = central.cards.consents_of(pid)
    assert consent["granted"] and consent["librarian"] == "lan"
    assert consent["idempotency_key"] == ev["payload"]["registration_id"]
    with central.repo.engine.connect() as conn:
        assert central.registrar.profile(conn, pid) == {
            "date_of_birth": "1990-05-17",
            "gender": "Nữ",
        }
        sealed = conn.execute(select(reader_profiles.c.sealed)).scalar_one()
        stored = conn.execute(select(events.c.payload)).scalar_one()
    assert b"1990" not in sealed  # the profile is sealed at rest
    # the event log keeps the audit trail, not the person or the biometrics
    assert stored["patron_id"] == pid and stored["templates"] == 2
    text = orjson.dumps(stored).decode()
    assert "Bình" not in text and "1990" not in text and template(1) not in text
    delta = central.readers.delta(SITE, 0)
    assert delta is not None and [u.patron_id for u in delta.upserts] == [pid]
    assert len(delta.upserts[0].templates) == 2


def test_the_card_goes_to_the_desk_once_and_central_keeps_no_bearer_token(
    central: Central,
) -> None:
    reg = registration()
    ev = central.event(reg)
    first, _ = central.send(ev)
    answer = first.results[ev["event_id"]]
    assert answer["card"]["token"] and answer["display_name"]
    pid = answer["patron_id"]
    again, result = central.send(ev)  # lost ack: the same event again
    expected = {"registration_id": reg["registration_id"], "patron_id": pid}
    assert again.results == {ev["event_id"]: {**expected, "status": "already_delivered"}}
    assert result.duplicates == 1 and again.stored == [ev["event_id"]]
    other = central.event(reg)  # the desk re-emitted it under a new event id
    third, _ = central.send(other)
    assert third.results[other["event_id"]] == {**expected, "status": "already_delivered"}
    with central.repo.engine.connect() as conn:
        (row,) = conn.execute(select(registrations)).all()
    assert answer["card"]["token"] not in orjson.dumps(row.result).decode()
    assert row.result["card"]["jti"] == answer["card"]["jti"]
    assert len(central.cards.consents_of(pid)) == 1


def test_returning_reader_keeps_the_number_and_old_card_is_revoked(central: Central) -> None:
    ev1 = central.event(registration(ref="b" * 64))
    a1, _ = central.send(ev1)
    first = a1.results[ev1["event_id"]]
    ev2 = central.event(registration(ref="b" * 64, granted=False))
    a2, _ = central.send(ev2)
    second = a2.results[ev2["event_id"]]
    assert second["patron_id"] == first["patron_id"] and second["returning"]
    assert second["card"]["jti"] != first["card"]["jti"]
    delta = central.readers.delta(SITE, 0)
    assert delta is not None and first["card"]["jti"] in delta.revoked_cards
    # no consent this time: the earlier templates are gone
    assert central.readers.get(first["patron_id"])["templates"] == {}
    # a block the library set survives a renewal at the desk
    central.readers.upsert(first["patron_id"], site=SITE, display_name="x", status="blocked")
    ev4 = central.event(registration(ref="b" * 64))
    a4, _ = central.send(ev4)
    assert a4.results[ev4["event_id"]]["patron_id"] == first["patron_id"]
    assert central.readers.get(first["patron_id"])["status"] == "blocked"
    ev3 = central.event(registration(ref="c" * 64))
    a3, _ = central.send(ev3)
    assert a3.results[ev3["event_id"]]["patron_id"] == "BE0000002"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"face": {"model": "m", "templates": [template(3)]}, "granted": False}, "no_consent"),
        ({"check": {"method": "chip_face", "passive_auth": "failed"}}, "forgery_suspected"),
        ({"face": {"model": "m", "templates": ["not base64!"]}}, "invalid_registration"),
        (
            {"face": {"model": "m", "templates": [base64.b64encode(bytes(64)).decode()]}},
            "invalid_registration",
        ),
        ({"citizen_ref": "1234"}, "invalid_registration"),
        ({"display_name": "   "}, "invalid_registration"),
    ],
)
def test_refused_registrations_write_nothing(
    central: Central, change: dict[str, Any], reason: str
) -> None:
    granted = change.pop("granted", True)
    reg = registration(granted=granted)
    reg.update(change)
    ev = central.event(reg)
    ack, _ = central.send(ev)
    assert ack.rejected == {ev["event_id"]: reason} and not ack.results
    with central.repo.engine.connect() as conn:
        assert conn.execute(select(registrations)).all() == []
        assert conn.execute(select(events)).all() == []
        raw = conn.execute(select(quarantine.c.raw)).scalar_one()
    assert "Bình" not in raw and "1990" not in raw  # quarantined without the personal data
    with pytest.raises(UnknownReader):
        central.readers.get("BE0000001")


def test_override_of_failed_passive_auth_is_accepted_and_recorded(central: Central) -> None:
    check = {
        "method": "chip_face",
        "passive_auth": "failed",
        "override_by": "lan",
        "override_reason": "passive authentication failed",
    }
    ev = central.event(registration(check=check))
    ack, _ = central.send(ev)
    assert ev["event_id"] in ack.results
    with central.repo.engine.connect() as conn:
        stored = conn.execute(select(events.c.payload)).scalar_one()
    assert stored["check"]["override_by"] == "lan"


def test_erasure_removes_profile_and_registration(central: Central) -> None:
    ev = central.event(registration())
    ack, _ = central.send(ev)
    pid = ack.results[ev["event_id"]]["patron_id"]
    central.readers.erase(pid)
    with central.repo.engine.connect() as conn:
        assert conn.execute(select(reader_profiles)).all() == []
        assert conn.execute(select(registrations)).all() == []
    # the same citizen registering again is a new reader
    ev2 = central.event(registration())
    ack2, _ = central.send(ev2)
    assert not ack2.results[ev2["event_id"]]["returning"]


def test_sealed_registrations_open_only_as_their_desks_event(central: Central) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from biblioedge.protocol import registration_context
    from biblioedge.provisioning.sealing import seal

    key = X25519PrivateKey.generate()
    central.registrar.seal_key = key

    def sealed(doc: dict[str, Any], device: str = DESK, rid: str | None = None) -> dict[str, Any]:
        rid = rid or doc["registration_id"]
        blob = seal(key.public_key(), orjson.dumps(doc), registration_context(device, rid))
        return {"registration_id": rid, "sealed": base64.b64encode(blob).decode()}

    good = registration()
    ack, _ = central.send(central.event(sealed(good)))
    assert ack.stored and ack.results[ack.stored[0]]["patron_id"].startswith("BE")
    copied = registration(ref="b" * 64)  # sealed for another desk, or another registration
    bad = [
        sealed(copied, device="desk-9"),
        sealed(copied, rid=uuid7()),
        {"registration_id": uuid7(), "sealed": "!!not base64"},
        {**sealed(registration(ref="c" * 64)), "display_name": "x"},
    ]
    ack, result = central.send(*[central.event(b) for b in bad])
    assert not ack.stored and not ack.results
    # a blob that does not open as this desk's event is evidence, not a typo: flagged
    assert sorted(ack.rejected.values()) == sorted(
        ["seal_invalid", "seal_invalid", "invalid_registration", "invalid_registration"]
    )
    assert result.security == {"seal_invalid": 2} and len(result.cases) == 1
    unsealed = central.event(registration(ref="d" * 64))
    central.registrar.require_sealed = True  # central runs with certificates
    ack, result = central.send(unsealed)
    assert ack.rejected == {unsealed["event_id"]: "unsealed_registration"} and not ack.results
    with central.repo.engine.connect() as conn:
        kept = [r.raw for r in conn.execute(select(quarantine))]
    assert all("sealed" not in k or "redacted" in k for k in kept)


def test_a_registration_whose_templates_do_not_fit_the_model_is_refused_whole(
    central: Central,
) -> None:
    central.readers.upsert("P1", site="tv-tinh", display_name="Earlier")
    central.readers.put_templates("P1", "dlib-resnet@1", [[0.1] * 128])
    short = base64.b64encode(np.ones(64, "<f4").tobytes()).decode()
    reg = registration()
    reg["face"]["templates"] = [short]
    ev = central.event(reg)
    ack, _ = central.send(ev)
    assert ack.rejected == {ev["event_id"]: "invalid_registration"}
    with central.repo.engine.connect() as conn:
        assert conn.execute(select(registrations)).all() == []

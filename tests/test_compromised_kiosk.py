"""A stolen kiosk must not own the library (issue 19): what each role may say to ingest.

The table's own tests, central's ingest against a registry, and on real mosquitto with TLS a
legitimate certificate of each role trying every event type its role may not send, state
reports claiming another role or site, another desk's registration and event ids, and an
unsealed registration from a gate: all refused, counted, flagged, while honest kiosks' events
are still acknowledged.
"""

from __future__ import annotations

import base64
import threading
import typing
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import select

from biblioedge.demo.launch import CentralProcess, wait_until
from biblioedge.fleet import authz
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.dashboard import attention, kiosks
from biblioedge.fleet.db import devices, registrations
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.registrations import REGISTRATION, Registrar
from biblioedge.fleet.repo import Incoming, IngestResult, Repo
from biblioedge.keys import load_or_create_key
from biblioedge.protocol import (
    EVENT_TYPES,
    GALLERY_ROLES,
    ProtocolError,
    ReportedState,
    Role,
    registration_context,
    uuid7,
)
from biblioedge.provisioning.broker import BrokerProcess, mosquitto_path
from biblioedge.provisioning.enroll import enroll
from biblioedge.provisioning.sealing import load_x25519_public, seal

SITE = "tv-tinh"
#: the roles this build can enroll (the exit gate's arrives with its own lane)
ROLES = [r for r in ("gate", "selfcheck", "desk", "exitgate") if r in typing.get_args(Role)]


# -- the table ---------------------------------------------------------------------------


def test_every_event_type_central_knows_belongs_to_some_role() -> None:
    allowed = set().union(*authz.EVENTS_BY_ROLE.values())
    assert allowed >= EVENT_TYPES
    device = {t for t in EVENT_TYPES if t.startswith("device.")}
    for role, types in authz.EVENTS_BY_ROLE.items():
        assert device <= types, role  # every role reports on itself


def test_each_role_says_only_its_own_things() -> None:
    assert authz.may_send("gate", "gate.decision")
    assert authz.may_send("exitgate", "exit.alarm") and authz.may_send("exitgate", "exit.passages")
    assert authz.may_send("desk", REGISTRATION) and authz.may_send("selfcheck", "circ.checkout")
    for role in ("gate", "selfcheck", "exitgate"):  # what the stolen gate did in issue 19
        for t in (REGISTRATION, "reader.registered", "card.issued", "consent.recorded"):
            assert not authz.may_send(role, t), (role, t)
    assert not authz.may_send("gate", "circ.checkout")
    assert not authz.may_send("desk", "gate.decision")
    assert not authz.may_send("kiosk-of-the-future", "device.started")
    with pytest.raises(authz.Refused) as err:
        authz.check_event("gate", REGISTRATION)
    assert err.value.reason == "role_forbidden"
    authz.check_event(None, REGISTRATION)  # no certificate identity: nothing to authorize


def _state(role: str, **over: Any) -> ReportedState:
    return ReportedState.model_validate(
        {"device_id": "k-01", "site": SITE, "role": role, "online": True, **over}
    )


def test_every_state_field_is_in_the_table() -> None:
    """A field added to ReportedState must be given to the roles that report it, or every
    kiosk setting it would be refused."""
    assert set(ReportedState.model_fields) == set().union(*authz.STATE_FIELDS_BY_ROLE.values())
    assert set(authz.STATE_FIELDS_BY_ROLE) == set(authz.EVENTS_BY_ROLE) >= set(ROLES)


def test_state_reports_are_judged_by_the_registry() -> None:
    for role in ("gate", "selfcheck", "desk"):
        authz.check_state(role, SITE, _state(role))
    for role in GALLERY_ROLES:  # the gallery holders report their version
        authz.check_state(role, SITE, _state(role, gallery_version=7))
    cases = [
        ("gate", SITE, _state("desk"), "role_mismatch"),
        ("gate", "xa-b", _state("gate"), "site_mismatch"),
        ("desk", SITE, _state("desk", gallery_version=1), "state_field_forbidden"),
    ]
    for role, site, state, reason in cases:
        with pytest.raises(authz.Refused) as err:
            authz.check_state(role, site, state)
        assert err.value.reason == reason
    many = _state("gate", components={f"c{i}": "up" for i in range(100)})
    with pytest.raises(ProtocolError, match="state_oversized"):
        authz.check_state("gate", SITE, many)


def test_gallery_resends_are_a_small_budget_per_device() -> None:
    limit = authz.GalleryResends(burst=2, every_s=30.0)
    assert [limit.allow("gate-01", now=100.0) for _ in range(3)] == [True, True, False]
    assert limit.allow("gate-02", now=100.0)  # another device has its own budget
    assert not limit.allow("gate-01", now=110.0)
    assert limit.allow("gate-01", now=131.0)  # one more every 30 s


def test_a_flood_of_refusals_is_one_case_per_device_and_reason() -> None:
    cases = authz.SecurityCases(window_s=600.0)
    assert cases.due("gate-01", "role_forbidden")
    assert not any(cases.due("gate-01", "role_forbidden") for _ in range(1000))
    assert cases.due("gate-01", "role_mismatch") and cases.due("gate-02", "role_forbidden")


# -- central's ingest against its registry ---------------------------------------------------


class Central:
    """Central's repository with the registration effect, devices registered as enrolled."""

    def __init__(self, tmp: Path) -> None:
        self.repo = Repo(f"sqlite:///{tmp / 'c.sqlite3'}")
        self.repo.migrate()
        self.repo.require_role = True
        readers = Readers(self.repo, load_or_create_key(tmp / "t.key"))
        self.registrar = Registrar(readers, Cards(readers, load_or_create_key(tmp / "c.key")))
        self.repo.effects[REGISTRATION] = self.registrar
        self.seq = 0
        for device, role in (("gate-01", "gate"), ("desk-01", "desk"), ("desk-02", "desk")):
            self.repo.register_device(device, SITE, role)

    def event(self, device: str, etype: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        return {
            "event_id": uuid7(),
            "device_id": device,
            "site": SITE,
            "type": etype,
            "seq": self.seq,
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": payload,
        }

    def send(self, device: str, *evs: dict[str, Any]) -> tuple[Any, IngestResult]:
        body = {"batch_id": str(uuid.uuid4()), "device_id": device, "events": list(evs)}
        result = self.repo.ingest([Incoming(SITE, device, "events", orjson.dumps(body))], False)
        (ack,) = result.acks
        return ack, result

    def state(self, device: str, doc: dict[str, Any] | bytes) -> IngestResult:
        raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        return self.repo.ingest([Incoming(SITE, device, "state", raw)], False)

    def role(self, device: str) -> str | None:
        with self.repo.engine.connect() as conn:
            return conn.scalar(select(devices.c.role).where(devices.c.device_id == device))


def registration_doc() -> dict[str, Any]:
    return {
        "registration_id": uuid7(),
        "citizen_ref": uuid.uuid4().hex * 2,
        "display_name": "Trần Văn An",
        "consent": {"granted": False, "text_version": "vi-2026-1", "librarian": "lan"},
        "check": {"method": "qr_librarian"},
        "card_valid_days": 365,
    }


@pytest.fixture
def ingest(tmp_path: Path) -> Central:
    return Central(tmp_path)


def test_a_gate_sending_what_it_may_not_stores_nothing_and_raises_one_case(ingest: Central) -> None:
    forbidden = sorted(EVENT_TYPES - authz.EVENTS_BY_ROLE["gate"])
    evs = [ingest.event("gate-01", t, {"patron_id": "P1"}) for t in forbidden]
    evs.append(ingest.event("gate-01", REGISTRATION, registration_doc()))
    honest = ingest.event("gate-01", "gate.decision", {"decision": "grant"})
    ack, result = ingest.send("gate-01", *evs, honest)
    assert ack.stored == [honest["event_id"]] and not ack.results
    assert set(ack.rejected.values()) == {"role_forbidden"} and len(ack.rejected) == len(evs)
    assert result.security == {"role_forbidden": len(evs)} and len(result.cases) == 1
    readers = ingest.registrar.readers  # no reader written for any branch (readers are the
    assert ingest.repo.stats()["events"] == 1  # library's: sites() lists the kiosks' sites too)
    assert all(readers.site_version(site) == 0 for site in readers.sites())
    again, result = ingest.send("gate-01", ingest.event("gate-01", "circ.checkout", {}))
    assert result.security == {"role_forbidden": 1} and result.cases == []  # rate-limited
    (case,) = ingest.repo.list_events(type_=authz.SECURITY_ATTENTION)[0]
    assert case["device_id"] == "gate-01" and case["payload"]["reason"] == "role_forbidden"
    shown = attention(ingest.repo, kiosks(ingest.repo), [])
    assert ("att_security", "gate-01") in [(kind, who) for kind, who, _ in shown]
    kept = [q["raw"] for q in ingest.repo.list_quarantine()]
    assert len(kept) == len(evs) + 1 and all('"redacted":true' in raw for raw in kept)
    assert not any("Trần" in raw for raw in kept)  # the forged reader is not kept either


def test_a_state_report_cannot_change_role_or_site(ingest: Central) -> None:
    base = {"device_id": "gate-01", "site": SITE, "role": "gate", "online": True}
    assert ingest.state("gate-01", base).refused == {}
    for doc, reason in (
        ({**base, "role": "desk"}, "role_mismatch"),
        ({**base, "site": "xa-b"}, "site_mismatch"),
        ({**base, "device_id": "desk-01"}, "device_mismatch"),
    ):
        result = ingest.state("gate-01", doc)
        assert result.refused == {reason: 1} and result.security == {reason: 1}, reason
    assert ingest.role("gate-01") == "gate"
    desk = {"device_id": "desk-01", "site": SITE, "role": "desk", "online": True}
    result = ingest.state("desk-01", {**desk, "gallery_version": 0})
    assert result.refused == {} and result.gallery_versions == []
    result = ingest.state("desk-01", {**desk, "gallery_version": 3})
    assert result.refused == {"state_field_forbidden": 1}
    # oversized and deeply nested reports: refused with a reason, nothing kept
    big = orjson.dumps({**base, "software": "x" * (authz.MAX_STATE_BYTES + 1)})
    deep: Any = "x"
    for _ in range(40):
        deep = {"a": deep}
    for raw, reason in (
        (big, "state_oversized"),
        (orjson.dumps({**base, "components": deep}), "too_deep"),
    ):
        assert ingest.state("gate-01", raw).refused == {reason: 1}
    reported = ingest.repo.get_device("gate-01")
    assert reported is not None and reported["reported"]["role"] == "gate"
    assert "x" * 100 not in orjson.dumps(reported["reported"]).decode()


def test_a_device_without_a_role_is_heard_only_once_the_registry_has_one(ingest: Central) -> None:
    ingest.repo.register_device("stray-01", SITE, None)
    body = {"batch_id": "b1", "device_id": "stray-01", "events": []}
    result = ingest.repo.ingest([Incoming(SITE, "stray-01", "events", orjson.dumps(body))], False)
    assert result.acks == [] and result.refused == {"role_unknown": 1}
    doc = {"device_id": "stray-01", "site": SITE, "role": "desk", "online": True}
    assert ingest.state("stray-01", doc).refused == {"role_unknown": 1}
    assert ingest.role("stray-01") is None
    ingest.repo.require_role = False  # a demo without certificates: its first report, once
    assert ingest.state("stray-01", doc).refused == {}
    assert ingest.state("stray-01", {**doc, "role": "gate"}).refused == {"role_mismatch": 1}
    assert ingest.role("stray-01") == "desk"


def test_registrations_are_bound_to_the_desk_that_made_them(ingest: Central) -> None:
    central_key = X25519PrivateKey.generate()
    ingest.registrar.seal_key = central_key
    ingest.registrar.require_sealed = True

    def sealed(doc: dict[str, Any], desk: str, key: Any = None) -> Any:
        rid = doc["registration_id"]
        key = key or central_key.public_key()
        blob = seal(key, orjson.dumps(doc), registration_context(desk, rid))
        return {"registration_id": rid, "sealed": base64.b64encode(blob).decode()}

    doc = registration_doc()
    first = ingest.event("desk-01", REGISTRATION, sealed(doc, "desk-01"))
    ack, _ = ingest.send("desk-01", first)
    answer = ack.results[first["event_id"]]
    assert answer["card"]["token"] and answer["display_name"] == "Trần Văn An"
    # desk-02 (stolen) replays desk-01's event id, its registration id under a new event,
    # a blob desk-01 sealed for itself, one sealed to another key, and an unsealed one
    wrong_key = X25519PrivateKey.generate().public_key()
    attempts = {
        "foreign_event_id": {**first, "device_id": "desk-02"},
        "foreign_registration": ingest.event("desk-02", REGISTRATION, sealed(doc, "desk-02")),
        "seal_invalid": ingest.event(
            "desk-02", REGISTRATION, sealed(registration_doc(), "desk-01")
        ),
        "unsealed_registration": ingest.event("desk-02", REGISTRATION, registration_doc()),
    }
    other_key = ingest.event(
        "desk-02", REGISTRATION, sealed(registration_doc(), "desk-02", wrong_key)
    )
    ack, result = ingest.send("desk-02", *attempts.values(), other_key)
    assert not ack.stored and not ack.results
    assert ack.rejected == {e["event_id"]: why for why, e in attempts.items()} | {
        other_key["event_id"]: "seal_invalid"
    }
    assert result.security == dict.fromkeys(attempts, 1) | {"seal_invalid": 2}
    assert ingest.registrar.readers.sites() == [SITE]
    # desk-01's own resend (a lost ack) gets the patron number, not the card again
    ack, _ = ingest.send("desk-01", first)
    assert ack.results[first["event_id"]] == {
        "registration_id": doc["registration_id"],
        "patron_id": answer["patron_id"],
        "status": "already_delivered",
    }
    with ingest.repo.engine.connect() as conn:
        rows = conn.execute(select(registrations.c.result)).scalars().all()
    assert len(rows) == 1 and answer["card"]["token"] not in orjson.dumps(rows[0]).decode()
    assert ingest.repo.stats()["events"] == 1  # only desk-01's registration


# -- real mosquitto with TLS ---------------------------------------------------------------


class Kiosk:
    """A kiosk's own certificate and key in a hand-driven MQTT client: what a thief holds."""

    def __init__(self, port: int, ident: Path, device: str, site: str) -> None:
        self.device, self.site = device, site
        self.acks: dict[str, dict[str, Any]] = {}
        self.subscribed = threading.Event()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"agent-{device}", protocol=mqtt.MQTTv5
        )
        self.c.tls_set(
            ca_certs=str(ident / "ca.crt"),
            certfile=str(ident / "device.crt"),
            keyfile=str(ident / "device.key"),
        )
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *_a: self.subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe(f"be/{site}/{device}/ack", qos=1)
        assert self.subscribed.wait(20), f"{device} could not subscribe"
        self.seq = 0

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        body = orjson.loads(base64.b64decode(orjson.loads(msg.payload)["body"]))
        self.acks[body["batch_id"]] = body

    def event(self, etype: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        return {
            "event_id": uuid7(),
            "device_id": self.device,
            "site": self.site,
            "type": etype,
            "seq": self.seq,
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": payload,
        }

    def send(self, *evs: dict[str, Any]) -> dict[str, Any]:
        batch = {"v": 1, "batch_id": uuid7(), "device_id": self.device, "events": list(evs)}
        self.c.publish(f"be/{self.site}/{self.device}/events", orjson.dumps(batch), qos=1)
        wait_until(lambda: batch["batch_id"] in self.acks, 30, what=f"ack of {self.device}")
        return self.acks[batch["batch_id"]]

    def state(self, **over: Any) -> None:
        doc = {"device_id": self.device, "site": self.site, "online": True, **over}
        self.c.publish(f"be/{self.site}/{self.device}/state", orjson.dumps(doc), qos=1)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _enrolled(central: CentralProcess, tmp: Path, device: str, role: str) -> dict[str, Any]:
    token = central.enrollment_token(device, SITE, role)
    return enroll(central.url, token, tmp / device, tmp / device / "agent.toml")


def _cases(central: CentralProcess) -> dict[str, set[str]]:
    with central.client() as api:
        rows = api.get("/events", params={"type": authz.SECURITY_ATTENTION, "limit": 500})
    out: dict[str, set[str]] = {}
    for e in rows.json()["items"]:
        out.setdefault(e["device_id"], set()).add(e["payload"]["reason"])
    return out


def _stored_types(central: CentralProcess, device: str) -> set[str]:
    with central.client() as api:
        rows = api.get("/events", params={"device_id": device, "limit": 1000}).json()["items"]
    return {e["type"] for e in rows} - {authz.SECURITY_ATTENTION}


@pytest.mark.skipif(mosquitto_path() is None, reason="needs mosquitto")
@pytest.mark.integration
def test_stolen_certificates_of_every_role_are_refused_and_flagged(
    tmp_path: Path, make_agent: Any, central: CentralProcess, broker: BrokerProcess
) -> None:
    honest = make_agent("gate-01", simulator={"enabled": True, "rate_per_s": 5.0})
    honest.start()
    names = {role: f"{role}-09" for role in ROLES} | {"thief": "desk-08"}
    bundles = {
        who: _enrolled(central, tmp_path, device, "desk" if who == "thief" else who)
        for who, device in names.items()
    }
    kiosks = {
        who: Kiosk(broker.port, tmp_path / device / "identity", device, SITE)
        for who, device in names.items()
    }
    try:
        # every role, every event type it may not send: refused, nothing stored, flagged
        for role in ROLES:
            kiosk = kiosks[role]
            forbidden = sorted(EVENT_TYPES - authz.EVENTS_BY_ROLE[role])
            ack = kiosk.send(*[kiosk.event(t, {"patron_id": "P000001"}) for t in forbidden])
            assert ack["stored"] == [] and ack["results"] == {}, role
            assert set(ack["rejected"].values()) == {"role_forbidden"}, role
            assert len(ack["rejected"]) == len(forbidden), role
            ok = kiosk.event("device.started", {})
            assert kiosk.send(ok)["stored"] == [ok["event_id"]], role  # still heard
        # the gate registers a reader of its own, unsealed (issue 19, 1)
        gate = kiosks["gate"]
        forged = gate.event(REGISTRATION, registration_doc())
        ack = gate.send(forged)
        assert ack["rejected"] == {forged["event_id"]: "role_forbidden"} and not ack["results"]
        # state reports claiming another role or site: refused, the registry unchanged
        gate.state(role="desk")
        gate.state(role="gate", site="xa-b")
        wait_until(
            lambda: {"role_mismatch", "site_mismatch"} <= _cases(central).get("gate-09", set()),
            30,
            what="the state claims flagged",
        )
        with central.client() as api:
            assert api.get("/devices/gate-09").json()["role"] == "gate"
        # the honest desk registers a reader, sealed to central, for itself
        desk, thief = kiosks["desk"], kiosks["thief"]
        central_key = load_x25519_public(bundles["desk"]["seal_key"])

        def sealed_by_desk(doc: dict[str, Any]) -> dict[str, Any]:
            rid = doc["registration_id"]
            blob = seal(central_key, orjson.dumps(doc), registration_context("desk-09", rid))
            return {"registration_id": rid, "sealed": base64.b64encode(blob).decode()}

        doc = registration_doc()
        made = desk.event(REGISTRATION, sealed_by_desk(doc))
        answer = desk.send(made)["results"][made["event_id"]]
        assert answer["card"]["token"] and answer["display_name"] == "Trần Văn An"
        # another desk's thief: the desk's event id, its registration id, a blob the desk
        # sealed for itself (copied from its outbox), and an unsealed registration
        attempts = {
            "foreign_event_id": {**made, "device_id": "desk-08"},
            "foreign_registration": thief.event(REGISTRATION, made["payload"]),
            "seal_invalid": thief.event(REGISTRATION, sealed_by_desk(registration_doc())),
            "unsealed_registration": thief.event(REGISTRATION, registration_doc()),
        }
        ack = thief.send(*attempts.values())
        assert ack["stored"] == [] and ack["results"] == {}
        assert ack["rejected"] == {e["event_id"]: why for why, e in attempts.items()}
        # the desk's own resend (its ack was lost): the patron number, not the card again
        resent = desk.send(made)["results"][made["event_id"]]
        assert resent == {
            "registration_id": doc["registration_id"],
            "patron_id": answer["patron_id"],
            "status": "already_delivered",
        }
        # every thief is on IT's attention list, by name; the honest gate is not
        cases = _cases(central)
        for role in ROLES:
            assert "role_forbidden" in cases[names[role]], role
            assert _stored_types(central, names[role]) <= authz.EVENTS_BY_ROLE[role], role
        assert set(attempts) <= cases["desk-08"]
        assert "gate-01" not in cases  # the honest kiosk is not a case
        with central.client() as api:
            made_here = api.get("/events", params={"type": REGISTRATION}).json()["items"]
            assert [e["device_id"] for e in made_here] == ["desk-09"]  # no forged reader

            def honest_stored() -> int:
                params = {"device_id": "gate-01", "limit": 1000}
                return len(api.get("/events", params=params).json()["items"])

            # the honest gate's events are acknowledged throughout, none refused
            n0 = honest_stored()
            wait_until(lambda: honest_stored() > n0, 30, what="the honest gate still syncs")
            quarantined = api.get("/quarantine", params={"limit": 1000}).json()
        assert all(q["device_id"] != "gate-01" for q in quarantined)
    finally:
        for kiosk in kiosks.values():
            kiosk.close()


@pytest.mark.skipif(mosquitto_path() is None, reason="needs mosquitto")
@pytest.mark.integration
def test_a_gate_reporting_version_zero_again_and_again_gets_a_few_resends(
    tmp_path: Path, central: CentralProcess, broker: BrokerProcess
) -> None:
    bundle = _enrolled(central, tmp_path, "desk-09", "desk")
    _enrolled(central, tmp_path, "gate-09", "gate")
    desk = Kiosk(broker.port, tmp_path / "desk-09" / "identity", "desk-09", SITE)
    gate = Kiosk(broker.port, tmp_path / "gate-09" / "identity", "gate-09", SITE)
    deltas: list[bytes] = []
    gate.c.message_callback_add(f"be/{SITE}/gallery", lambda _c, _u, m: deltas.append(m.payload))
    gate.subscribed.clear()
    gate.c.subscribe(f"be/{SITE}/gallery", qos=1)
    try:
        assert gate.subscribed.wait(20)
        doc = registration_doc()  # the site's gallery now has a reader
        rid = doc["registration_id"]
        key = load_x25519_public(bundle["seal_key"])
        blob = seal(key, orjson.dumps(doc), registration_context("desk-09", rid))
        made = desk.event(
            REGISTRATION, {"registration_id": rid, "sealed": base64.b64encode(blob).decode()}
        )
        assert desk.send(made)["stored"] == [made["event_id"]]
        t0 = len(deltas)  # the gate has not reported yet: nothing was sent for it
        started = datetime.now(UTC)
        reports = 20
        with central.client() as api:

            def depth() -> Any:  # None until the first report is stored
                return (api.get("/devices/gate-09").json()["reported"] or {}).get("outbox_depth")

            for i in range(reports):  # one at a time: each report is a run of its own
                gate.state(role="gate", gallery_version=0, outbox_depth=i)
                wait_until(lambda i=i: depth() == i, 30, what=f"report {i} stored")
        # central publishes a run's deltas before that run's acks, in order: once this ack
        # is here, every delta the reports asked for has been delivered
        ok = gate.event("device.started", {})
        assert gate.send(ok)["stored"] == [ok["event_id"]]
        elapsed = (datetime.now(UTC) - started).total_seconds()
        budget = authz.GalleryResends()
        allowed = budget.burst + int(elapsed / budget.every_s) + 1
        resent = len(deltas) - t0
        print(f"{reports} reports of version 0: {resent} deltas resent (budget {allowed})")
        assert 1 <= resent <= allowed
    finally:
        desk.close()
        gate.close()


def test_a_resend_in_the_same_run_gets_the_card_too(ingest: Central) -> None:
    """An agent resends its outbox after an ack timeout; when central stores both copies in
    one run, both acks (published together, in any order) carry the card: whichever arrives
    first is the one the desk keeps."""
    first = ingest.event("desk-01", REGISTRATION, registration_doc())

    def message() -> Incoming:
        body = {"batch_id": uuid7(), "device_id": "desk-01", "events": [first]}
        return Incoming(SITE, "desk-01", "events", orjson.dumps(body))

    result = ingest.repo.ingest([message(), message()], False)
    a, b = (ack.results[first["event_id"]] for ack in result.acks)
    assert a == b and a["card"]["token"]
    later = ingest.repo.ingest([message()], False)
    assert "card" not in later.acks[0].results[first["event_id"]]  # a later run: once


def test_migrating_drops_the_card_tokens_kept_before(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import insert

    from biblioedge.fleet import migrations

    repo = Repo(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    with repo.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0008")
        card = {"jti": "c-1", "token": "BE1.secret", "kid": "k1", "expires_at": "2030-01-01"}
        conn.execute(
            insert(registrations).values(
                registration_id="r-00000001",
                patron_id="BE0000001",
                device_id="desk-01",
                result={"patron_id": "BE0000001", "card": card},
                created_at=datetime.now(UTC),
            )
        )
    repo.migrate()
    with repo.engine.connect() as conn:
        result = conn.execute(select(registrations.c.result)).scalar_one()
    assert result == {
        "patron_id": "BE0000001",
        "card": {k: v for k, v in card.items() if k != "token"},
    }

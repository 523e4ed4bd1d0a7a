"""Less personal data at central and on kiosks (issue 19, deliver 6): a viewer reads no names on
any route, the database keeps no name in clear (also after migrating one that did), gates are
sent and keep only the given name they greet with, self-checks keep none."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from biblioedge.agent.gallery_store import GalleryStore
from biblioedge.agent.gallery_sync import GallerySync
from biblioedge.agent.store import Store
from biblioedge.fleet import migrations
from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Tokens
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.central import open_identity
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.db import registrations
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.registrations import REGISTRATION, Registrar
from biblioedge.fleet.repo import Incoming, Repo
from biblioedge.names import greeting_name
from biblioedge.protocol import dumps, registration_context, uuid7
from biblioedge.provisioning.sealing import seal

SITE, DESK = "tv-tinh", "desk-01"
NAME = "Nguyễn Thị Bình"
FAMILY, GIVEN = "Nguyễn", "Bình"


def _template(seed: int) -> str:
    v = np.random.default_rng(seed).standard_normal(128).astype("<f4")
    return base64.b64encode((v / np.linalg.norm(v)).astype("<f4").tobytes()).decode()


class Central:
    """Central in process: its API (TestClient) and its ingest, on a SQLite file."""

    def __init__(self, tmp: Path, client: TestClient, repo: Repo, identity: Any) -> None:
        self.tmp, self.client, self.repo, self.identity = tmp, client, repo, identity
        self.seq = 0
        self.last_event: dict[str, Any] = {}

    def register(self, name: str = NAME, ref: str = "a" * 64) -> dict[str, Any]:
        """A desk registration as an enrolled desk sends it: sealed to central's key."""
        self.seq += 1
        rid = uuid7()
        inner = {
            "registration_id": rid,
            "citizen_ref": ref,
            "display_name": unicodedata.normalize("NFD", name),  # central stores NFC
            "profile": {"date_of_birth": "1990-05-17", "gender": "Nữ"},
            "consent": {
                "purpose": "face_gate",
                "granted": True,
                "text_version": "vi-2026-1",
                "librarian": "lan",
            },
            "face": {"model": "dlib-resnet@1", "templates": [_template(1), _template(2)]},
            "check": {"method": "chip_face", "passive_auth": "ok", "face_score": 0.97},
            "card_valid_days": 365,
        }
        blob = seal(
            self.identity.seal_key.public_key(),
            orjson.dumps(inner),
            registration_context(DESK, rid),
        )
        event = {
            "event_id": uuid7(),
            "device_id": DESK,
            "site": SITE,
            "type": REGISTRATION,
            "seq": self.seq,
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": {"registration_id": rid, "sealed": base64.b64encode(blob).decode()},
        }
        self.last_event = event
        ack = self.send(event)
        answer: dict[str, Any] = ack.results[event["event_id"]]
        return answer

    def send(self, *evs: dict[str, Any]) -> Any:
        body = {"batch_id": str(uuid.uuid4()), "device_id": DESK, "events": list(evs)}
        result = self.repo.ingest([Incoming(SITE, DESK, "events", orjson.dumps(body))], False)
        (ack,) = result.acks
        return ack

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.client.tokens[role]}"}  # type: ignore[attr-defined]

    def db_bytes(self) -> bytes:
        """Every byte central's database has on disk (the file and its write-ahead log)."""
        with self.repo.engine.connect() as conn:  # what is committed reaches the file
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return b"".join(p.read_bytes() for p in self.tmp.glob("central.sqlite3*") if p.is_file())


@pytest.fixture
def inproc(tmp_path: Path) -> Iterator[Central]:
    """Central in process, its API and ingest on a SQLite file."""
    cfg = CentralConfig(data_dir=tmp_path, security={"require": False})  # type: ignore[arg-type]
    repo = Repo(cfg.db_url)
    key = b"k" * 32
    repo.migrate(key)
    readers = Readers(repo, key)
    cards = Cards(readers, b"c" * 32)
    identity, registry = open_identity(cfg, repo)
    repo.effects[REGISTRATION] = Registrar(readers, cards, "BE", identity.seal_key)
    repo.register_device(DESK, SITE, "desk")
    app = create_app(cfg, repo, None, CentralMetrics(), readers, cards, registry)
    tokens = {
        role: Tokens(repo.engine).create(f"{role}-1", role)[1]
        for role in ("admin", "librarian", "viewer")
    }
    with TestClient(app) as client:
        client.tokens = tokens  # type: ignore[attr-defined]
        c = Central(tmp_path, client, repo, identity)
        c.readers = readers  # type: ignore[attr-defined]
        yield c
    repo.close()


def _names_in(body: str) -> list[str]:
    """The parts of the reader's name found in a response (JSON decoded, so no escape
    hides one)."""
    try:
        body = json.dumps(json.loads(body), ensure_ascii=False)
    except ValueError:
        pass
    body = unicodedata.normalize("NFC", body)
    return [w for w in NAME.split() if w in body]


def _get_routes(api: TestClient) -> list[str]:
    """Every GET route the API documents (so a new route is checked without a test edit)."""
    spec = api.get("/openapi.json").json()
    return sorted(p for p, ops in spec["paths"].items() if "get" in ops) + ["/metrics"]


def test_a_viewer_reads_no_name_on_any_route_a_librarian_reads_what_the_desk_needs(
    inproc: Central,
) -> None:
    answer = inproc.register()
    pid = answer["patron_id"]
    api = inproc.client
    # a message central refuses (here: a bad sequence number) is quarantined as received,
    # whatever it carries: only admins read it
    inproc.send(
        {
            "event_id": uuid7(),
            "device_id": DESK,
            "site": SITE,
            "type": "desk.note",
            "seq": -1,
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": {"display_name": NAME},
        }
    )
    (held,) = api.get("/api/v1/quarantine", headers=inproc.headers("admin")).json()
    assert NAME in held["raw"]
    for role in ("viewer", "librarian"):
        (held,) = api.get("/api/v1/quarantine", headers=inproc.headers(role)).json()
        assert held["raw"] == "" and held["device_id"] == DESK and held["reason"]
    # every GET route of the API, with its path filled in: none shows a viewer the name
    fill = {"patron_id": pid, "site": SITE, "device_id": DESK}
    checked = []
    for path in _get_routes(api):
        params = re.findall(r"{(\w+)}", path)
        if any(p not in fill for p in params):
            continue  # routes of things that are not readers (releases, rollouts, keys...)
        url = path.format(**fill)
        r = api.get(url, headers=inproc.headers("viewer"))
        assert _names_in(r.text) == [], (url, r.text)
        if r.status_code == 200:
            checked.append(path)
    assert "/api/v1/readers/{patron_id}" in checked and "/api/v1/events" in checked
    assert "/api/v1/readers/{patron_id}/consents" in checked and "/metrics" in checked
    assert "/api/v1/quarantine" in checked
    r = api.get(f"/api/v1/events?type={REGISTRATION}", headers=inproc.headers("viewer"))
    # the audit trail: ids only (a red-team run read the template count, the face model and
    # the card's id there as a viewer); staff see how the reader was checked
    seen_payload = r.json()["items"][0]["payload"]
    assert seen_payload["patron_id"] == pid
    assert set(seen_payload) == {"registration_id", "patron_id"}
    r = api.get(f"/api/v1/events?type={REGISTRATION}", headers=inproc.headers("librarian"))
    assert r.json()["items"][0]["payload"]["templates"] == 2
    # consents: what was granted and when, not which librarian recorded it
    consents = api.get(f"/api/v1/readers/{pid}/consents", headers=inproc.headers("viewer"))
    assert consents.json() and all(c["librarian"] == "" for c in consents.json())
    consents = api.get(f"/api/v1/readers/{pid}/consents", headers=inproc.headers("librarian"))
    assert all(c["librarian"] for c in consents.json())
    # the dashboard, signed in as the viewer
    login = api.post(
        "/dashboard/login", data={"token": api.tokens["viewer"]}, follow_redirects=True
    )  # type: ignore[attr-defined]
    assert login.status_code == 200 and _names_in(login.text) == []
    # the viewer's record is pseudonymous: ids, status, dates
    seen = api.get(f"/api/v1/readers/{pid}", headers=inproc.headers("viewer")).json()
    assert set(seen) == {"patron_id", "site", "status", "expires_at", "updated_at"}
    # librarians and admins see the name (opened from its seal) and what gates greet with
    for role in ("librarian", "admin"):
        doc = api.get(f"/api/v1/readers/{pid}", headers=inproc.headers(role)).json()
        assert doc["display_name"] == NAME and doc["greeting"] == GIVEN
        assert doc["templates"] == {"dlib-resnet@1": 2}
    # the schema says both shapes, so a client knows what a viewer gets
    spec = api.get("/openapi.json").json()
    shape = spec["paths"]["/api/v1/readers/{patron_id}"]["get"]["responses"]["200"]
    assert "ReaderSummaryOut" in json.dumps(shape) and "ReaderOut" in json.dumps(shape)


def test_the_database_file_holds_no_name_in_clear(inproc: Central) -> None:
    answer = inproc.register()
    assert answer["display_name"] == NAME  # the desk that registered prints the card with it
    again = inproc.register(name="Trần Văn Hùng", ref="b" * 64)
    assert again["patron_id"] != answer["patron_id"]
    raw = inproc.db_bytes()
    for part in (*NAME.split(), "Trần", "Hùng", "1990-05-17"):
        for form in ("NFC", "NFD"):
            assert unicodedata.normalize(form, part).encode() not in raw, part
    # an erased reader leaves nothing either, sealed or not
    sealed = inproc.repo.engine.connect().execute(
        text("SELECT name_sealed FROM readers WHERE patron_id = :p"), {"p": answer["patron_id"]}
    )
    blob = bytes(sealed.scalar_one())
    assert blob in raw
    r = inproc.client.delete(
        f"/api/v1/readers/{answer['patron_id']}", headers=inproc.headers("librarian")
    )
    assert r.status_code == 204
    assert blob not in inproc.db_bytes()


def test_an_erasure_holds_when_a_kiosk_sends_her_registration_again_after_a_restore(
    inproc: Central,
) -> None:
    """Registered, then erased at central; central's disk dies and the restored snapshot
    predates the registration (its event is gone), the journal gives back the erasure, and
    the desk replays what the lost central had acknowledged: she does not come back."""
    answer = inproc.register()
    event, pid = inproc.last_event, answer["patron_id"]
    headers = inproc.headers("librarian")
    assert inproc.client.get(f"/api/v1/readers/{pid}", headers=headers).status_code == 200
    assert inproc.client.delete(f"/api/v1/readers/{pid}", headers=headers).status_code == 204
    with inproc.repo.engine.begin() as conn:  # the snapshot from before her registration
        conn.execute(text("DELETE FROM events WHERE event_id = :e"), {"e": event["event_id"]})
    ack = inproc.send(event)  # the kiosk's replay
    assert ack.results[event["event_id"]] == {
        "registration_id": event["payload"]["registration_id"],
        "status": "erased",
    }
    assert inproc.client.get(f"/api/v1/readers/{pid}", headers=headers).status_code == 404
    with inproc.repo.engine.connect() as conn:
        for table in ("readers", "templates", "reader_profiles", "registrations"):
            n = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()  # noqa: S608
            assert n == 0, table
        stored = conn.execute(
            text("SELECT payload FROM events WHERE event_id = :e"), {"e": event["event_id"]}
        ).scalar_one()
    assert "sealed" not in str(stored)  # nothing of her kept with the replayed event
    # a new registration of hers (she came back to the library) is a new reader
    assert inproc.register()["patron_id"] != pid


def _db_at(url: str, revision: str) -> Repo:
    repo = Repo(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    with repo.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return repo


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrating_seals_the_names_an_older_central_kept_in_clear(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    path = tmp_path / "old.sqlite3"
    url = f"sqlite:///{path}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    repo = _db_at(url, "0006")
    now = datetime.now(UTC)
    with repo.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO readers (patron_id, site, display_name, status, expires_at,"
                " updated_at) VALUES ('BE0000001', :s, :n, 'active', '2030-01-01', :t)"
            ),
            {"s": SITE, "n": NAME, "t": now.replace(tzinfo=None) if backend == "sqlite" else now},
        )
        conn.execute(
            registrations.insert().values(
                registration_id="r-00000001",
                patron_id="BE0000001",
                device_id=DESK,
                result={"patron_id": "BE0000001", "display_name": NAME},
                created_at=now,
            )
        )
    try:
        with pytest.raises(RuntimeError, match="template key"):
            repo.migrate()  # names to seal, and no key to seal them with: refused, not skipped
        key = bytes(range(32))
        repo.migrate(key)
        assert Readers(repo, key).get("BE0000001")["display_name"] == NAME
        with repo.engine.connect() as conn:
            (result,) = conn.execute(text("SELECT result FROM registrations")).scalars()
            columns = {c["name"] for c in inspect(conn).get_columns("readers")}
        assert "display_name" not in columns
        stored = result if isinstance(result, dict) else json.loads(result)
        assert stored == {"patron_id": "BE0000001"}
        if backend == "sqlite":
            with repo.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            raw = b"".join(p.read_bytes() for p in tmp_path.glob("old.sqlite3*") if p.is_file())
            for part in NAME.split():
                assert part.encode() not in raw, part
    finally:
        if backend == "postgresql":
            with repo.engine.begin() as conn:  # the cluster is shared by the session
                conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        repo.close()


def test_gates_are_sent_the_given_name_only_and_kiosks_keep_no_full_name(
    inproc: Central, tmp_path: Path
) -> None:
    pid = inproc.register()["patron_id"]
    readers: Readers = inproc.readers  # type: ignore[attr-defined]
    delta = readers.delta(SITE, 0)
    assert delta is not None
    (reader,) = delta.upserts
    assert reader.patron_id == pid and reader.display_name == GIVEN
    wire = dumps(delta).decode()
    assert FAMILY not in wire and "Thị" not in wire and "1990" not in wire
    # a gate keeps the greeting; a self-check keeps no name at all
    for role, keep, expect in (("gate", True, GIVEN), ("selfcheck", False, "")):
        store = Store(tmp_path / role / "agent.sqlite3")
        sync = GallerySync(
            store,
            GalleryStore(store, bytes(32)),
            keep_citizen_ref=role == "selfcheck",
            purpose="face_gate",
            keep_name=keep,
        )
        assert sync.apply(delta)
        (name,) = store.conn.execute(
            "SELECT display_name FROM patron_cache WHERE patron_id = ?", (pid,)
        ).fetchone()
        assert name == expect
        store.close()
        raw = b"".join(p.read_bytes() for p in (tmp_path / role).glob("agent.sqlite3*"))
        assert FAMILY.encode() not in raw and "Thị".encode() not in raw


def _kiosk_ring(tmp: Path, ca: Any, device: str, role: str) -> tuple[Any, str]:
    """A kiosk's key ring (its own certificate key on disk) and its certificate, as central
    holds it."""
    from biblioedge.agent.sitekeys import SiteKeyRing
    from biblioedge.provisioning import pki

    key = pki.new_key()
    name = pki.DeviceName(device, SITE, role)
    pem = pki.cert_pem(ca.issue_device(pki.make_csr(key, name), name, 30)).decode()
    pki.write_private(tmp / device / "device.key", pki.key_pem(key))
    return SiteKeyRing(tmp / device, device, SITE, greets=role == "gate"), pem


def test_only_a_gate_opens_the_greeting_a_self_check_still_identifies_faces(
    inproc: Central, tmp_path: Path
) -> None:
    """The names in a delta are sealed under the site's greeting key, which central wraps to
    gates only: a self-check, holding the site key, opens the delta and uses the templates,
    but no byte of the name is in anything it can open; a gate greets by name; revoking a
    gate rotates the greeting key, and what is sealed afterwards is closed to it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from biblioedge.fleet.sitekeys import SiteKeyring
    from biblioedge.models.gallery import Gallery
    from biblioedge.protocol import ProtocolError, SiteKeys, decode
    from biblioedge.provisioning import pki

    pid = inproc.register()["patron_id"]
    r = inproc.client.post(
        f"/api/v1/readers/{pid}/consents",
        json={
            "purpose": "face_selfcheck",
            "text_version": "vi-2026-1",
            "granted": True,
            "librarian": "lan",
        },
        headers=inproc.headers("librarian"),
    )
    assert r.status_code == 201, r.text
    readers: Readers = inproc.readers  # type: ignore[attr-defined]
    central = SiteKeyring(inproc.repo.engine, AESGCM(b"i" * 32))
    ca = pki.DeviceCA.create()
    gate, gate_pem = _kiosk_ring(tmp_path, ca, "gate-01", "gate")
    selfcheck, sc_pem = _kiosk_ring(tmp_path, ca, "sc-01", "selfcheck")
    sc_doc = decode(SiteKeys, central.message("sc-01", SITE, sc_pem))
    assert sc_doc.keys and sc_doc.greeting_keys == {} and sc_doc.greeting_active == ""
    assert selfcheck.update(sc_doc) and gate.update(
        decode(SiteKeys, central.message("gate-01", SITE, gate_pem))
    )

    def published(base: int = 0) -> bytes:
        """What the bridge publishes: the delta, names sealed, the whole sealed again."""
        delta = readers.delta(SITE, base, seal_name=central.name_sealer(SITE))
        assert delta is not None
        return central.seal_delta(SITE, dumps(delta))

    wire = published()
    # the self-check: everything it can open (the delta, its own key set on disk) has no
    # byte of the name, escaped or not
    opened = selfcheck.open(wire)
    seen = opened + selfcheck.path.read_bytes()
    for word in (GIVEN, FAMILY, "Thị"):
        assert word.encode() not in seen and json.dumps(word).strip('"').encode() not in seen
    delta = selfcheck.open_delta(wire)
    (reader,) = delta.upserts
    assert reader.display_name == "" and reader.sealed_greeting
    # ...and it still recognises the reader by face from the templates it was sent
    store = Store(tmp_path / "sc-01" / "agent.sqlite3")
    templates = GalleryStore(store, bytes(32))
    sync = GallerySync(
        store, templates, keep_citizen_ref=True, purpose="face_selfcheck", keep_name=False
    )
    assert sync.apply(delta)
    gallery = Gallery(128)
    gallery.add_matrix(*templates.load("dlib-resnet@1", 128))
    probe = np.frombuffer(base64.b64decode(_template(1)), dtype="<f4")
    assert gallery.decide(probe, 0.6, 0.05).patron_id == pid
    store.close()
    # the gate opens the name and greets with it
    store = Store(tmp_path / "gate-01" / "agent.sqlite3")
    sync = GallerySync(store, GalleryStore(store, bytes(32)))
    assert sync.apply(gate.open_delta(wire))
    patron = store.patron_by_barcode(pid)
    assert patron is not None and patron.display_name == GIVEN
    store.close()
    # a sealed name moved onto another reader does not open there
    moved = reader.model_copy(update={"patron_id": "BE9999999"})
    stray = delta.model_copy(update={"upserts": [moved]})
    (opened_moved,) = gate.open_delta(central.seal_delta(SITE, dumps(stray))).upserts
    assert opened_moved.display_name == ""
    # gate-01 is revoked: both keys rotate; gate-02 gets the new greeting key, gate-01 never
    old_greeting = set(gate.greeting)
    central.rotate(SITE)
    gate2, gate2_pem = _kiosk_ring(tmp_path, ca, "gate-02", "gate")
    assert gate2.update(decode(SiteKeys, central.message("gate-02", SITE, gate2_pem)))
    assert set(gate2.greeting) - old_greeting  # a new greeting key, active for new names
    after = published()
    (named,) = gate2.open_delta(after).upserts
    assert named.display_name == GIVEN
    with pytest.raises(ProtocolError) as err:
        gate.open_delta(after)
    assert err.value.reason == "unknown_site_key"
    # even given the new site key (a self-check's), the old gate cannot open the names
    assert selfcheck.update(decode(SiteKeys, central.message("sc-01", SITE, sc_pem)))
    gate.keys = {**gate.keys, **selfcheck.keys}
    with pytest.raises(ProtocolError) as err:
        gate.open_delta(after)
    assert err.value.reason == "unknown_greeting_key"


def test_a_delta_from_an_older_central_with_names_in_clear_still_greets(tmp_path: Path) -> None:
    """Before greeting keys central sent the greeting in clear inside the sealed delta, and
    key sets without greeting keys: a gate takes both as they are."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from biblioedge.protocol import GalleryDelta, GalleryReader, SiteKeys
    from biblioedge.provisioning import pki
    from biblioedge.provisioning.sealing import gallery_context, seal, seal_with, site_key_context

    ca = pki.DeviceCA.create()
    gate, pem = _kiosk_ring(tmp_path, ca, "gate-01", "gate")
    pub = pki.load_cert(pem.encode()).public_key()
    key = bytes(range(32))
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    wrapped = base64.b64encode(seal(pub, key, site_key_context(SITE, "s1", "gate-01"))).decode()
    assert gate.update(
        SiteKeys(device_id="gate-01", site=SITE, version=1, active="s1", keys={"s1": wrapped})
    )
    old = GalleryDelta(
        base=0,
        version=1,
        upserts=[GalleryReader(patron_id="P1", display_name=GIVEN, status="active")],
    )
    blob = seal_with(key, "s1", dumps(old), gallery_context(SITE))
    (reader,) = gate.open_delta(blob).upserts
    assert reader.display_name == GIVEN


def test_a_gate_cuts_down_a_full_name_whatever_sent_or_kept_it(tmp_path: Path) -> None:
    """An older central sent full names, and older gates kept them: a gate keeps only the
    given name of what arrives, and its store cuts down what it kept before."""
    from biblioedge.protocol import GalleryDelta, GalleryReader

    store = Store(tmp_path / "agent.sqlite3")
    sync = GallerySync(store, GalleryStore(store, bytes(32)))
    full = GalleryReader(patron_id="P1", display_name=NAME, status="active")
    assert sync.apply(GalleryDelta(base=0, version=1, upserts=[full]))
    assert sync.reader(patron_id="P1") == ("P1", "active")
    # what an older gate kept: the full name, and its store before this version
    store.conn.execute("UPDATE patron_cache SET display_name = ? WHERE patron_id = 'P1'", (NAME,))
    store.conn.execute("DELETE FROM schema_migrations WHERE version = 7")
    store.close()
    store = Store(tmp_path / "agent.sqlite3")
    (name,) = store.conn.execute("SELECT display_name FROM patron_cache").fetchone()
    assert name == GIVEN
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("agent.sqlite3*"))
    assert FAMILY.encode() not in raw


@pytest.mark.parametrize(
    ("name", "greeting"),
    [
        ("Nguyễn Thị Bình", "Bình"),
        ("  Trần   Văn  Hùng ", "Hùng"),
        ("Nguye\u0302\u0303n Va\u0306n An", "An"),  # decomposed in, NFC out
        ("Bình", "Bình"),
        ("", ""),
    ],
)
def test_the_greeting_is_the_given_name(name: str, greeting: str) -> None:
    assert greeting_name(name) == greeting


@pytest.mark.integration
def test_a_real_gate_receives_and_keeps_the_given_name_only(
    tmp_path: Path, broker: object, central: object, make_agent: object
) -> None:
    """Real processes over the secured broker: a librarian registers a reader with their full
    name; the gate's store ends up with the given name and no byte of the rest, and central's
    database file has the name nowhere in clear."""
    import cv2

    from biblioedge.demo.launch import CentralProcess, wait_until

    assert isinstance(central, CentralProcess)
    camera = tmp_path / "camera"
    camera.mkdir()
    for i in range(4):
        cv2.imwrite(str(camera / f"{i:03d}.jpg"), np.full((720, 1280, 3), 110, np.uint8))
    agent = make_agent(  # type: ignore[operator]
        "gate-05",
        role="gate",
        gate={"enabled": True, "camera": f"sim:{camera}", "camera_fps": 5.0, "relay": "sim"},
    )
    agent.start()
    with central.client() as api:
        r = api.put("/readers/P000501", json={"site": SITE, "display_name": NAME})
        assert r.status_code == 200 and r.json()["greeting"] == GIVEN, r.text
        v = np.random.default_rng(5).standard_normal(128)
        r = api.put(
            "/readers/P000501/templates",
            json={"model": "dlib-resnet@1", "templates": [(v / np.linalg.norm(v)).tolist()]},
        )
        assert r.status_code == 200, r.text
        version = api.get(f"/sites/{SITE}/gallery").json()["version"]
        wait_until(
            lambda: (
                (api.get("/devices/gate-05").json()["reported"] or {}).get("gallery_version")
                == version
            ),
            90,
            what=f"the gate applies the site's gallery: {agent.log_tail()}",
        )
    db = sqlite3.connect(f"file:{agent.data_dir / 'agent.sqlite3'}?mode=ro", uri=True)
    try:
        (name,) = db.execute(
            "SELECT display_name FROM patron_cache WHERE patron_id = 'P000501'"
        ).fetchone()
    finally:
        db.close()
    assert name == GIVEN
    assert agent.alive()
    agent.stop()
    raw = b"".join(p.read_bytes() for p in agent.data_dir.glob("agent.sqlite3*"))
    assert GIVEN.encode() in raw and FAMILY.encode() not in raw and "Thị".encode() not in raw
    assert central.stop() == 0, central.log_tail()
    raw = b"".join(p.read_bytes() for p in central.data_dir.glob("*.sqlite3*") if p.is_file())
    assert raw and not [w for w in NAME.split() if w.encode() in raw]


@pytest.mark.integration
def test_revoking_a_gate_rotates_the_greeting_key_and_the_others_still_greet(
    tmp_path: Path, broker: object, central: object, make_agent: object
) -> None:
    """Real processes: a gate's key set holds the greeting key; revoking another gate of the
    site brings it a new one, and a name sealed afterwards still reaches it."""
    import cv2

    from biblioedge.demo.launch import CentralProcess, wait_until

    assert isinstance(central, CentralProcess)
    camera = tmp_path / "camera"
    camera.mkdir()
    for i in range(4):
        cv2.imwrite(str(camera / f"{i:03d}.jpg"), np.full((720, 1280, 3), 110, np.uint8))
    gate = make_agent(  # type: ignore[operator]
        "gate-11",
        role="gate",
        gate={"enabled": True, "camera": f"sim:{camera}", "camera_fps": 5.0, "relay": "sim"},
    )
    gate.start()
    make_agent("gate-12", role="gate").enroll()  # type: ignore[operator]
    held = gate.data_dir / "identity" / "site-keys.json"

    def greeting_keys() -> set[str]:
        try:
            return set(json.loads(held.read_text()).get("greeting", {}))
        except (FileNotFoundError, ValueError):  # not yet, or being replaced
            return set()

    wait_until(greeting_keys, 60, what=f"the gate's greeting key: {gate.log_tail()}")
    before = greeting_keys()
    with central.client() as api:
        assert api.post("/devices/gate-12/revoke").status_code == 200
        wait_until(
            lambda: greeting_keys() - before, 60, what=f"a new greeting key: {gate.log_tail()}"
        )
        r = api.put("/readers/P001101", json={"site": SITE, "display_name": NAME})
        assert r.status_code == 200, r.text
        version = api.get(f"/sites/{SITE}/gallery").json()["version"]
        wait_until(
            lambda: (
                (api.get("/devices/gate-11").json()["reported"] or {}).get("gallery_version")
                == version
            ),
            90,
            what=f"the gate applies the site's gallery: {gate.log_tail()}",
        )
    db = sqlite3.connect(f"file:{gate.data_dir / 'agent.sqlite3'}?mode=ro", uri=True)
    try:
        (name,) = db.execute(
            "SELECT display_name FROM patron_cache WHERE patron_id = 'P001101'"
        ).fetchone()
    finally:
        db.close()
    assert name == GIVEN
    assert gate.alive()

"""Gallery sync: central's readers and encrypted templates -> versioned deltas -> gates."""

import base64
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest

from biblioedge.agent.gallery_store import GalleryStore, load_or_create_key
from biblioedge.agent.gallery_sync import GallerySync, vectors_of
from biblioedge.agent.store import Store
from biblioedge.fleet.readers import ReaderError, Readers, UnknownReader, WrongLength
from biblioedge.fleet.repo import Repo
from biblioedge.keys import load_or_create_key as central_key


@pytest.fixture
def readers(tmp_path: Path) -> Readers:
    repo = Repo(f"sqlite:///{tmp_path / 'central.sqlite3'}")
    repo.migrate()
    return Readers(repo, central_key(tmp_path / "keys" / "templates.key"))


@pytest.fixture
def gate(tmp_path: Path) -> GallerySync:
    store = Store(tmp_path / "gate.sqlite3")
    return GallerySync(store, GalleryStore(store, load_or_create_key(tmp_path / "gate.key")))


def vec(seed: int, dim: int = 128) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(dim)
    return list(v / np.linalg.norm(v))


def test_enroll_erase_and_deltas_reach_the_gate(
    readers: Readers, gate: GallerySync, tmp_path: Path
) -> None:
    readers.upsert(
        "P1",
        site="tv-tinh",
        display_name="Nguye\u0302\u0303n Va\u0306n An",
        expires_at="2030-01-01",
    )
    readers.put_templates("P1", "dlib-resnet@1", [vec(1), vec(2)])
    readers.upsert("P2", site="tv-tinh", display_name="Trần Thị Bình", status="blocked")
    readers.upsert("P9", site="cn-2", display_name="Elsewhere")
    v = readers.site_version("tv-tinh")
    delta = readers.delta("tv-tinh", 0)
    assert delta is not None and delta.base == 0 and delta.version == v
    # compacted; the reader whose home is another branch is here too (readers are the
    # library's: her card works at every branch)
    assert [r.patron_id for r in delta.upserts] == ["P1", "P2", "P9"]
    p1 = delta.upserts[0]
    assert (
        p1.display_name == "An"  # the given name gates greet with, never the full name
        and p1.model == "dlib-resnet@1"
        and len(p1.templates) == 2
    )
    np.testing.assert_allclose(vectors_of(p1.templates)[0], vec(1), atol=1e-6)
    # templates are not in the database in clear
    raw = (tmp_path / "central.sqlite3").read_bytes()
    assert np.asarray(vec(1), "<f4").tobytes()[:32] not in raw
    assert gate.apply(delta) and gate.version() == v
    assert not gate.apply(delta)  # the same delta again: not on top of our version
    ids, mat = gate.templates.load("dlib-resnet@1", 128)
    assert ids == ["P1", "P1"]
    row = gate.store.conn.execute(
        "SELECT display_name, status FROM patron_cache WHERE patron_id='P2'"
    ).fetchone()
    assert row == ("Bình", "blocked")
    # erase on request, and a revoked card: the next delta carries both
    readers.revoke_card("card-7", "P2")
    readers.erase("P1")
    d2 = readers.delta("tv-tinh", v)
    assert d2 is not None and d2.removes == ["P1"] and d2.revoked_cards == ["card-7"]
    assert gate.apply(d2)
    assert gate.templates.load("dlib-resnet@1", 128)[0] == [] and gate.revoked() == {"card-7"}
    assert readers.delta("tv-tinh", d2.version) is None
    with pytest.raises(UnknownReader):
        readers.get("P1")


def test_a_new_home_branch_keeps_the_reader_at_every_branch(readers: Readers) -> None:
    readers.upsert("P1", site="tv-tinh", display_name="An")
    v = readers.site_version("tv-tinh")
    readers.upsert("P1", site="cn-2", display_name="An")
    for site in ("tv-tinh", "cn-2"):
        d = readers.delta(site, v)
        assert d is not None and d.removes == [] and [r.patron_id for r in d.upserts] == ["P1"]


def test_big_catch_up_comes_in_chunks(readers: Readers, gate: GallerySync) -> None:
    for i in range(25):
        readers.upsert(f"P{i:03d}", site="tv-tinh", display_name=f"R{i}")
    base = 0
    chunks = 0
    while (d := readers.delta("tv-tinh", base, max_readers=10)) is not None:
        assert gate.apply(d)
        base = d.version
        chunks += 1
    assert chunks == 3 and gate.version() == readers.site_version("tv-tinh")
    assert gate.store.conn.execute("SELECT count(*) FROM patron_cache").fetchone()[0] == 25


def test_bad_reader_input_is_refused(readers: Readers) -> None:
    with pytest.raises(ReaderError):
        readers.upsert("P1", site="tv-tinh", display_name="A", status="vip")
    with pytest.raises(ReaderError):
        readers.upsert("P1", site="tv-tinh", display_name="A", expires_at="31/12/2030")
    readers.upsert("P1", site="tv-tinh", display_name="A")
    with pytest.raises(ReaderError):
        readers.put_templates("P1", "m@1", [[float("nan")] * 128])
    with pytest.raises(ReaderError):
        readers.put_templates("P1", "m@1", [[1.0] * 8])
    with pytest.raises(UnknownReader):
        readers.put_templates("P404", "m@1", [vec(1)])


def test_unusable_templates_cost_that_reader_its_face_not_the_delta(
    readers: Readers, gate: GallerySync
) -> None:
    readers.upsert("P1", site="tv-tinh", display_name="An")
    readers.put_templates("P1", "dlib-resnet@1", [vec(1)])
    readers.upsert("P2", site="tv-tinh", display_name="Bình")
    readers.put_templates("P2", "dlib-resnet@1", [vec(2)])
    delta = readers.delta("tv-tinh", 0)
    assert delta is not None
    gate.dims["dlib-resnet@1"] = 128  # what the running engine says
    short = base64.b64encode(np.ones(64, "<f4").tobytes()).decode()
    for bad in (["not base64!"], [short], [base64.b64encode(b"\0" * 512).decode()]):
        crafted = delta.model_copy(
            update={"upserts": [delta.upserts[0].model_copy(update={"templates": bad})]}
            | {
                "upserts": [
                    delta.upserts[0].model_copy(update={"templates": bad}),
                    delta.upserts[1],
                ]
            }
        )
        gate.store.conn.execute("UPDATE meta SET value = '0' WHERE key = 'gallery_version'")
        assert gate.apply(crafted)
        ids, mat = gate.templates.load("dlib-resnet@1", 128)
        assert ids == ["P2"] and mat.shape == (1, 128)  # P1 kept its card, not the bad face
        assert gate.store.conn.execute(
            "SELECT count(*) FROM patron_cache WHERE patron_id = 'P1'"
        ).fetchone() == (1,)
    assert gate.refused["template"] == 3 and set(gate.accepted) == {"P2"}


def test_a_stored_template_of_another_length_does_not_stop_the_gate(gate: GallerySync) -> None:
    gate.templates.put("P1", np.ones((1, 64), np.float32), "dlib-resnet@1")  # an older bug's row
    gate.templates.put("P2", np.ones((2, 128), np.float32), "dlib-resnet@1")
    ids, mat = gate.templates.load("dlib-resnet@1", 128)
    assert ids == ["P2", "P2"] and mat.shape == (2, 128)


def test_deltas_of_large_templates_each_fit_one_message(
    readers: Readers, gate: GallerySync
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from biblioedge.protocol import MAX_PAYLOAD_BYTES, dumps
    from biblioedge.provisioning import signing
    from biblioedge.provisioning.sealing import gallery_context, seal_with

    rng = np.random.default_rng(7)
    for i in range(30):  # 30 readers x 16 templates x 512 values: one 1.75 MB message before
        readers.upsert(f"P{i:02d}", site="tv-tinh", display_name=f"R{i}")
        readers.put_templates(f"P{i:02d}", "arcface@1", rng.standard_normal((16, 512)).tolist())
    key, base, sizes = Ed25519PrivateKey.generate(), 0, []
    while (d := readers.delta("tv-tinh", base)) is not None:
        sealed = seal_with(b"k" * 32, "s1", dumps(d), gallery_context("tv-tinh"))
        sizes.append(len(signing.sign(key, "c1", "be/tv-tinh/gallery", sealed)))
        assert gate.apply(d)
        base = d.version
    assert len(sizes) > 1 and max(sizes) <= MAX_PAYLOAD_BYTES, sizes
    assert gate.version() == readers.site_version("tv-tinh")
    assert len(gate.templates.load("arcface@1", 512)[0]) == 30 * 16


def test_central_refuses_templates_of_another_length_for_a_model(readers: Readers) -> None:
    readers.upsert("P1", site="tv-tinh", display_name="A")
    readers.upsert("P2", site="tv-tinh", display_name="B")
    readers.put_templates("P1", "dlib-resnet@1", [vec(1)])
    with pytest.raises(WrongLength):
        readers.put_templates("P2", "dlib-resnet@1", [vec(2, dim=64)])
    with pytest.raises(WrongLength):
        readers.put_templates("P2", "other@1", [vec(2, dim=64), vec(3)])
    readers.put_templates("P2", "other@1", [vec(2, dim=64)])  # another model, its own length


def test_a_reader_stored_under_older_rules_is_dropped_from_gates_not_fatal(
    readers: Readers,
) -> None:
    from biblioedge.fleet.db import gallery_log
    from biblioedge.fleet.db import readers as readers_table
    from biblioedge.fleet.readers import seal_name
    from biblioedge.protocol import utc_now

    with readers.repo.engine.begin() as conn:  # a 300-character id with a space, as once let in
        bad = "P " + "x" * 298
        conn.execute(
            readers_table.insert().values(
                patron_id=bad[:64],
                site="tv-tinh",
                **seal_name(readers.aead, bad[:64], "X"),
                status="active",
                expires_at="",
                updated_at=utc_now(),
            )
        )
        conn.execute(
            gallery_log.insert().values(site="tv-tinh", patron_id=bad[:64], created_at=utc_now())
        )
    readers.upsert("P1", site="tv-tinh", display_name="A")
    delta = readers.delta("tv-tinh", 0)
    assert delta is not None
    assert [r.patron_id for r in delta.upserts] == ["P1"] and delta.removes == [bad[:64]]
    with pytest.raises(ReaderError):
        readers.upsert("P 1", site="tv-tinh", display_name="A")


def test_card_keys_that_are_not_ed25519_keys_are_refused_on_the_wire() -> None:
    from biblioedge.protocol import GalleryDelta, ProtocolError, decode

    good = base64.urlsafe_b64encode(b"k" * 32).rstrip(b"=").decode()
    assert GalleryDelta(base=0, version=1, card_keys={"k1": good}).card_keys == {"k1": good}
    for keys in ({"k1": "abc"}, {"k1": good + "AAAA"}, {"": good}, {"k1": "!" * 43}):
        with pytest.raises(ProtocolError):
            decode(GalleryDelta, orjson.dumps({"base": 0, "version": 1, "card_keys": keys}))


@pytest.mark.integration
def test_enrolled_at_central_recognized_at_the_gate_then_erased(
    tmp_path: Path, broker: object, central: object, make_agent: object
) -> None:
    """Real processes: enroll through the API, the gate gets the delta and opens for the
    reader; erase through the API, the gate drops the template and refuses."""
    import cv2
    from samples import astronaut

    from biblioedge.demo.launch import CentralProcess, wait_until
    from biblioedge.demo.samples import portrait, scene_frame
    from biblioedge.models.engine import FaceEngine

    assert isinstance(central, CentralProcess)
    engine = FaceEngine()
    image = astronaut()
    det, template = engine.embed_largest(image)
    camera = tmp_path / "camera"
    camera.mkdir()
    rng = np.random.default_rng(0)
    face = portrait(image, det.box, 170)
    for i in range(6):
        cv2.imwrite(str(camera / f"{i:03d}.jpg"), scene_frame(face, rng))
    for i in range(6, 12):
        cv2.imwrite(str(camera / f"{i:03d}.jpg"), np.full((720, 1280, 3), 110, np.uint8))
    agent = make_agent(  # type: ignore[operator]
        "gate-09",
        role="gate",
        gate={
            "enabled": True,
            "camera": f"sim:{camera}",
            "camera_fps": 10.0,
            "relay": "sim",
            "passback_s": 0.0,
            "cooldown_s": 0.3,
        },
    )
    agent.start()

    def decisions() -> list[dict[str, object]]:
        with central.client() as api:
            items = api.get(
                "/events", params={"device_id": "gate-09", "type": "gate.decision", "limit": 500}
            ).json()["items"]
        return [i["payload"] for i in items]

    wait_until(
        lambda: any(d.get("reason") == "unknown_face" for d in decisions()),
        60,
        what="stranger refused",
    )
    with central.client() as api:
        r = api.put(
            "/readers/P000201",
            json={"site": "tv-tinh", "display_name": "Võ Thị Hoa", "expires_at": "2030-12-31"},
        )
        assert r.status_code == 200, r.text
        r = api.put(
            "/readers/P000201/templates",
            json={"model": "dlib-resnet@1", "templates": [template.tolist()]},
        )
        assert r.status_code == 200 and r.json()["templates"] == 1
        assert api.get("/readers/P000201").json()["templates"] == {"dlib-resnet@1": 1}
        version = api.get("/sites/tv-tinh/gallery").json()["version"]
    wait_until(
        lambda: any(
            d.get("patron_id") == "P000201" and d["decision"] == "grant" for d in decisions()
        ),
        60,
        what="enrolled reader let in",
    )

    # broker (and so central) unreachable: the gate keeps deciding from its local gallery,
    # and its decisions wait in the outbox
    def offline_grants() -> int:
        db = sqlite3.connect(agent.data_dir / "agent.sqlite3")
        try:
            rows = db.execute("SELECT body FROM outbox WHERE type = 'gate.decision'").fetchall()
        finally:
            db.close()
        return sum(1 for (body,) in rows if b'"grant"' in body and b"P000201" in body)

    broker.stop()  # type: ignore[attr-defined]
    wait_until(lambda: offline_grants() >= 2, 30, what="grants while offline")
    broker.start()  # type: ignore[attr-defined]
    wait_until(lambda: offline_grants() == 0, 30, what="offline decisions delivered")
    with central.client() as api:
        assert api.get("/devices/gate-09").json()["reported"]["gallery_version"] == version
        assert api.delete("/readers/P000201").status_code == 204
        assert api.get("/readers/P000201").status_code == 404
    wait_until(
        lambda: (
            central.client().get("/devices/gate-09").json()["reported"]["gallery_version"] > version
        ),
        30,
        what="erasure applied",
    )
    # a grant decided just before the erasure is stamped when recorded, after the relay's
    # pulse: only what is decided a few seconds after it must be refused
    erased_at = datetime.now(UTC) + timedelta(seconds=3)
    time.sleep(3)

    def grants_since() -> list[dict[str, object]]:
        with central.client() as api:
            items = api.get(
                "/events",
                params={
                    "device_id": "gate-09",
                    "type": "gate.decision",
                    "limit": 500,
                    "since": erased_at.isoformat(),
                },
            ).json()["items"]
        return [i["payload"] for i in items if i["payload"]["decision"] == "grant"]

    seen = len(decisions())
    wait_until(lambda: len(decisions()) > seen + 1, 30, what="more approaches")
    assert grants_since() == []
    gate_db = sqlite3.connect(agent.data_dir / "agent.sqlite3")
    assert gate_db.execute("SELECT count(*) FROM gallery_templates").fetchone()[0] == 0


def test_a_self_check_gets_the_sites_gallery_over_the_secured_broker(
    tmp_path: Path, broker: object, central: object, make_agent: object
) -> None:
    """Real processes: a self-check is enrolled like a gate, receives the site keys wrapped
    to it and the gallery deltas, and so knows a blocked reader while the library system is
    away (here there is none at all: it lends offline from the start)."""
    from biblioedge.demo.launch import CentralProcess, wait_until
    from biblioedge.procs import free_port

    assert isinstance(central, CentralProcess)
    with central.client() as api:
        r = api.put(
            "/readers/P000301",
            json={"site": "tv-tinh", "display_name": "Đinh Văn Giang", "status": "blocked"},
        )
        assert r.status_code == 200, r.text
    agent = make_agent(  # type: ignore[operator]
        "sc-07",
        role="selfcheck",
        selfcheck={
            "enabled": True,
            "ils": f"sip2://kiosk:kiosk@127.0.0.1:{free_port()}?timeout=1",
            "rfid": "sim",
        },
    )
    agent.start()

    def cached() -> tuple[str, str] | None:
        path = agent.data_dir / "agent.sqlite3"
        if not path.exists():
            return None
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute(
                "SELECT display_name, status FROM patron_cache WHERE patron_id = 'P000301'"
            ).fetchone()
        except sqlite3.OperationalError:  # not migrated yet
            row = None
        finally:
            db.close()
        return None if row is None else (str(row[0]), str(row[1]))

    wait_until(
        lambda: cached() is not None, 60, what=f"the gallery at the self-check: {agent.log_tail()}"
    )
    assert cached() == ("", "blocked")  # a self-check keeps no name (SIP2 gives it one)
    with central.client() as api:
        version = api.get("/sites/tv-tinh/gallery").json()["version"]
        wait_until(
            lambda: api.get("/devices/sc-07").json()["reported"].get("gallery_version") == version,
            30,
            what="the self-check reports the site's gallery version",
        )
    assert agent.alive()


def test_a_self_check_sees_no_greeting_in_transit_and_keeps_the_faces(
    tmp_path: Path, broker: object, central: object, make_agent: object
) -> None:
    """Real processes over the secured broker: what any self-check of the site can read in
    transit (here a second one's certificate listening on the site's gallery and its own
    keys topic, opening all it can) has the templates but no byte of the reader's name; its
    key set has no greeting key; the running self-check keeps the reader's faces."""
    import threading
    import tomllib

    import paho.mqtt.client as mqtt

    from biblioedge.agent.sitekeys import SiteKeyRing
    from biblioedge.demo.launch import CentralProcess, wait_until
    from biblioedge.models.gallery import Gallery
    from biblioedge.procs import free_port
    from biblioedge.protocol import GalleryDelta, SiteKeys, decode
    from biblioedge.provisioning import signing

    assert isinstance(central, CentralProcess)
    selfcheck = make_agent(  # type: ignore[operator]
        "sc-07",
        role="selfcheck",
        selfcheck={
            "enabled": True,
            "ils": f"sip2://kiosk:kiosk@127.0.0.1:{free_port()}?timeout=1",
            "rfid": "sim",
        },
    )
    selfcheck.start()
    spy = make_agent("sc-08", role="selfcheck")  # type: ignore[operator]
    spy.enroll()  # its certificate, key and control keys: what a self-check holds
    ident = spy.data_dir / "identity"
    got: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        with lock:
            got.append((m.topic, bytes(m.payload)))

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sc-08", protocol=mqtt.MQTTv5)
    client.tls_set(
        ca_certs=str(ident / "ca.crt"),
        certfile=str(ident / "device.crt"),
        keyfile=str(ident / "device.key"),
    )
    client.on_message = on_message
    client.on_connect = lambda c, *_a: c.subscribe(
        [("be/tv-tinh/gallery", 1), ("be/tv-tinh/sc-08/keys", 1)]
    )
    client.connect("127.0.0.1", broker.port)  # type: ignore[attr-defined]
    client.loop_start()

    def received(channel: str) -> list[tuple[str, bytes]]:
        with lock:
            return [(t, p) for t, p in got if t.endswith("/" + channel) and p]

    try:
        wait_until(lambda: received("keys"), 60, what="the spy's key set")
        with central.client() as api:
            pid = "P000701"
            r = api.put(
                f"/readers/{pid}", json={"site": "tv-tinh", "display_name": "Phạm Thị Xuân"}
            )
            assert r.status_code == 200, r.text
            r = api.post(
                f"/readers/{pid}/consents",
                json={
                    "purpose": "face_selfcheck",
                    "text_version": "vi-1",
                    "granted": True,
                    "librarian": "lan",
                },
            )
            assert r.status_code == 201, r.text
            template = np.asarray(vec(7), dtype=np.float32)
            r = api.put(
                f"/readers/{pid}/templates",
                json={"model": "dlib-resnet@1", "templates": [template.tolist()]},
            )
            assert r.status_code == 200, r.text
            version = api.get("/sites/tv-tinh/gallery").json()["version"]
            wait_until(
                lambda: (
                    (api.get("/devices/sc-07").json()["reported"] or {}).get("gallery_version")
                    == version
                ),
                90,
                what=f"the self-check applies the gallery: {selfcheck.log_tail()}",
            )
        security = tomllib.loads(spy.config_path.read_text())["security"]
        control = {k: signing.load_public(v) for k, v in security["control_keys"].items()}
        ring = SiteKeyRing(ident, "sc-08", "tv-tinh", greets=False)
        topic, payload = received("keys")[-1]
        keys = decode(SiteKeys, signing.verify(control, topic, payload))
        assert keys.keys and keys.greeting_keys == {} and keys.greeting_active == ""
        assert ring.update(keys)

        def opened() -> list[bytes]:
            return [ring.open(signing.verify(control, t, p)) for t, p in received("gallery")]

        def faces() -> list[str]:
            return [
                t
                for body in opened()
                for r in decode(GalleryDelta, body).upserts
                if r.patron_id == pid
                for t in r.templates
            ]

        wait_until(faces, 60, what="a delta with the reader's face at the spy")
        # nothing the self-check can open, nor the raw messages, has a byte of the name
        seen = b"".join(opened()) + b"".join(p for _, p in got) + ring.path.read_bytes()
        for word in ("Phạm", "Thị", "Xuân"):  # as UTF-8, and as JSON escapes them
            assert word.encode() not in seen and json.dumps(word)[1:-1].encode() not in seen
        assert not [r for b in opened() for r in decode(GalleryDelta, b).upserts if r.display_name]
        # the templates it received identify the reader
        gallery = Gallery(128)
        gallery.add(pid, vectors_of(faces()[-1:]))
        assert gallery.decide(template, 0.6, 0.05).patron_id == pid
    finally:
        client.loop_stop()
        client.disconnect()
    # and the running self-check keeps the face for its own matching, and no name
    db = sqlite3.connect(f"file:{selfcheck.data_dir / 'agent.sqlite3'}?mode=ro", uri=True)
    try:
        faces_kept = db.execute(
            "SELECT count(*) FROM gallery_templates WHERE patron_id = ?", (pid,)
        ).fetchone()[0]
        (name,) = db.execute(
            "SELECT display_name FROM patron_cache WHERE patron_id = ?", (pid,)
        ).fetchone()
    finally:
        db.close()
    assert faces_kept == 1 and name == ""
    assert selfcheck.alive()

"""Device identity and security: PKI, signed control messages, sealing, API roles and audit,
enrollment refusals, and on real mosquitto with TLS: per-device ACLs and revocation."""

from __future__ import annotations

import base64
import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient
from sqlalchemy import update

from biblioedge.demo.launch import AgentProcess, CentralProcess, wait_until
from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Tokens
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.central import open_identity
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.db import enrollments
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.repo import Repo
from biblioedge.protocol import ProtocolError
from biblioedge.provisioning import pki, signing
from biblioedge.provisioning.broker import BrokerProcess, mosquitto_acl, mosquitto_path
from biblioedge.provisioning.enroll import RENEW_DOMAIN, parse_token
from biblioedge.provisioning.sealing import SealError, open_sealed, seal

GATE = pki.DeviceName("gate-01", "tv-tinh", "gate")

# -- pure pieces ---------------------------------------------------------------------------


def test_ca_issues_only_the_tokens_device_and_verifies_only_its_own() -> None:
    ca = pki.DeviceCA.create()
    key = pki.new_key()
    cert = ca.issue_device(pki.make_csr(key, GATE), GATE, 30)
    assert pki.device_name(cert) == GATE
    ca.verify(cert)
    other = pki.DeviceName("gate-02", "tv-tinh", "gate")
    with pytest.raises(pki.PkiError, match="token is for 'gate-02'"):
        ca.issue_device(pki.make_csr(key, GATE), other, 30)
    with pytest.raises(pki.PkiError, match="not a PEM certificate request"):
        ca.issue_device(b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage", GATE, 30)
    bridge = pki.DeviceName(pki.BRIDGE_ID, "tv-tinh", "gate")
    with pytest.raises(pki.PkiError):
        ca.issue_device(pki.make_csr(key, bridge), bridge, 30)
    with pytest.raises(pki.PkiError, match="not issued by this CA"):
        pki.DeviceCA.create().verify(cert)


def test_signed_messages_bind_key_and_topic() -> None:
    key = Ed25519PrivateKey.generate()
    keys = {"c1": key.public_key()}
    topic = "be/tv-tinh/gate-01/desired"
    env = signing.sign(key, "c1", topic, b'{"version":3}')
    assert signing.verify(keys, topic, env) == b'{"version":3}'
    with pytest.raises(ProtocolError) as err:  # replayed onto another kiosk
        signing.verify(keys, "be/tv-tinh/gate-02/desired", env)
    assert err.value.reason == "bad_signature"
    forged = signing.sign(Ed25519PrivateKey.generate(), "c1", topic, b'{"version":1000}')
    with pytest.raises(ProtocolError) as err:
        signing.verify(keys, topic, forged)
    assert err.value.reason == "bad_signature"
    for payload, reason in (
        (b'{"version":1000}', "unsigned"),
        (b"\xff\xfe", "unsigned"),
        (signing.sign(key, "k9", topic, b"{}"), "unknown_key"),
        (b'{"kid":"c1","sig":"!!","body":"e30="}', "bad_signature"),
        (b'{"kid":1,"sig":"","body":""}', "unsigned"),
    ):
        with pytest.raises(ProtocolError) as err:
            signing.verify(keys, topic, payload)
        assert err.value.reason == reason, payload


@pytest.mark.parametrize("kind", ["x25519", "p256"])
def test_sealing_opens_only_with_the_key_and_context(kind: str) -> None:
    priv: Any = x25519.X25519PrivateKey.generate() if kind == "x25519" else pki.new_key()
    blob = seal(priv.public_key(), "Nguyễn Thị Bình".encode(), b"desk.registration")
    assert open_sealed(priv, blob, b"desk.registration").decode() == "Nguyễn Thị Bình"
    other: Any = x25519.X25519PrivateKey.generate() if kind == "x25519" else pki.new_key()
    bad = [
        (other, blob, b"desk.registration"),
        (priv, blob, b"gallery"),
        (priv, blob[:-1] + bytes([blob[-1] ^ 1]), b"desk.registration"),
        (priv, blob[:20], b"desk.registration"),
    ]
    for key, data, ctx in bad:
        with pytest.raises(SealError):
            open_sealed(key, data, ctx)


def test_acl_binds_each_kiosk_to_its_own_site_and_topics() -> None:
    acl = mosquitto_acl(
        [
            GATE,
            pki.DeviceName("desk-01", "xa-a", "desk"),
            pki.DeviceName("sc-01", "xa-a", "selfcheck"),
        ]
    )
    blocks = {b.split("\n")[0]: b for b in acl.split("\n\n") if b.startswith("user ")}
    gate = blocks["user gate-01"]
    assert "topic write be/tv-tinh/gate-01/events" in gate
    assert "topic read be/tv-tinh/gallery" in gate
    assert "+" not in gate and "#" not in gate and "pattern" not in acl
    desk = blocks["user desk-01"]
    assert "gallery" not in desk and "topic read be/xa-a/desk-01/ack" in desk
    # a self-check holds its own site's gallery (offline block list, card keys, faces)
    assert "topic read be/xa-a/gallery" in blocks["user sc-01"]
    assert "be/tv-tinh/gallery" not in blocks["user sc-01"]
    assert "topic write be/+/+/ack" in blocks["user central-bridge"]


# -- API: roles, audit, enrollment ----------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Any:
    cfg = CentralConfig(data_dir=tmp_path, security={"require": False})  # type: ignore[arg-type]
    repo = Repo(cfg.db_url)
    repo.migrate()
    readers = Readers(repo, b"k" * 32)
    cards = Cards(readers, b"c" * 32)
    identity, registry = open_identity(cfg, repo)
    app = create_app(cfg, repo, None, CentralMetrics(), readers, cards, registry)
    tokens = {
        role: Tokens(repo.engine).create(f"{role}-1", role)[1]
        for role in ("admin", "librarian", "viewer")
    }
    with TestClient(app) as client:
        client.tokens = tokens  # type: ignore[attr-defined]
        client.registry = registry  # type: ignore[attr-defined]
        client.repo = repo  # type: ignore[attr-defined]
        yield client
    repo.close()


def _as(role: str, api: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.tokens[role]}"}


def test_roles_admit_what_they_name_and_every_change_is_audited(api: Any) -> None:
    reader = {"site": "tv-tinh", "display_name": "Lê Văn C"}
    assert api.get("/api/v1/devices", headers=_as("viewer", api)).status_code == 200
    assert api.put("/api/v1/readers/P1", json=reader, headers=_as("viewer", api)).status_code == 403
    assert (
        api.put("/api/v1/readers/P1", json=reader, headers=_as("librarian", api)).status_code == 200
    )
    body = {"device_id": "gate-01", "site": "tv-tinh", "role": "gate"}
    assert (
        api.post("/api/v1/enrollments", json=body, headers=_as("librarian", api)).status_code == 403
    )
    assert api.post("/api/v1/enrollments", json=body, headers=_as("admin", api)).status_code == 201
    assert api.get("/api/v1/audit", headers=_as("librarian", api)).status_code == 403
    trail = api.get("/api/v1/audit", headers=_as("admin", api)).json()
    seen = {(a["actor"], a["method"], a["path"], a["status"]) for a in trail}
    assert ("librarian-1", "PUT", "/api/v1/readers/P1", 200) in seen
    assert ("viewer-1", "PUT", "/api/v1/readers/P1", 403) in seen
    assert ("admin-1", "POST", "/api/v1/enrollments", 201) in seen
    assert all(a["method"] != "GET" for a in trail)


def test_no_token_no_parsing_and_revoked_tokens_stop_working(api: Any) -> None:
    huge = b'{"site": "' + b"x" * (8 * 1024 * 1024) + b'"}'
    r = api.put("/api/v1/readers/P1", content=huge, headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and len(r.content) < 200  # refused before the body was read
    assert api.get("/api/v1/devices", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.get("/api/v1/health").status_code in (200, 503)  # open
    assert Tokens(api.repo.engine).revoke("viewer-1") == 1
    assert api.get("/api/v1/devices", headers=_as("viewer", api)).status_code == 401
    spec = api.get("/openapi.json").json()
    assert "401" in spec["paths"]["/api/v1/devices"]["get"]["responses"]


def _token(api: Any, device: str = "gate-01", role: str = "gate") -> str:
    body = {"device_id": device, "site": "tv-tinh", "role": role}
    r = api.post("/api/v1/enrollments", json=body, headers=_as("admin", api))
    assert r.status_code == 201, r.text
    secret, pin = parse_token(r.json()["token"])
    assert pin == api.registry.identity.ca_pin
    return secret


def _reason(r: Any) -> str:
    return str(r.json()["reason"])


def test_enrollment_refuses_reuse_expiry_mismatch_and_garbage(api: Any) -> None:
    key = pki.new_key()
    token = _token(api)
    assert api.post("/api/v1/enroll/claim", json={"token": token}).json()["device_id"] == "gate-01"
    wrong = pki.make_csr(key, pki.DeviceName("gate-99", "tv-tinh", "gate")).decode()
    r = api.post("/api/v1/enroll", json={"token": token, "csr": wrong})
    assert r.status_code == 400 and _reason(r) == "mismatched_csr"
    r = api.post("/api/v1/enroll", json={"token": token, "csr": "garbage"})
    assert r.status_code == 400 and _reason(r) == "malformed_csr"
    good = pki.make_csr(key, GATE).decode()
    r = api.post("/api/v1/enroll", json={"token": token, "csr": good})
    assert r.status_code == 200, r.text
    bundle = r.json()
    cert = pki.load_cert(bundle["certificate"].encode())
    assert pki.device_name(cert) == GATE and bundle["control_keys"] and bundle["seal_key"]
    r = api.post("/api/v1/enroll", json={"token": token, "csr": good})
    assert r.status_code == 403 and _reason(r) == "used_token"
    late = _token(api, "gate-02")
    with api.repo.engine.begin() as conn:
        conn.execute(update(enrollments).values(expires_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)))
    csr2 = pki.make_csr(key, pki.DeviceName("gate-02", "tv-tinh", "gate")).decode()
    r = api.post("/api/v1/enroll", json={"token": late, "csr": csr2})
    assert r.status_code == 403 and _reason(r) == "expired_token"
    for bad, code in (("x", 422), ("a.b", 401), ("\x00" * 150, 422), ("a.b.c.d", 401)):
        r = api.post("/api/v1/enroll", json={"token": bad, "csr": good})
        assert r.status_code == code, bad
    assert api.post("/api/v1/enroll", content=b"\xff{").status_code == 422
    device = api.get("/api/v1/devices/gate-01", headers=_as("viewer", api)).json()
    assert device["registered"] and device["role"] == "gate"
    acl = api.registry.identity.files.acl.read_text()
    assert "user gate-01" in acl and "user gate-02" not in acl


def test_renewal_needs_the_current_key_and_stops_at_revocation(api: Any) -> None:
    key = pki.new_key()
    token = _token(api)
    bundle = api.post(
        "/api/v1/enroll", json={"token": token, "csr": pki.make_csr(key, GATE).decode()}
    ).json()
    csr = pki.make_csr(key, GATE)  # a renewal certifies the key the kiosk already holds

    def renew(signer: ec.EllipticCurvePrivateKey) -> Any:
        proof = base64.b64encode(signer.sign(RENEW_DOMAIN + csr, ec.ECDSA(hashes.SHA256())))
        body = {"certificate": bundle["certificate"], "csr": csr.decode(), "proof": proof.decode()}
        return api.post("/api/v1/renewals", json=body)

    r = renew(pki.new_key())
    assert r.status_code == 401 and _reason(r) == "bad_proof"
    r = renew(key)
    assert r.status_code == 200 and r.json()["certificate"] != bundle["certificate"]
    stranger = pki.make_csr(pki.new_key(), GATE)  # a new key waits for IT...
    proof = base64.b64encode(key.sign(RENEW_DOMAIN + stranger, ec.ECDSA(hashes.SHA256())))
    body = {
        "certificate": r.json()["certificate"],
        "csr": stranger.decode(),
        "proof": proof.decode(),
    }
    r = api.post("/api/v1/renewals", json=body)
    assert r.status_code == 403 and _reason(r) == "rekey_pending"
    assert api.get("/api/v1/rekey-requests", headers=_as("viewer", api)).status_code == 403
    r = api.post("/api/v1/devices/gate-01/revoke", headers=_as("admin", api))
    assert r.json()["revoked_certificates"] == 2
    r = renew(key)
    assert r.status_code == 403 and _reason(r) == "revoked"
    # ...and ends with the device's revocation: nothing left for IT to approve
    (req,) = api.get("/api/v1/rekey-requests", headers=_as("admin", api)).json()
    assert req["state"] == "refused" and req["decided_by"] == "revocation"
    path = f"/api/v1/rekey-requests/{req['request_id']}/approve"
    assert api.post(path, headers=_as("admin", api)).status_code == 409
    crl = api.registry.identity.files.crl.read_bytes()
    from cryptography import x509

    revoked = {c.serial_number for c in x509.load_pem_x509_crl(crl)}
    assert pki.load_cert(bundle["certificate"].encode()).serial_number in revoked
    assert "user gate-01" not in api.registry.identity.files.acl.read_text()


# -- real mosquitto with TLS ---------------------------------------------------------------


class Mqtt5:
    """A paho MQTT 5 client with a certificate: PUBACK reason codes say what was denied."""

    def __init__(self, port: int, ca: Path, cert: Path | None, key: Path | None, cid: str) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        self.c.tls_set(
            ca_certs=str(ca),
            certfile=str(cert) if cert else None,
            keyfile=str(key) if key else None,
        )
        self.got: list[str] = []
        self.acks: dict[int, int] = {}
        self.connected = threading.Event()
        self.c.on_connect = lambda *a: self.connected.set() if not a[3].is_failure else None
        self.c.on_message = lambda _c, _u, m: self.got.append(m.topic)
        self.c.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc.value)
        self.error: Exception | None = None
        try:
            self.c.connect("127.0.0.1", port)
            self.c.loop_start()
        except Exception as exc:  # the TLS handshake refused us
            self.error = exc
        self.connected.wait(3)

    def publish(self, topic: str) -> int:
        info = self.c.publish(topic, b"{}", qos=1)
        deadline = time.monotonic() + 3
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.acks.get(info.mid, -1)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


#: MQTT 5 PUBACK reason codes that mean "accepted" (0x10: accepted, nobody subscribed)
ACCEPTED = (0, 16)

pytestmark_mosq = pytest.mark.skipif(mosquitto_path() is None, reason="needs mosquitto")


@pytestmark_mosq
@pytest.mark.integration
def test_kiosks_are_confined_to_their_own_topics_and_revocation_cuts_one_off(
    tmp_path: Path, make_agent: Any, central: CentralProcess, broker: BrokerProcess
) -> None:
    gate1 = make_agent("gate-01")
    gate2 = make_agent("gate-02", site="xa-b")
    gate1.start()
    gate2.start()
    with central.client() as api:
        wait_until(
            lambda: all(api.get(f"/devices/{d}").json()["online"] for d in ("gate-01", "gate-02")),
            20,
            what="both online",
        )
    # the agents step aside: a second client with a kiosk's key takes over its session
    gate1.stop()
    gate2.stop()  # its retained state stays on the broker, readable by central alone
    ident = gate1.data_dir / "identity"
    ca = ident / "ca.crt"
    # gate-01's own key, trying to pass as central's bridge
    mallory = Mqtt5(broker.port, ca, ident / "device.crt", ident / "device.key", "central-bridge")
    assert mallory.connected.is_set()
    mallory.c.subscribe([("be/xa-b/gate-02/#", 1), ("be/xa-b/gallery", 1), ("be/+/+/events", 1)])
    assert mallory.publish("be/tv-tinh/gate-01/state") in ACCEPTED  # its own topic
    for topic in (
        "be/xa-b/gate-02/events",  # another kiosk's tree
        "be/xa-b/gate-01/events",  # its own id under another site
        "be/tv-tinh/gate-01/ack",  # central's channels
        "be/tv-tinh/gate-01/desired",
        "be/tv-tinh/gallery",
    ):
        assert mallory.publish(topic) == 135, topic  # MQTT 5: not authorized
    time.sleep(1.0)
    assert mallory.got == []  # not even gate-02's retained state
    with central.client() as api:  # the certificate's CN, not the client id: central stays
        assert api.get("/health").json()["broker"] is True
    mallory.close()
    # no certificate, or one from another CA: nothing at all
    assert not Mqtt5(broker.port, ca, None, None, "anon").connected.is_set()
    other = pki.DeviceCA.create()
    k = pki.new_key()
    (tmp_path / "o.key").write_bytes(pki.key_pem(k))
    (tmp_path / "o.crt").write_bytes(
        pki.cert_pem(other.issue_device(pki.make_csr(k, GATE), GATE, 3))
    )
    assert not Mqtt5(
        broker.port, ca, tmp_path / "o.crt", tmp_path / "o.key", "x"
    ).connected.is_set()
    # revoke gate-02: cut off at once, refused at its next connect; gate-01 carries on
    ident2 = gate2.data_dir / "identity"
    live = Mqtt5(broker.port, ca, ident2 / "device.crt", ident2 / "device.key", "g2-second")
    assert live.connected.is_set() and live.publish("be/xa-b/gate-02/state") in ACCEPTED
    t0 = time.monotonic()
    with central.client() as api:
        assert api.post("/devices/gate-02/revoke").status_code == 200
    wait_until(lambda: live.publish("be/xa-b/gate-02/state") == 135, 60, what="cut off")
    cut_off_s = time.monotonic() - t0
    print(f"revoked kiosk cut off after {cut_off_s:.2f} s")
    assert cut_off_s < 60
    live.close()
    again = Mqtt5(broker.port, ca, ident2 / "device.crt", ident2 / "device.key", "g2-third")
    assert not again.connected.is_set()
    before = len(_stored(central, "gate-01"))
    gate1.stop()
    gate1.start()
    wait_until(lambda: len(_stored(central, "gate-01")) > before, 20, what="gate-01 still syncs")


def _central_ca_key(central: CentralProcess) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from biblioedge.fleet.identity import _open_file

    aead = AESGCM((central.data_dir / "keys" / "identity.key").read_bytes())
    return _open_file(aead, central.data_dir / "keys" / "device-ca.key.sealed")


def _expired(ca: pki.DeviceCA, key: ec.EllipticCurvePrivateKey, name: pki.DeviceName) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name.device_id)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(name.uri)]), False
        )
        .sign(ca.key, hashes.SHA256())
    )


def _stored(central: CentralProcess, device: str) -> list[dict[str, Any]]:
    with central.client() as api:
        return list(api.get("/events", params={"device_id": device, "limit": 1000}).json()["items"])


@pytestmark_mosq
@pytest.mark.integration
def test_enrollment_to_first_event_and_a_kiosk_that_is_not_enrolled_refuses_to_start(
    tmp_path: Path, central: CentralProcess, broker: BrokerProcess
) -> None:
    from biblioedge.demo.launch import agent_config

    data = tmp_path / "desk-07"
    agent = AgentProcess(
        data, agent_config(data, "desk-07", "desk", "tv-tinh", broker.url), central
    )
    agent.start()  # enrolls (token from the API, key and CSR here), then connects
    # how fast is `bench rollout`'s enroll_s to say; here: that it happens, on a loaded machine
    wait_until(lambda: _stored(central, "desk-07"), 120, what="first event stored")
    assert oct((data / "identity" / "device.key").stat().st_mode & 0o777) == "0o600"
    agent.stop()
    bare = tmp_path / "bare"
    lone = AgentProcess(bare, agent_config(bare, "gate-09", "gate", "tv-tinh", broker.url))
    lone.start()
    assert lone.proc is not None and lone.proc.wait(20) == 2
    assert "enroll the kiosk first" in lone.log_tail()


def test_gallery_deltas_open_only_with_the_sites_key_wrapped_to_this_gate(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from biblioedge.agent.sitekeys import SiteKeyRing
    from biblioedge.fleet.sitekeys import SiteKeyring
    from biblioedge.protocol import SiteKeys, decode

    repo = Repo(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    repo.migrate()
    central = SiteKeyring(repo.engine, AESGCM(b"k" * 32))
    ca = pki.DeviceCA.create()

    def gate(device: str, site: str = "tv-tinh") -> tuple[SiteKeyRing, str]:
        key = pki.new_key()
        name = pki.DeviceName(device, site, "gate")
        pem = pki.cert_pem(ca.issue_device(pki.make_csr(key, name), name, 30)).decode()
        folder = tmp_path / device
        pki.write_private(folder / "device.key", pki.key_pem(key))
        return SiteKeyRing(folder, device, site), pem

    ring1, pem1 = gate("gate-01")
    ring2, pem2 = gate("gate-02")
    first = central.message("gate-01", "tv-tinh", pem1)
    assert ring1.update(decode(SiteKeys, first))
    sealed = central.seal_delta("tv-tinh", b'{"base":0}')
    assert b"base" not in sealed and ring1.open(sealed) == b'{"base":0}'
    # gate-02's wrapping does not open with gate-01's key, nor is it for gate-01
    other = decode(SiteKeys, central.message("gate-02", "tv-tinh", pem2))
    with pytest.raises(ProtocolError) as err:
        ring1.update(other)
    assert err.value.reason == "device_mismatch"
    stolen = other.model_copy(update={"device_id": "gate-01", "version": 9})
    with pytest.raises(ProtocolError) as err:
        ring1.update(stolen)
    assert err.value.reason == "bad_site_keys"
    with pytest.raises(ProtocolError) as err:
        ring1.open(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    assert err.value.reason == "bad_gallery"
    # gate-02 is revoked: the key rotates; gate-01 gets the new set, gate-02 never does
    assert ring2.update(other)
    central.rotate("tv-tinh")
    after = central.seal_delta("tv-tinh", b'{"base":1}')
    with pytest.raises(ProtocolError) as err:
        ring2.open(after)
    assert err.value.reason == "unknown_site_key"
    assert ring1.update(decode(SiteKeys, central.message("gate-01", "tv-tinh", pem1)))
    assert ring1.open(after) == b'{"base":1}' and ring1.open(sealed) == b'{"base":0}'
    assert not ring1.update(decode(SiteKeys, first))  # an older set replayed: ignored
    assert SiteKeyRing(tmp_path / "gate-01", "gate-01", "tv-tinh").open(after)  # kept on disk
    other_site, pem3 = gate("gate-03", "xa-b")
    with pytest.raises(ProtocolError):
        other_site.open(after)
    repo.close()


def _cli(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "biblioedge", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.integration
def test_the_commands_it_uses_tokens_enrollment_and_api_tokens(
    tmp_path: Path, central: CentralProcess
) -> None:
    import json
    import tomllib

    conf = str(central.data_dir / "central.toml")
    out = _cli(
        "provision",
        "token",
        "--config",
        conf,
        "--site",
        "tv-tinh",
        "--role",
        "selfcheck",
        "--device",
        "sc-05",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    token = json.loads(out.stdout)["token"]
    data = tmp_path / "kiosk"
    out = _cli("enroll", "--central", central.url, "--token", token, "--data", str(data))
    assert out.returncode == 0, out.stderr
    assert "sc-05 enrolled (selfcheck at tv-tinh)" in out.stdout and "enroll:" in out.stderr
    assert oct((data / "identity" / "device.key").stat().st_mode & 0o777) == "0o600"
    agent_toml = tomllib.loads((data / "agent.toml").read_text())
    assert agent_toml["broker"]["url"].startswith("mqtts://")
    assert agent_toml["security"]["control_keys"] and agent_toml["device_id"] == "sc-05"
    again = _cli(
        "enroll", "--central", central.url, "--token", token, "--data", str(tmp_path / "x")
    )
    assert (
        again.returncode == 2 and "used_token" in again.stderr and "Traceback" not in again.stderr
    )
    forged = token[:-4] + "0000"  # the pin names another CA: never talk to that central
    out = _cli("enroll", "--central", central.url, "--token", forged, "--data", str(tmp_path / "y"))
    assert out.returncode == 2 and "does not match the token's pin" in out.stderr
    out = _cli("central", "token", "create", "--config", conf, "--name", "lan", "--role", "viewer")
    viewer = out.stdout.strip()
    with central.client(viewer) as api:
        assert api.get("/devices").status_code == 200
        assert (
            api.post(
                "/enrollments", json={"device_id": "g", "site": "s", "role": "gate"}
            ).status_code
            == 403
        )
    listed = json.loads(_cli("central", "token", "list", "--config", conf, "--json").stdout)
    assert {"lan", "launcher"} <= {t["name"] for t in listed}
    assert viewer not in json.dumps(listed)  # tokens are never shown again
    assert _cli("central", "token", "revoke", "lan", "--config", conf).returncode == 0
    with central.client(viewer) as api:
        assert api.get("/devices").status_code == 401


@pytest.mark.integration
def test_the_agent_renews_its_certificate_and_keeps_syncing(tmp_path: Path) -> None:
    from biblioedge.demo.launch import agent_config

    broker = BrokerProcess(tmp_path / "broker")
    central = CentralProcess(tmp_path / "central", broker, extra={"security": {"cert_days": 1}})
    broker.start()
    central.start()
    data = tmp_path / "gate-11"
    # due 11 s after issue (not_before is backdated 5 minutes against clock skew)
    agent = AgentProcess(
        data,
        agent_config(
            data,
            "gate-11",
            "gate",
            "tv-tinh",
            broker.url,
            security={"renew_check_s": 0.5, "renew_after": 0.0036},
        ),
        central,
    )
    try:
        agent.enroll()
        first = (data / "identity" / "device.crt").read_bytes()
        agent.start()
        wait_until(
            lambda: (data / "identity" / "device.crt").read_bytes() != first,
            40,
            what="renewed certificate",
        )
        before = len(_stored(central, "gate-11"))
        wait_until(lambda: "certificate renewed" in agent.log_tail(200), 10, what="log")
        with central.client() as api:
            api.put(
                "/devices/gate-11/desired",
                json={"base_version": 0, "config": {"log": {"level": "INFO"}}},
            )
        wait_until(
            lambda: len(_stored(central, "gate-11")) > before, 20, what="events after renewal"
        )
        assert (
            pki.load_cert(first).serial_number
            != pki.load_cert((data / "identity" / "device.crt").read_bytes()).serial_number
        )
    finally:
        agent.stop()
        central.stop()
        broker.stop()


def test_central_init_is_idempotent_and_follows_its_hostnames(tmp_path: Path) -> None:
    from biblioedge.fleet.identity import CentralIdentity

    first = CentralIdentity(tmp_path / "keys", tmp_path / "broker", ["localhost", "127.0.0.1"], 365)
    again = CentralIdentity(tmp_path / "keys", tmp_path / "broker", ["localhost", "127.0.0.1"], 365)
    assert again.ca_pin == first.ca_pin and again.signer.public_keys == first.signer.public_keys
    https = (tmp_path / "keys" / "https.crt").read_bytes()
    assert (tmp_path / "keys" / "https.crt").read_bytes() == https  # not reissued
    moved = CentralIdentity(
        tmp_path / "keys", tmp_path / "broker", ["central.lib.vn", "10.0.0.5"], 365
    )
    assert moved.ca_pin == first.ca_pin
    for path in (tmp_path / "keys" / "https.crt", tmp_path / "broker" / "server.crt"):
        assert pki.server_names(pki.load_cert(path.read_bytes())) == {"central.lib.vn", "10.0.0.5"}
    sealed = (tmp_path / "keys" / "device-ca.key.sealed").read_bytes()
    assert b"PRIVATE KEY" not in sealed
    assert oct((tmp_path / "keys" / "https.key").stat().st_mode & 0o777) == "0o600"


def test_one_token_enrolls_one_kiosk_even_when_raced(api: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from biblioedge.fleet.enrollments import EnrollmentError

    token = _token(api)

    def attempt(_: int) -> str:
        try:
            api.registry.enroll(token, pki.make_csr(pki.new_key(), GATE))
            return "enrolled"
        except EnrollmentError as exc:
            return exc.reason

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert outcomes.count("enrolled") == 1 and set(outcomes) == {"enrolled", "used_token"}


def test_the_crl_is_resigned_before_it_expires_and_left_alone_otherwise(api: Any) -> None:
    from cryptography import x509

    registry = api.registry
    path = registry.identity.files.crl
    registry.sync_broker()
    first = path.read_bytes()
    registry.sync_broker()
    assert path.read_bytes() == first  # nothing changed: no rewrite, no broker reload
    now = dt.datetime.now(dt.UTC)
    old = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(registry.identity.ca.cert.subject)
        .last_update(now - dt.timedelta(days=20))
        .next_update(now + dt.timedelta(days=5))
        .sign(registry.identity.ca.key, hashes.SHA256())
    )
    path.write_bytes(old.public_bytes(Encoding.PEM))
    registry.sync_broker()
    fresh = x509.load_pem_x509_crl(path.read_bytes())
    assert fresh.next_update_utc is not None and fresh.next_update_utc - now > dt.timedelta(days=25)

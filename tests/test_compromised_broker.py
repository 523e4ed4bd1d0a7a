"""A stolen kiosk against the broker and the renewal endpoint, on real mosquitto and central.

With one gate's own certificate and key, as a tester would: take over central's or another
kiosk's MQTT session by client id; renew twenty times in a row; renew onto a key of its own;
keep using a replaced certificate; send packets over the broker's limits. Each is refused,
and honest kiosks and central carry on.
"""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from biblioedge.demo.launch import AgentProcess, CentralProcess, agent_config, wait_until
from biblioedge.fleet.identity import CentralIdentity
from biblioedge.protocol import MAX_PAYLOAD_BYTES
from biblioedge.provisioning import pki
from biblioedge.provisioning.broker import BROKER_LIMITS, BrokerProcess, mosquitto_path
from biblioedge.provisioning.enroll import RENEW_DOMAIN, EnrollError, IdentityFiles, renew

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(mosquitto_path() is None, reason="needs mosquitto"),
]

#: MQTT 5 PUBACK reason codes: accepted (0x10: accepted, nobody subscribed), not authorized
ACCEPTED = (0, 16)
NOT_AUTHORIZED = 135


class Client:
    """A paho MQTT 5 client with a certificate that records what happens to its session."""

    def __init__(
        self, port: int, ca: Path, cert: Path, key: Path, client_id: str, subscribe: str = ""
    ) -> None:
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.c.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        self.c.reconnect_delay_set(60, 60)  # a closed session stays closed while we look
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.got: list[tuple[str, int]] = []
        self.acks: dict[int, int] = {}
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *_a: self.disconnected.set()
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, len(m.payload)))
        self.c.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc.value)
        self.topic = subscribe
        self.error: Exception | None = None
        try:
            self.c.connect("127.0.0.1", port)
            self.c.loop_start()
        except Exception as exc:  # the TLS handshake refused the certificate
            self.error = exc
        if self.error is None:  # wait until the session is up or refused (a loaded machine
            # can take seconds for a TLS handshake: the bound is generous, not a timing claim)
            wait_until(lambda: self.connected.is_set() or self.disconnected.is_set(), 60)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self.disconnected.set()
            return
        if self.topic:
            self.c.subscribe(self.topic, qos=1)
        self.connected.set()

    def publish(self, topic: str, payload: bytes = b"{}", qos: int = 1) -> int:
        """The PUBACK reason code (-1: none came)."""
        info = self.c.publish(topic, payload, qos=qos)
        wait_until(lambda: info.mid in self.acks or self.disconnected.is_set(), 60, what="PUBACK")
        return self.acks.get(info.mid, -1)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _count(path: Path, text: str) -> int:
    return path.read_text(errors="replace").count(text) if path.exists() else 0


def _stored(central: CentralProcess, device: str) -> int:
    with central.client() as api:
        items = api.get("/events", params={"device_id": device, "limit": 1000}).json()["items"]
    return len(items)


def _round_trip(central: CentralProcess, device: str, base_version: int) -> None:
    """Central tells the kiosk something new and waits for what the kiosk sends back: both
    ends of the fleet's MQTT path are connected now."""
    before = _stored(central, device)
    level = ("INFO", "DEBUG")[base_version % 2]
    with central.client() as api:
        r = api.put(
            f"/devices/{device}/desired",
            json={"base_version": base_version, "config": {"log": {"level": level}}},
        )
        assert r.status_code == 200 and r.json()["published"], r.text
    wait_until(lambda: _stored(central, device) > before, 30, what=f"{device} answers")


# -- client ids ----------------------------------------------------------------------------


def test_a_kiosk_certificate_cannot_take_over_centrals_or_another_kiosks_session(
    make_agent: Any, central: CentralProcess, broker: BrokerProcess
) -> None:
    gate = make_agent("gate-01")
    gate.enroll()  # its certificate and key are what the tester stole; the gate is off
    selfcheck = make_agent("sc-01", role="selfcheck")
    selfcheck.start()
    with central.client() as api:
        wait_until(lambda: api.get("/devices/sc-01").json()["online"], 30, what="sc-01 online")
    _round_trip(central, "sc-01", 0)
    bridge_sessions = _count(central.log_path, "bridge connected to")
    kiosk_sessions = _count(selfcheck.log_path, "connected to broker")
    assert bridge_sessions >= 1 and kiosk_sessions >= 1
    ident = gate.data_dir / "identity"
    for client_id in ("central-bridge", "sc-01", "agent-sc-01", ""):
        mallory = Client(
            broker.port, ident / "ca.crt", ident / "device.crt", ident / "device.key", client_id
        )
        assert mallory.connected.is_set(), client_id
        # the broker took the certificate's CN as client id: the session is gate-01's, with
        # gate-01's rights, whatever id it asked for
        assert mallory.publish("be/tv-tinh/gate-01/state") in ACCEPTED
        assert mallory.publish("be/tv-tinh/sc-01/events") == NOT_AUTHORIZED
        mallory.close()
    _round_trip(central, "sc-01", 1)  # after every attempt: both still connected...
    # ...on the sessions they had: neither was closed and reopened
    assert _count(central.log_path, "bridge connected to") == bridge_sessions
    assert _count(selfcheck.log_path, "connected to broker") == kiosk_sessions
    with central.client() as api:
        assert api.get("/health").status_code == 200


# -- renewal abuse ---------------------------------------------------------------------------


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[CentralProcess, BrokerProcess]]:
    """Central with a short renewal grace, so a replaced certificate's end can be watched."""
    broker = BrokerProcess(tmp_path / "broker")
    central = CentralProcess(
        tmp_path / "central",
        broker,
        extra={"security": {"renew_grace_s": 2.0, "renew_min_interval_s": 3600.0}},
    )
    broker.start()
    central.start()
    yield central, broker
    assert central.stop() == 0, central.log_tail()
    broker.stop()


def _renewal(central: CentralProcess, cert: bytes, key: Any, csr_key: Any) -> httpx.Response:
    """What a tester holding ``key`` (and its certificate ``cert``) can send."""
    name = pki.device_name(pki.load_cert(cert))
    csr = pki.make_csr(csr_key, name)
    proof = base64.b64encode(key.sign(RENEW_DOMAIN + csr, ec.ECDSA(hashes.SHA256())))
    body = {"certificate": cert.decode(), "csr": csr.decode(), "proof": proof.decode()}
    return httpx.post(
        f"{central.url}/api/v1/renewals",
        json=body,
        verify=ssl.create_default_context(cafile=central.ca_file),
        timeout=10,
    )


def _connects(broker: BrokerProcess, ident: Path, cert: Path, key: Path) -> bool:
    c = Client(broker.port, ident / "ca.crt", cert, key, "probe")
    ok = c.connected.is_set()
    c.close()
    return ok


def test_renewal_keeps_the_key_is_rate_limited_and_ends_the_replaced_certificate(
    tmp_path: Path, fleet: tuple[CentralProcess, BrokerProcess]
) -> None:
    central, broker = fleet
    honest = AgentProcess(
        tmp_path / "sc-01",
        agent_config(tmp_path / "sc-01", "sc-01", "selfcheck", "tv-tinh", broker.url),
        central,
    )
    gate = AgentProcess(
        tmp_path / "gate-01",
        agent_config(tmp_path / "gate-01", "gate-01", "gate", "tv-tinh", broker.url),
        central,
    )
    try:
        honest.start()
        gate.enroll()
        ident = gate.data_dir / "identity"
        key = pki.load_key((ident / "device.key").read_bytes())
        first = (ident / "device.crt").read_bytes()

        # twenty renewals in a row: one new certificate, then refusals
        r = _renewal(central, first, key, key)
        assert r.status_code == 200, r.text
        second = r.json()["certificate"].encode()
        assert pki.load_cert(second).public_key() == key.public_key()  # the same key
        outcomes = []
        for _ in range(19):
            r = _renewal(central, second, key, key)
            outcomes.append((r.status_code, r.json().get("reason")))
        assert set(outcomes) == {(429, "too_soon")}
        # asking again with the replaced certificate only repeats the answer it was given
        again = _renewal(central, first, key, key)
        assert again.status_code == 200 and again.json()["certificate"].encode() == second

        # onto a key of the tester's own: refused and kept for IT, once
        mallory_key = pki.new_key()
        for _ in range(3):
            r = _renewal(central, second, key, mallory_key)
            assert r.status_code == 403 and r.json()["reason"] == "rekey_pending", r.text
        r = _renewal(central, second, key, pki.new_key())
        assert r.status_code == 403 and r.json()["reason"] == "rekey_pending"
        with central.client() as api:
            pending = api.get("/rekey-requests", params={"state": "pending"}).json()
            assert [p["device_id"] for p in pending] == ["gate-01"]
            r = api.post(f"/rekey-requests/{pending[0]['request_id']}/refuse")
            assert r.status_code == 200 and r.json()["state"] == "refused"
        r = _renewal(central, second, key, mallory_key)
        assert r.status_code == 403 and r.json()["reason"] == "rekey_refused"
        with central.client() as api:  # nothing was issued for the tester's key
            certs = api.get("/rekey-requests").json()
            assert all(c["cert_serial"] is None for c in certs)

        # the replaced certificate stops at the broker once the grace is over; the new works
        (tmp_path / "second.crt").write_bytes(second)
        wait_until(
            lambda: not _connects(broker, ident, ident / "device.crt", ident / "device.key"),
            60,
            interval=0.5,
            what="the replaced certificate refused",
        )
        assert _connects(broker, ident, tmp_path / "second.crt", ident / "device.key")
        r = _renewal(central, first, key, pki.new_key())
        assert r.status_code == 403 and r.json()["reason"] == "revoked"

        # the honest kiosk never noticed
        _round_trip(central, "sc-01", 0)
    finally:
        honest.stop()


def test_a_gate_whose_certificate_a_thief_renewed_recovers_by_itself_and_it_is_told(
    tmp_path: Path, fleet: tuple[CentralProcess, BrokerProcess]
) -> None:
    central, broker = fleet
    gate = AgentProcess(
        tmp_path / "gate-01",
        agent_config(tmp_path / "gate-01", "gate-01", "gate", "tv-tinh", broker.url),
        central,
    )
    gate.start()
    try:
        with central.client() as api:
            wait_until(lambda: api.get("/devices/gate-01").json()["online"], 60, what="online")
        _round_trip(central, "gate-01", 0)
        ident = gate.data_dir / "identity"
        first = (ident / "device.crt").read_bytes()
        (tmp_path / "first.crt").write_bytes(first)
        key = pki.load_key((ident / "device.key").read_bytes())

        # the thief renews with the stolen key, long before two thirds of the life
        r = _renewal(central, first, key, key)
        assert r.status_code == 200, r.text
        issued = r.json()["certificate"].encode()
        with central.client() as api:
            cases = api.get(
                "/events", params={"device_id": "gate-01", "type": "security.attention"}
            ).json()["items"]
        assert [c["payload"]["reason"] for c in cases] == ["early_renewal"]

        # after the grace the gate's own certificate is refused; the gate restarts (its
        # connection from before the revocation would otherwise carry on)
        wait_until(
            lambda: not _connects(broker, ident, tmp_path / "first.crt", ident / "device.key"),
            60,
            interval=0.5,
            what="the replaced certificate refused",
        )
        gate.restart()
        # it asks central, which answers with the newest certificate of its key, installs
        # it, and is back on the fleet
        wait_until(
            lambda: (ident / "device.crt").read_bytes() == issued, 120, what="the new certificate"
        )
        with central.client() as api:
            wait_until(lambda: api.get("/devices/gate-01").json()["online"], 60, what="online")
        _round_trip(central, "gate-01", 1)
        assert _count(gate.log_path, "the broker refused this kiosk's certificate") >= 1

        # IT revokes the gate: central says so, and the gate stays off and says so once
        with central.client() as api:
            assert api.post("/devices/gate-01/revoke").status_code == 200
        gate.restart()
        said = "this kiosk's certificate is revoked by IT"
        wait_until(lambda: _count(gate.log_path, said) == 1, 120, what="the gate says so")
        refusals = _count(gate.log_path, "alert certificate revoked")
        wait_until(
            lambda: _count(gate.log_path, "alert certificate revoked") >= refusals + 2,
            120,
            what="more refused reconnects",
        )
        assert _count(gate.log_path, said) == 1
        assert (ident / "device.crt").read_bytes() == issued
    finally:
        gate.stop()


def test_a_rekey_that_it_approves_moves_the_kiosk_and_ends_the_old_key(
    tmp_path: Path, fleet: tuple[CentralProcess, BrokerProcess]
) -> None:
    central, broker = fleet
    gate = AgentProcess(
        tmp_path / "gate-02",
        agent_config(tmp_path / "gate-02", "gate-02", "gate", "tv-tinh", broker.url),
        central,
    )
    gate.enroll()
    ident = gate.data_dir / "identity"
    files = IdentityFiles(ident)
    old_key = files.key.read_bytes()
    (tmp_path / "old.key").write_bytes(old_key)
    asked = subprocess.run(
        [sys.executable, "-m", "biblioedge", "rekey", "--data", str(gate.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert asked.returncode == 0 and "rekey_pending" in asked.stdout, asked.stderr
    assert files.pending_key.exists() and files.key.read_bytes() == old_key  # still the old one
    with pytest.raises(EnrollError, match="rekey_pending"):  # the agent asks again: no news
        renew(central.url, files, rekey=True)
    renew(central.url, files)  # meanwhile the key in use still renews, without IT
    assert files.key.read_bytes() == old_key and files.pending_key.exists()
    (tmp_path / "in-use.crt").write_bytes(files.cert.read_bytes())
    tls = ssl.create_default_context(cafile=central.ca_file)
    with httpx.Client(base_url=central.url, verify=tls, timeout=10) as http:
        cookie = http.post("/dashboard/login", data={"token": central.token}).cookies["be_session"]
        page = http.get("/dashboard", headers={"Cookie": f"be_session={cookie}"}).text
        assert "Thiết bị xin đổi khóa, chờ IT duyệt" in page and "gate-02" in page  # IT sees it
    with central.client() as api:
        (request,) = api.get("/rekey-requests", params={"state": "pending"}).json()
        r = api.post(f"/rekey-requests/{request['request_id']}/approve")
        assert r.status_code == 200 and r.json()["state"] == "approved", r.text
        assert api.post(f"/rekey-requests/{request['request_id']}/refuse").status_code == 409
    # approving revoked the certificate in use (of the old key) at once
    wait_until(
        lambda: not _connects(broker, ident, tmp_path / "in-use.crt", tmp_path / "old.key"),
        30,
        interval=0.5,
        what="the old key refused",
    )
    renew(central.url, files, rekey=True)  # the kiosk fetches what IT approved
    assert not files.pending_key.exists() and files.key.read_bytes() != old_key
    assert pki.load_cert(files.cert.read_bytes()).public_key() == (
        pki.load_key(files.key.read_bytes()).public_key()
    )
    assert _connects(broker, ident, files.cert, files.key)


# -- the broker's own limits ---------------------------------------------------------------


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[tuple[BrokerProcess, CentralIdentity, Path]]:
    """mosquitto with the product's configuration and one enrolled gate, without central:
    a client with central's bridge certificate watches every kiosk's events."""
    ident = CentralIdentity(tmp_path / "keys", tmp_path / "files", ["127.0.0.1"], 30)
    name = pki.DeviceName("gate-01", "tv-tinh", "gate")
    key = pki.new_key()
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "device.key").write_bytes(pki.key_pem(key))
    (gate / "device.crt").write_bytes(
        pki.cert_pem(ident.ca.issue_device(pki.make_csr(key, name), name, 30))
    )
    (gate / "ca.crt").write_bytes(ident.ca_pem)
    ident.write_broker_files([name], ident.ca.crl([]))
    broker = BrokerProcess(tmp_path / "broker", kind="mosquitto", files=ident.files)
    broker.start()
    yield broker, ident, gate
    broker.stop()


def test_oversized_publishes_are_refused_by_the_broker(
    secure_broker: tuple[BrokerProcess, CentralIdentity, Path],
) -> None:
    broker, ident, gate = secure_broker
    keys = ident.keys_dir
    watcher = Client(
        broker.port,
        gate / "ca.crt",
        keys / "bridge.crt",
        keys / "bridge.key",
        "central-bridge",
        subscribe="be/+/+/events",
    )
    assert watcher.connected.is_set()
    topic = "be/tv-tinh/gate-01/events"
    kiosk = Client(broker.port, gate / "ca.crt", gate / "device.crt", gate / "device.key", "g")
    assert kiosk.connected.is_set()
    largest_batch = 900 * 1024  # sync.batch_max_bytes at its highest
    assert kiosk.publish(topic, b"a" * largest_batch) in ACCEPTED
    # over the payload ceiling, within the packet limit: dropped, never forwarded
    kiosk.c.publish(topic, b"b" * (MAX_PAYLOAD_BYTES + 1), qos=0)
    assert kiosk.publish(topic, b"marker") in ACCEPTED  # the same session goes on
    wait_until(lambda: (topic, 6) in watcher.got, 60, what="the marker")
    assert watcher.got == [(topic, largest_batch), (topic, 6)]
    # over the packet limit: the broker closes the connection, nothing is forwarded
    kiosk.c.publish(topic, b"c" * (BROKER_LIMITS["max_packet_size"] + 1), qos=1)
    wait_until(kiosk.disconnected.is_set, 60, what="the oversized sender disconnected")
    kiosk.close()
    other = Client(broker.port, gate / "ca.crt", gate / "device.crt", gate / "device.key", "g")
    assert other.publish(topic, b"after") in ACCEPTED
    wait_until(lambda: (topic, 5) in watcher.got, 60, what="the next message")
    assert watcher.got[2:] == [(topic, 5)] and not watcher.disconnected.is_set()
    other.close()
    watcher.close()

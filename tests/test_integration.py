"""Real mosquitto (or the embedded broker) on a free loopback port, real central and agent
processes: what runs on a kiosk, end to end."""

import asyncio
import sqlite3
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from biblioedge.agent.store import Store
from biblioedge.demo.launch import AgentProcess, CentralProcess, agent_config, wait_until
from biblioedge.procs import free_port
from biblioedge.protocol import MAX_PAYLOAD_BYTES
from biblioedge.provisioning.broker import BrokerProcess
from biblioedge.sim.roles import RoleSimulator

pytestmark = pytest.mark.integration


def central_db(central: CentralProcess) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{central.data_dir / 'central.sqlite3'}?mode=ro", uri=True)


def stored_seqs(central: CentralProcess, device_id: str) -> list[int]:
    with central_db(central) as conn:
        return [
            r[0] for r in conn.execute("SELECT seq FROM events WHERE device_id = ?", (device_id,))
        ]


def queue(agent: AgentProcess, n: int) -> list[int]:
    store = Store(agent.data_dir / "agent.sqlite3")
    sim = RoleSimulator("gate", "tv-tinh", seed=1)
    events = store.append(
        [sim.next_event() for _ in range(n)], device_id=agent.device_id, site="tv-tinh"
    )
    store.close()
    return [e.seq for e in events]


def outbox_depth(agent: AgentProcess) -> int:
    store = Store(agent.data_dir / "agent.sqlite3")
    try:
        return store.outbox_depth()
    finally:
        store.close()


def scrape(port: int) -> dict[str, float]:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.ConnectError:
        return {}  # not listening yet
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def device(central: CentralProcess, device_id: str) -> dict[str, Any]:
    with central.client() as api:
        r = api.get(f"/devices/{device_id}")
        return r.json() if r.status_code == 200 else {}


def test_simulated_agent_events_reach_central_and_leave_the_outbox(
    central: CentralProcess, make_agent: Any
) -> None:
    port = free_port()
    agent = make_agent(
        "gate-01", simulator={"enabled": True, "rate_per_s": 50.0}, metrics={"port": port}
    )
    agent.start()
    wait_until(lambda: len(stored_seqs(central, "gate-01")) >= 40, 30, what="40 events at central")
    dev = device(central, "gate-01")
    assert dev["online"] and dev["role"] == "gate" and dev["reported"]["software"]
    with central.client() as api:
        items = api.get("/events", params={"device_id": "gate-01", "type": "gate.decision"}).json()[
            "items"
        ]
    assert items and all(i["payload"]["decision"] in ("grant", "deny") for i in items)
    metrics = scrape(port)
    assert metrics["agent_broker_connected"] == 1
    assert metrics["agent_events_acked_total"] >= 40
    assert "agent_outbox_depth" in metrics and "agent_loop_lag_seconds_count" in metrics
    # SIGTERM: a clean stop (exit 0, not the kill after the timeout), central sees it go
    # offline; how fast is not a test's business on a shared machine
    assert agent.stop(timeout=30) == 0
    wait_until(lambda: device(central, "gate-01")["online"] is False, 10, what="offline")
    seqs = stored_seqs(central, "gate-01")
    assert len(seqs) == len(set(seqs))


def test_desired_state_applied_and_bad_desired_refused(
    central: CentralProcess, make_agent: Any
) -> None:
    agent = make_agent("selfcheck-01", role="selfcheck")
    agent.start()
    wait_until(lambda: device(central, "selfcheck-01").get("online"), 15, what="online")
    with central.client() as api:
        r = api.put(
            "/devices/selfcheck-01/desired",
            json={"base_version": 0, "config": {"simulator": {"enabled": True, "rate_per_s": 20}}},
        )
        assert r.status_code == 200 and r.json()["published"] is True
    wait_until(
        lambda: device(central, "selfcheck-01")["reported"]["desired_version"] == 1,
        15,
        what="desired v1 applied",
    )
    wait_until(
        lambda: len(stored_seqs(central, "selfcheck-01")) > 10, 15, what="simulator switched on"
    )
    # a push that touches identity is refused by the device, which keeps running on v1
    with central.client() as api:
        assert (
            api.put(
                "/devices/selfcheck-01/desired",
                json={"base_version": 1, "config": {"broker": {"url": "mqtt://elsewhere:1883"}}},
            ).status_code
            == 200
        )
    wait_until(
        lambda: (device(central, "selfcheck-01")["reported"] or {}).get("desired_error"),
        15,
        what="desired error reported",
    )
    reported = device(central, "selfcheck-01")["reported"]
    assert reported["desired_version"] == 1 and "not tunable" in reported["desired_error"]
    with central.client() as api:
        kinds = {
            i["type"]
            for i in api.get("/events", params={"device_id": "selfcheck-01", "limit": 1000}).json()[
                "items"
            ]
        }
    assert {"device.desired_applied", "device.desired_rejected", "circ.checkout"} <= kinds
    # restart: the applied desired state comes back from the local store
    agent.stop()
    agent.start()
    wait_until(
        lambda: (
            device(central, "selfcheck-01")["online"]
            and device(central, "selfcheck-01")["reported"]["desired_version"] == 1
        ),
        15,
        what="v1 after restart",
    )


def test_offline_broker_then_recovery_loses_nothing(
    broker: BrokerProcess, central: CentralProcess, make_agent: Any
) -> None:
    agent = make_agent("gate-02", simulator={"enabled": True, "rate_per_s": 100.0})
    agent.start()
    wait_until(lambda: len(stored_seqs(central, "gate-02")) > 20, 20, what="first events")
    broker.stop()
    if broker.kind == "mosquitto":  # it runs as the user who started it: it can persist
        assert (broker.data_dir / "mosquitto.db").exists()
        assert "Permission denied" not in (broker.data_dir / "broker.log").read_text()
    time.sleep(2.0)  # the kiosk keeps recording while offline
    assert agent.alive()
    queued = outbox_depth(agent)
    assert queued > 50
    broker.start()
    agent.stop()  # freeze the sequence, then everything recorded must arrive
    last = Store(agent.data_dir / "agent.sqlite3").last_seq()
    agent = make_agent("gate-02", simulator={"enabled": False})  # same data dir, quiet now
    agent.start()
    wanted = set(range(1, last + 1))
    wait_until(lambda: wanted <= set(stored_seqs(central, "gate-02")), 30, what="all events")
    seqs = stored_seqs(central, "gate-02")
    assert len(seqs) == len(set(seqs))
    wait_until(lambda: outbox_depth(agent) == 0, 10, what="empty outbox")


def test_kill_9_agent_and_central_mid_send_exactly_once(
    central: CentralProcess, make_agent: Any
) -> None:
    agent = make_agent("gate-03", sync={"batch_max_events": 200, "ack_timeout_s": 2.0})
    expected = queue(agent, 30_000)
    agent.start()
    wait_until(
        lambda: len(stored_seqs(central, "gate-03")) > 3000, 60, interval=0.01, what="sending"
    )
    agent.kill()
    agent.start()
    wait_until(
        lambda: len(stored_seqs(central, "gate-03")) > 12_000, 60, interval=0.01, what="resumed"
    )
    central.kill()
    central.start()
    wait_until(
        lambda: len(set(stored_seqs(central, "gate-03"))) >= len(expected) + 2,
        90,
        what="all events after kills",
    )
    seqs = stored_seqs(central, "gate-03")
    assert len(seqs) == len(set(seqs)), "an event was stored twice"
    assert set(expected) <= set(seqs)
    wait_until(lambda: outbox_depth(agent) == 0, 20, what="outbox drained")


def test_unregistered_device_is_held_fills_outbox_alarm_then_drains(tmp_path: Path) -> None:
    """On a broker without certificates (the embedded fallback's mode) central can only hold
    what an unknown device sends; an enrolled fleet never gets here (the broker refuses it)."""
    broker = BrokerProcess(tmp_path / "open-broker")
    central = CentralProcess(
        tmp_path / "strict", broker, extra={"accept_unknown_devices": False}, secure=False
    )
    broker.start()
    central.start()
    try:
        port = free_port()
        data = tmp_path / "desk-09"
        agent = AgentProcess(
            data,
            agent_config(
                data,
                "desk-09",
                "desk",
                "tv-tinh",
                broker.url,
                metrics={"port": port},
                simulator={"enabled": True, "rate_per_s": 200.0},
                outbox={"max_events": 200, "alarm_ratio": 0.5},
                security={"require": False},
            ),
        )
        agent.start()
        wait_until(
            lambda: scrape(port).get("agent_events_refused_total{reason=outbox_full}", 0) > 0,
            30,
            what="outbox full",
        )
        wait_until(lambda: scrape(port).get("agent_outbox_fill_ratio", 0) >= 0.5, 10, what="gauge")
        assert agent.alive()
        assert stored_seqs(central, "desk-09") == []
        with central.client() as api:
            assert (
                api.post(
                    "/devices", json={"device_id": "desk-09", "site": "tv-tinh", "role": "desk"}
                ).status_code
                == 201
            )
            api.put(
                "/devices/desk-09/desired",
                json={"base_version": 0, "config": {"simulator": {"enabled": False}}},
            )
        wait_until(lambda: outbox_depth(agent) == 0, 60, what="held events drained")
        with central.client() as api:
            items = api.get(
                "/events",
                params={"device_id": "desk-09", "type": "device.outbox_alarm", "limit": 10},
            ).json()["items"]
        assert {i["payload"]["state"] for i in items} >= {"raised"}
        seqs = stored_seqs(central, "desk-09")
        assert len(seqs) == len(set(seqs))
    finally:
        agent.stop()
        central.stop()
        broker.stop()


def _central_control_key(central: CentralProcess) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from biblioedge.fleet.identity import _open_file

    aead = AESGCM((central.data_dir / "keys" / "identity.key").read_bytes())
    raw = _open_file(aead, central.data_dir / "keys" / "control.key.sealed")
    return Ed25519PrivateKey.from_private_bytes(raw)


DESIRED = "be/tv-tinh/gate-04/desired"


async def _publish(url_port: int, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
    async with aiomqtt.Client("127.0.0.1", url_port, identifier="vandal") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, retain=retain)


def test_garbage_and_forgeries_on_the_wire_are_refused_and_counted(tmp_path: Path) -> None:
    """Someone who controls the broker (here: an open one anyone may publish to) sends
    garbage to central and forged control messages to a kiosk: central refuses what does not
    parse, and the kiosk obeys nothing that central did not sign for its own topic."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from biblioedge.provisioning import signing

    broker = BrokerProcess(tmp_path / "open-broker")
    central = CentralProcess(tmp_path / "central", broker, secure=False)
    broker.start()
    central.start()
    port = free_port()
    data = tmp_path / "gate-04"
    agent = AgentProcess(
        data,
        agent_config(data, "gate-04", "gate", "tv-tinh", broker.url, metrics={"port": port}),
        central,
    )
    agent.start()
    wait_until(lambda: device(central, "gate-04").get("online"), 15, what="online")
    mallory = Ed25519PrivateKey.generate()
    ack = orjson.dumps({"batch_id": "b", "stored": []})
    asyncio.run(
        _publish(
            broker.port,
            [
                ("be/tv-tinh/gate-04/events", b"\x00\x01garbage"),
                (
                    "be/tv-tinh/gate-04/events",
                    b'{"v":1,"batch_id":"x","device_id":"gate-04","events":[{"seq":1}]}',
                ),
                ("be/tv-tinh/gate-04/events", b"[" + b"1," * (MAX_PAYLOAD_BYTES // 2) + b"1]"),
                ("be/tv-tinh/gate-04/state", b'{"device_id":"gate-04"}'),
                ("be/BAD SITE/gate-04/events", b"{}"),
                # to the kiosk: unsigned, signed by a stranger, signed under central's kid
                ("be/tv-tinh/gate-04/desired", b"not json at all"),
                ("be/tv-tinh/gate-04/ack", ack),
                (
                    "be/tv-tinh/gate-04/desired",
                    signing.sign(mallory, "evil", "be/tv-tinh/gate-04/desired", b"{}"),
                ),
                (
                    "be/tv-tinh/gate-04/cmd",
                    signing.sign(mallory, "c1", "be/tv-tinh/gate-04/cmd", b"{}"),
                ),
            ],
        )
    )
    queue_seqs = queue(agent, 50)
    wait_until(
        lambda: set(queue_seqs) <= set(stored_seqs(central, "gate-04")),
        20,
        what="good events after garbage",
    )
    text = httpx.get(
        central.url + "/metrics",
        timeout=5,
        verify=ssl.create_default_context(cafile=central.ca_file),
        headers={"Authorization": f"Bearer {central.token}"},
    ).text
    assert 'central_messages_refused_total{reason="malformed_json"}' in text
    # over the payload ceiling: mosquitto drops it (message_size_limit) before central sees
    # it; the embedded broker has no such limit, and central refuses it itself
    oversized = 'central_messages_refused_total{reason="oversized"}' in text
    assert oversized == (broker.kind == "amqtt")
    assert 'central_messages_refused_total{reason="invalid"}' in text
    with central.client() as api:
        q = api.get("/quarantine").json()
    assert any(item["reason"] == "invalid_event" for item in q)
    # central's own signatures, replayed: on another kiosk's topic, or an old command again
    key = _central_control_key(central)
    now = datetime.now(UTC)

    def cmd(at: datetime, cid: str) -> bytes:
        doc = {"command_id": cid, "name": "report_state", "issued_at": at.isoformat()}
        return signing.sign(key, "c1", "be/tv-tinh/gate-04/cmd", orjson.dumps(doc))

    other = signing.sign(key, "c1", "be/tv-tinh/gate-99/desired", b'{"version": 50}')
    # signed by central but nested 1000 deep (once killed the kiosk's sync, then SIGTERM)
    deep = b'{"version": 60, "config": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1001
    asyncio.run(
        _publish(
            broker.port,
            [
                ("be/tv-tinh/gate-04/desired", signing.sign(key, "c1", DESIRED, deep)),
                ("be/tv-tinh/gate-04/desired", other),
                ("be/tv-tinh/gate-04/cmd", cmd(now, "c-1")),
                ("be/tv-tinh/gate-04/cmd", cmd(now, "c-1")),  # the same one recorded and replayed
                ("be/tv-tinh/gate-04/cmd", cmd(now - timedelta(hours=2), "c-0")),
            ],
        )
    )
    wait_until(
        lambda: scrape(port).get("agent_bad_messages_total{reason=stale_command}", 0) >= 1,
        10,
        what="old command refused",
    )
    m = scrape(port)
    assert m["agent_bad_messages_total{reason=replayed_command}"] >= 1
    assert m["agent_bad_messages_total{reason=bad_signature}"] >= 2
    assert m["agent_bad_messages_total{reason=unsigned}"] >= 2
    assert m["agent_bad_messages_total{reason=unknown_key}"] >= 1
    assert m["agent_bad_messages_total{reason=bad_signature}"] >= 1
    assert m["agent_bad_messages_total{reason=too_deep}"] >= 1
    assert device(central, "gate-04")["reported"]["desired_version"] == 0
    assert agent.alive() and central.alive()
    assert agent.stop() == 0  # it still obeys SIGTERM
    # retained input is hostile too: a state central's database cannot hold, waiting for
    # every restart of central (once it died within a second of each start)
    huge = orjson.dumps(
        {"device_id": "gate-04", "site": "tv-tinh", "role": "gate", "online": True}
    ).replace(b"}", b', "gallery_version": 9223372036854775808}')
    asyncio.run(_publish(broker.port, [("be/tv-tinh/gate-04/state", huge)], retain=True))
    central.restart()
    wait_until(
        lambda: 'central_messages_refused_total{reason="invalid"} 1.0' in _metrics(central),
        15,
        what="retained state refused after restart",
    )
    time.sleep(1)
    assert central.alive()
    with central.client() as api:
        assert api.get("/health").json()["status"] == "ok"
    assert central.stop() == 0
    broker.stop()


def _metrics(central: CentralProcess) -> str:
    return httpx.get(
        central.url + "/metrics",
        timeout=5,
        verify=ssl.create_default_context(cafile=central.ca_file),
        headers={"Authorization": f"Bearer {central.token}"},
    ).text

"""Central's ingestion and API, in process, on a real SQLite database migrated by Alembic."""

import time
from pathlib import Path

import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Tokens
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.db import metadata
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.repo import Incoming, Repo
from biblioedge.protocol import uuid7


@pytest.fixture
def api(tmp_path: Path, repo: Repo) -> TestClient:
    cfg = CentralConfig(data_dir=tmp_path)
    client = TestClient(create_app(cfg, repo, None, CentralMetrics()))
    client.headers["Authorization"] = f"Bearer {Tokens(repo.engine).create('tests', 'admin')[1]}"
    return client


def ev(
    seq: int, device: str = "gate-01", site: str = "tv-tinh", **over: object
) -> dict[str, object]:
    return {
        "event_id": uuid7(),
        "device_id": device,
        "site": site,
        "type": "gate.decision",
        "seq": seq,
        "occurred_at": f"2026-11-21T05:00:{seq % 60:02d}Z",
        "payload": {"decision": "grant", "patron_id": f"P{seq:06d}"},
        **over,
    }


def batch(
    events: list[dict[str, object]], device: str = "gate-01", site: str = "tv-tinh"
) -> Incoming:
    body = {"v": 1, "batch_id": uuid7(), "device_id": device, "events": events}
    return Incoming(site, device, "events", orjson.dumps(body))


#: Indexes on an expression, made per database by a migration (0013: the patron in an
#: event's JSON): SQLAlchemy's metadata does not hold them and SQLite does not reflect them.
EXPRESSION_INDEXES = {"ix_events_site_patron"}


def test_migrations_reach_the_table_definitions(repo: Repo) -> None:
    with repo.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        names = {str(i.get("name")) for i in inspect(conn).get_indexes("events")}
    assert "ix_events_site_patron" in names or repo.engine.dialect.name == "sqlite"
    assert [
        d
        for d in diff
        if not (d[0] == "remove_index" and getattr(d[1], "name", None) in EXPRESSION_INDEXES)
    ] == []
    repo.migrate()  # idempotent


def test_ingest_is_exactly_once_and_acks_everything(repo: Repo) -> None:
    events = [ev(i) for i in range(1, 101)]
    first = repo.ingest([batch(events)], accept_unknown=True)
    assert first.inserted == 100 and first.duplicates == 0
    assert first.acks[0].stored == [e["event_id"] for e in events]
    # the same events again (lost ack), and overlapping in one coalesced run
    again = repo.ingest([batch(events[:50]), batch(events[40:])], accept_unknown=True)
    assert again.inserted == 0 and again.duplicates == 110
    assert sum(len(a.stored) for a in again.acks) == 110
    assert repo.stats()["events"] == 100
    device = repo.get_device("gate-01")
    assert device is not None and device["site"] == "tv-tinh" and not device["registered"]


def test_bad_events_are_quarantined_not_lost_and_do_not_sink_the_batch(repo: Repo) -> None:
    good = ev(1)
    unknown = ev(2, type="gate.teleport")
    spoofed = ev(3, device="gate-99")
    broken = {"event_id": uuid7(), "seq": "x"}
    res = repo.ingest([batch([good, unknown, spoofed, broken])], accept_unknown=True)
    assert res.inserted == 1
    assert res.quarantined == {"unknown_type": 1, "device_mismatch": 1, "invalid_event": 1}
    ack = res.acks[0]
    assert ack.stored == [good["event_id"]]
    assert set(ack.rejected) == {unknown["event_id"], spoofed["event_id"], broken["event_id"]}
    # an event naming another device is what a stolen kiosk does: one attention case too
    assert res.security == {"device_mismatch": 1}
    assert repo.stats() == {"events": 1, "devices": 1, "quarantined": 3}
    # quarantine is idempotent too
    repo.ingest([batch([unknown])], accept_unknown=True)
    assert repo.stats()["quarantined"] == 3


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b'{"v":1,"batch_id":"b","device_id":"gate-01"}', "invalid"),
        (
            orjson.dumps({"v": 1, "batch_id": "b", "device_id": "desk-01", "events": []}),
            "device_mismatch",
        ),
    ],
)
def test_malformed_messages_are_refused_and_others_in_the_run_still_stored(
    repo: Repo, payload: bytes, reason: str
) -> None:
    res = repo.ingest(
        [Incoming("tv-tinh", "gate-01", "events", payload), batch([ev(1)])], accept_unknown=True
    )
    assert res.refused == {reason: 1}
    assert res.inserted == 1


def test_unknown_devices_are_held_until_registered(repo: Repo) -> None:
    events = [ev(1, device="gate-07")]
    res = repo.ingest([batch(events, device="gate-07")], accept_unknown=False)
    assert res.held == 1 and res.acks == [] and repo.stats()["events"] == 0
    repo.register_device("gate-07", "tv-tinh", "gate")
    res = repo.ingest([batch(events, device="gate-07")], accept_unknown=False)
    assert res.inserted == 1 and len(res.acks) == 1


def test_device_cannot_move_site_by_publishing_elsewhere(repo: Repo) -> None:
    repo.ingest([batch([ev(1)])], accept_unknown=True)
    res = repo.ingest([batch([ev(2, site="cn-2")], site="cn-2")], accept_unknown=True)
    assert res.refused == {"site_mismatch": 1} and repo.stats()["events"] == 1
    (case,) = repo.list_events(type_="security.attention")[0]
    assert case["device_id"] == "gate-01" and case["site"] == "tv-tinh"
    assert case["payload"]["reason"] == "site_mismatch"


def test_admin_auth(api: TestClient) -> None:
    assert api.get("/api/v1/devices").status_code == 200
    assert api.get("/api/v1/devices", headers={"Authorization": "Bearer nope"}).status_code == 401
    bare = TestClient(api.app)
    assert bare.get("/api/v1/devices").status_code == 401
    assert bare.get("/api/v1/health").status_code == 503  # open, but no broker here
    assert bare.get("/api/v1/health").json()["database"] is True
    assert bare.get("/metrics").status_code == 401  # metrics need a token (any role)
    assert api.get("/metrics").status_code == 200


def test_desired_state_compare_and_set(api: TestClient, repo: Repo) -> None:
    assert api.put("/api/v1/devices/gate-01/desired", json={"base_version": 0}).status_code == 404
    created = api.post(
        "/api/v1/devices", json={"device_id": "gate-01", "site": "tv-tinh", "role": "gate"}
    )
    assert created.status_code == 201 and created.json()["desired_version"] == 0
    body = {"base_version": 0, "config": {"log": {"level": "DEBUG"}}}
    first = api.put("/api/v1/devices/gate-01/desired", json=body)
    assert first.status_code == 200 and first.json()["desired"]["version"] == 1
    stale = api.put("/api/v1/devices/gate-01/desired", json=body)
    assert stale.status_code == 409 and "version 1" in stale.json()["detail"]
    dev = api.get("/api/v1/devices/gate-01").json()
    assert dev["desired_version"] == 1 and dev["desired"]["config"] == {"log": {"level": "DEBUG"}}
    assert (
        api.put("/api/v1/devices/gate-01/desired", json={"base_version": 1, "oops": 1}).status_code
        == 422
    )
    assert api.get("/api/v1/devices/nope").status_code == 404
    assert (
        api.post("/api/v1/devices", json={"device_id": "gate-01", "site": "cn-2"}).status_code
        == 409
    )
    # what no kiosk would accept is refused here, with a reason and without echoing it
    deep: dict[str, object] = {}
    for _ in range(40):
        deep = {"a": deep}
    for bad in (
        {"base_version": 1, "config": deep},
        {"base_version": 2**63},
        # model tasks and releases the wire refuses (found by schemathesis: it was a 500)
        {"base_version": 1, "models": {"dn6lD": "cg"}},
        {"base_version": 1, "models": {"embed": "not a release"}},
    ):
        r = api.put("/api/v1/devices/gate-01/desired", json=bad)
        assert r.status_code == 422 and len(r.content) < 2000, r.text
    assert api.get("/api/v1/devices/gate-01").json()["desired_version"] == 1


def test_events_filter_and_paginate(api: TestClient, repo: Repo) -> None:
    repo.ingest([batch([ev(i) for i in range(1, 26)])], accept_unknown=True)
    repo.ingest(
        [batch([ev(i, device="sc-01", type="circ.checkout") for i in range(1, 6)], device="sc-01")],
        accept_unknown=True,
    )
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"device_id": "gate-01", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/v1/events", params=params).json()
        seen += [i["event_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 25 == len(set(seen))
    only = api.get("/api/v1/events", params={"type": "circ.checkout"}).json()["items"]
    assert len(only) == 5 and {i["device_id"] for i in only} == {"sc-01"}
    window = api.get(
        "/api/v1/events",
        params={
            "since": "2026-11-21T05:00:10Z",
            "until": "2026-11-21T05:00:20Z",
            "device_id": "gate-01",
        },
    ).json()["items"]
    assert sorted(i["seq"] for i in window) == list(range(10, 20))
    oldest = api.get("/api/v1/events", params={"order": "oldest", "limit": 1}).json()["items"][0]
    assert oldest["seq"] == 1 and oldest["device_id"] == "gate-01"
    assert api.get("/api/v1/events", params={"since": "2026-11-21T05:00:10"}).status_code == 422
    # a number is not a date-time, though pydantic would read it as Unix time (schemathesis)
    for number in ("2.302581462226982e-205", "1764990000", "-1"):
        assert api.get("/api/v1/events", params={"until": number}).status_code == 422
    assert api.get("/api/v1/events", params={"cursor": "abc"}).status_code == 422
    assert api.get("/api/v1/stats").json()["events"] == 30


def test_openapi_documents_the_api(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    for path in [
        "/api/v1/health",
        "/api/v1/devices",
        "/api/v1/devices/{device_id}",
        "/api/v1/devices/{device_id}/desired",
        "/api/v1/events",
    ]:
        assert path in paths
    assert "409" in paths["/api/v1/devices/{device_id}/desired"]["put"]["responses"]
    assert "event_id" in spec["components"]["schemas"]["EventOut"]["properties"]


def _nested(depth: int) -> dict[str, object]:
    doc: dict[str, object] = {}
    for _ in range(depth):
        doc = {"x": doc}
    return doc


def test_events_that_once_killed_central_are_quarantined(repo: Repo) -> None:
    """Each of these took central's bridge down before (OverflowError in the database or in
    datetime, orjson's depth limit on the way back to the quarantine)."""
    good = ev(1)
    bad = [
        {**ev(2), "seq": 2**63},
        ev(3, occurred_at="0001-01-01T00:00:00+14:00"),
        ev(4, occurred_at="9999-12-31T23:59:59-14:00"),
        ev(6, payload=_nested(40)),
    ]
    res = repo.ingest_isolated([batch([good, *bad])], accept_unknown=True)
    assert res.inserted == 1 and res.acks[0].stored == [good["event_id"]]
    assert set(res.acks[0].rejected) == {e["event_id"] for e in bad}
    assert res.quarantined == {"invalid_event": 4}
    # no agent can write an event 500 deep (orjson stops at 254): the batch is refused whole
    import json

    body = {
        "v": 1,
        "batch_id": uuid7(),
        "device_id": "gate-01",
        "events": [ev(5, payload=_nested(500))],
    }
    msg = Incoming("tv-tinh", "gate-01", "events", json.dumps(body).encode())
    assert repo.ingest_isolated([msg], accept_unknown=True).refused == {"too_deep": 1}
    state = {
        "device_id": "gate-01",
        "site": "tv-tinh",
        "role": "gate",
        "online": True,
        "gallery_version": 2**63,
    }
    res = repo.ingest_isolated(
        [Incoming("tv-tinh", "gate-01", "state", orjson.dumps(state))], accept_unknown=True
    )
    assert res.refused == {"invalid": 1} and res.gallery_versions == []


def test_a_message_that_fails_unexpectedly_costs_only_itself(repo: Repo) -> None:
    class Broken:
        def apply(self, conn: object, event: object) -> tuple[dict[str, object], dict[str, object]]:
            raise RuntimeError("a bug in an effect")

        def result_of(self, conn: object, event: object) -> None:
            return None

    repo.effects["gate.alarm"] = Broken()  # type: ignore[assignment]
    poison = batch([ev(1, type="gate.alarm"), ev(2)])
    fine = batch([ev(3, device="gate-02")], device="gate-02")
    res = repo.ingest_isolated([poison, fine], accept_unknown=True)
    assert res.refused == {"internal:RuntimeError": 1}
    assert res.inserted == 1  # the other device's message went through
    rejected = {a.device_id: a.rejected for a in res.acks}
    assert set(rejected["gate-01"].values()) == {"internal_error"}  # the device drops it...
    kept = repo.list_quarantine()
    assert {q["reason"] for q in kept} == {"internal_error"}  # ...and central keeps it aside
    assert "a bug in an effect" in kept[0]["detail"]


# -- hardening: what once gave 500s, or was accepted and broke kiosks later ----------------


@pytest.fixture
def full_api(tmp_path: Path, repo: Repo) -> TestClient:
    from biblioedge.fleet.cards import Cards
    from biblioedge.fleet.readers import Readers

    readers = Readers(repo, b"k" * 32)
    app = create_app(
        CentralConfig(data_dir=tmp_path),
        repo,
        None,
        CentralMetrics(),
        readers,
        Cards(readers, b"c" * 32),
    )
    client = TestClient(app)
    client.headers["Authorization"] = f"Bearer {Tokens(repo.engine).create('tests', 'admin')[1]}"
    return client


def test_event_queries_at_the_edges_are_answered_not_500(api: TestClient, repo: Repo) -> None:
    repo.ingest([batch([ev(i) for i in range(1, 4)])], accept_unknown=True)
    get = api.get
    assert get("/api/v1/events", params={"cursor": str(2**64)}).status_code == 422
    assert get("/api/v1/events", params={"cursor": "-1"}).status_code == 422
    far_past = get("/api/v1/events", params={"since": "0001-01-01T00:00:00+14:00"})
    assert far_past.status_code == 200 and len(far_past.json()["items"]) == 3  # from the start
    far_future = get("/api/v1/events", params={"since": "9999-12-31T23:59:59-14:00"})
    assert far_future.status_code == 200 and far_future.json()["items"] == []
    assert get("/api/v1/events", params={"until": "0001-01-01T00:00:00Z"}).json()["items"] == []
    typo = get("/api/v1/events", params={"devce_id": "gate-01"})  # not silently "everything"
    assert typo.status_code == 422 and typo.json()["detail"][0]["loc"] == ["query", "devce_id"]


def test_a_desired_document_no_message_can_carry_is_413(api: TestClient) -> None:
    api.post("/api/v1/devices", json={"device_id": "gate-01", "site": "tv-tinh", "role": "gate"})
    sections = {f"s{j}": {f"k{i}": "x" * 1000 for i in range(64)} for j in range(13)}
    big = {"base_version": 0, "config": sections}  # 830 KB: under the 1 MiB body limit
    r = api.put("/api/v1/devices/gate-01/desired", json=big)
    assert r.status_code == 413 and "bytes" in r.json()["detail"]
    assert api.get("/api/v1/devices/gate-01").json()["desired_version"] == 0  # nothing stored


def test_a_device_that_should_not_be_there_can_be_deleted(api: TestClient, repo: Repo) -> None:
    repo.ingest([batch([ev(1, device="stray-01")], device="stray-01")], accept_unknown=True)
    assert api.get("/api/v1/devices/stray-01").status_code == 200
    assert api.delete("/api/v1/devices/stray-01").status_code == 204
    assert api.get("/api/v1/devices/stray-01").status_code == 404
    assert api.delete("/api/v1/devices/stray-01").status_code == 404
    assert api.get("/api/v1/events", params={"device_id": "stray-01"}).json()["items"]  # kept
    viewer = Tokens(repo.engine).create("v", "viewer")[1]
    api.post("/api/v1/devices", json={"device_id": "gate-02", "site": "tv-tinh"})
    r = api.delete("/api/v1/devices/gate-02", headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 403


@pytest.mark.parametrize("patron_id", ["P%201", "P%00", "P%F0%9F%98%80", "x" * 65, "-P1", "P%2F1"])
def test_reader_ids_follow_the_gallery_rules_at_the_api(
    full_api: TestClient, patron_id: str
) -> None:
    body = {"site": "tv-tinh", "display_name": "Lê Văn C"}
    assert full_api.put(f"/api/v1/readers/{patron_id}", json=body).status_code in (404, 422)
    assert full_api.put("/api/v1/readers/BE0000042", json=body).status_code == 200


def test_readers_barcodes_and_templates_refused_with_a_reason(full_api: TestClient) -> None:
    put = full_api.put
    assert (
        put(
            "/api/v1/readers/P1", json={"site": "tv-tinh", "display_name": "A", "barcode": "B1"}
        ).status_code
        == 200
    )
    clash = put(
        "/api/v1/readers/P2", json={"site": "tv-tinh", "display_name": "B", "barcode": "B1"}
    )
    assert clash.status_code == 409 and "P1" in clash.json()["detail"]
    bad_date = put(
        "/api/v1/readers/P2",
        json={"site": "tv-tinh", "display_name": "B", "expires_at": "2030-13-45"},
    )
    assert bad_date.status_code == 422
    assert (
        put("/api/v1/readers/P2", json={"site": "tv-tinh", "display_name": "B"}).status_code == 200
    )
    one = [0.1] * 128
    assert (
        put("/api/v1/readers/P1/templates", json={"model": "m@1", "templates": [one]}).status_code
        == 200
    )
    shorter = put("/api/v1/readers/P2/templates", json={"model": "m@1", "templates": [[0.1] * 64]})
    assert shorter.status_code == 409 and "128" in shorter.json()["detail"]
    zeros = put("/api/v1/readers/P2/templates", json={"model": "m@1", "templates": [[0.0] * 128]})
    assert zeros.status_code == 422 and isinstance(zeros.json()["detail"], list)
    tiny = put("/api/v1/readers/P2/templates", json={"model": "m@1", "templates": [[5e-324] * 128]})
    assert tiny.status_code == 200  # normalized without underflow


def test_nul_characters_are_refused_at_every_edge(full_api: TestClient, repo: Repo) -> None:
    """PostgreSQL stores NUL in neither text nor jsonb: each would have been a 500, or an
    event batch that fails at central for ever."""
    body = {"site": "tv-tinh", "display_name": "A\u0000B"}
    assert full_api.put("/api/v1/readers/P1", json=body).status_code == 422
    full_api.post("/api/v1/devices", json={"device_id": "gate-01", "site": "tv-tinh"})
    doc = {"base_version": 0, "config": {"k\u0000": 1}}
    assert full_api.put("/api/v1/devices/gate-01/desired", json=doc).status_code == 422
    assert full_api.get("/api/v1/events", params={"type": "gate\u0000"}).status_code == 422
    assert full_api.get("/api/v1/audit").status_code == 200  # the refused paths were audited
    good, bad, bad_id = ev(1), ev(2, payload={"note": "x\u0000"}), ev(3, event_id="e\u0000")
    result = repo.ingest([batch([good, bad, bad_id])], accept_unknown=True)
    assert result.inserted == 1 and result.quarantined == {"invalid_event": 2}
    (ack,) = result.acks
    assert ack.stored == [good["event_id"]] and set(ack.rejected) == {bad["event_id"], "e\u0000"}


async def test_health_is_degraded_while_the_bridge_cannot_publish(tmp_path: Path) -> None:
    import aiomqtt
    from httpx import ASGITransport, AsyncClient

    from biblioedge.fleet.bridge import Bridge
    from biblioedge.fleet.central import open_identity
    from biblioedge.fleet.readers import Readers

    cfg = CentralConfig(data_dir=tmp_path, security={"require": False})  # type: ignore[arg-type]
    repo = Repo(cfg.db_url)
    repo.migrate()
    identity, _ = open_identity(cfg, repo)
    bridge = Bridge(cfg, repo, CentralMetrics(), Readers(repo, b"k" * 32), identity)
    app = create_app(cfg, repo, bridge, CentralMetrics())

    class Broker:  # the one thing this test fakes: a connection whose publishes fail or pass
        fail = True

        async def publish(self, *_: object, **__: object) -> None:
            if self.fail:
                raise aiomqtt.MqttError("Operation timed out")

    link = Broker()
    bridge.connected.set()
    async with AsyncClient(transport=ASGITransport(app), base_url="http://t") as http:
        assert (await http.get("/api/v1/health")).status_code == 200
        with pytest.raises(aiomqtt.MqttError):
            await bridge._publish(link, "be/tv-tinh/gate-01/ack", b"{}")  # type: ignore[arg-type]
        r = await http.get("/api/v1/health")
        assert r.status_code == 503 and r.json()["problems"] == ["broker: publishing fails"]
        assert r.json()["broker"] is False and r.json()["database"] is True
        link.fail = False
        await bridge._publish(link, "be/tv-tinh/gate-01/ack", b"{}")  # type: ignore[arg-type]
        assert (await http.get("/api/v1/health")).status_code == 200
        bridge._restarts += [time.monotonic()] * 3  # a session that keeps failing
        assert "restarts" in (await http.get("/api/v1/health")).json()["problems"][0]
    bridge.close()
    repo.close()

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from biblioedge.protocol import (
    MAX_PAYLOAD_BYTES,
    Ack,
    DesiredState,
    EventBatch,
    ProtocolError,
    decode,
    device_topic,
    parse_device_topic,
    uuid7,
    validate_event,
)


def event(**over: object) -> dict[str, object]:
    base = {
        "event_id": uuid7(),
        "device_id": "gate-01",
        "site": "tv-tinh",
        "type": "gate.decision",
        "seq": 1,
        "occurred_at": "2026-11-21T05:00:00Z",
        "payload": {"decision": "grant"},
    }
    return {**base, **over}


def test_uuid7_is_version_7_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(50)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert len(set(ids)) == 50
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    assert stamps == sorted(stamps)


def test_topics_roundtrip_and_reject_garbage() -> None:
    assert parse_device_topic(device_topic("tv-tinh", "gate-01", "events")) == (
        "tv-tinh",
        "gate-01",
        "events",
    )
    for bad in ["be/x/y", "be/x/y/z", "other/x/y/events", "be/X!/y/events", "be/a/b/events/c"]:
        with pytest.raises(ProtocolError) as err:
            parse_device_topic(bad)
        assert err.value.reason == "bad_topic"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not json", "malformed_json"),
        (b"[1, 2]", "malformed"),
        (b'{"batch_id": "x"}', "invalid"),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), "oversized"),
        (b"", "malformed_json"),
    ],
)
def test_decode_refuses_bad_payloads_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(EventBatch, payload)
    assert err.value.reason == reason


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ProtocolError, match="Extra inputs"):
        decode(Ack, orjson.dumps({"batch_id": "b", "stored": [], "surprise": 1}))
    with pytest.raises(ProtocolError):
        decode(DesiredState, b'{"version": -1}')


def test_event_validation() -> None:
    ok = validate_event(event())
    assert ok.occurred_at == datetime(2026, 11, 21, 5, tzinfo=UTC)
    cases = {
        "unknown_type": event(type="gate.teleport"),
        "invalid_event": event(seq=0),
    }
    for reason, data in cases.items():
        with pytest.raises(ProtocolError) as err:
            validate_event(data)
        assert err.value.reason == reason
    with pytest.raises(ProtocolError, match="timezone"):
        validate_event(event(occurred_at="2026-11-21T05:00:00"))
    with pytest.raises(ProtocolError, match="device_id"):
        validate_event(event(device_id="../etc"))


def test_depth_and_integer_bounds_are_refused_with_a_reason() -> None:
    import pytest as _pytest

    from biblioedge.protocol import MAX_DEPTH, DesiredState, ProtocolError, check_depth, decode

    doc: dict[str, object] = {}
    for _ in range(MAX_DEPTH):
        doc = {"a": [doc]}
    with _pytest.raises(ProtocolError) as err:
        check_depth(doc)
    assert err.value.reason == "too_deep"
    deep = b'{"version": 1, "config": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}"
    with _pytest.raises(ProtocolError) as err:
        decode(DesiredState, deep)
    assert err.value.reason in ("too_deep", "malformed_json")
    with _pytest.raises(ProtocolError) as err:
        decode(DesiredState, b'{"version": 9223372036854775808}')
    assert err.value.reason == "invalid"

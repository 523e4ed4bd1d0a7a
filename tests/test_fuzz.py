"""Property-based fuzzing of every parser and apply step: whatever the input, only the module's
own error type comes out, and an apply is all or nothing.

Inputs are both arbitrary (bytes, text, JSON of any shape) and mutated from real documents
(a chip's DG13 and SOD, a signed card token, a CCCD QR, an MRZ), which reaches much deeper
into a parser than noise does. Runs are derandomized so CI sees the same cases every time.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from biblioedge.agent.config import AgentConfig, apply_tunables
from biblioedge.agent.gallery_store import GalleryStore
from biblioedge.agent.gallery_sync import GallerySync
from biblioedge.agent.store import Store
from biblioedge.cardtoken import CardTokenError, CardVerifier, issue
from biblioedge.drivers.cccd.errors import CccdError
from biblioedge.drivers.cccd.lds import build_dg13, parse_dg1, parse_dg13, read_ber
from biblioedge.drivers.cccd.mrz import parse_mrz_information, parse_td1
from biblioedge.drivers.cccd.pa import passive_authentication
from biblioedge.drivers.cccd.pace import parse_card_access
from biblioedge.drivers.cccd.qr import parse_qr
from biblioedge.drivers.cccd.simdata import demo_citizen, make_pki
from biblioedge.drivers.cccd.sm import read_tlv
from biblioedge.fleet.repo import Incoming, Repo
from biblioedge.protocol import (
    Ack,
    Command,
    DesiredState,
    DeskRegistration,
    EventBatch,
    GalleryDelta,
    ProtocolError,
    ReportedState,
    SiteKeys,
    decode,
    uuid7,
)
from biblioedge.settings import ConfigError

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_docs = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)
#: JSON that parses (64-bit integers, finite numbers): a message that does not parse at all
#: is refused whole, so fuzzing what is inside a message needs documents that do
parsable = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
parsable |= st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
wire_docs = st.recursive(
    parsable,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)


@st.composite
def _mutated(draw: Any, seed: bytes) -> bytes:
    buf = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if not buf:
            break
        at = draw(st.integers(0, len(buf) - 1))
        op = draw(st.sampled_from(["flip", "cut", "dup", "insert", "truncate"]))
        if op == "flip":
            buf[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del buf[at : at + draw(st.integers(1, 8))]
        elif op == "dup":
            buf[at:at] = buf[at : at + draw(st.integers(1, 16))]
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[at:]
    return bytes(buf)


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with bytes flipped, cut, duplicated or inserted: structure-aware noise."""
    return _mutated(seed)


# -- the wire --------------------------------------------------------------------------------


def _dumps(doc: Any) -> bytes:
    """Any JSON, also what orjson would refuse to write (integers past 64 bits, NaN)."""
    return json.dumps(doc).encode()


WIRE = [EventBatch, ReportedState, DesiredState, GalleryDelta, Ack, Command, SiteKeys]
WIRE.append(DeskRegistration)


@FUZZ
@given(model=st.sampled_from(WIRE), raw=st.binary(max_size=512) | json_docs.map(_dumps))
def test_decode_raises_only_protocol_errors(model: Any, raw: bytes) -> None:
    try:
        decode(model, raw)
    except ProtocolError:
        pass


def _event(seq: int, **over: Any) -> dict[str, Any]:
    return {
        "event_id": uuid7(),
        "device_id": "gate-01",
        "site": "tv-tinh",
        "type": "gate.decision",
        "seq": seq,
        "occurred_at": "2026-11-21T05:00:00Z",
        "payload": {"decision": "grant"},
        **over,
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    r = Repo(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'central.sqlite3'}")
    r.migrate()
    return r


@settings(FUZZ, max_examples=120)
@given(
    junk=st.lists(
        st.fixed_dictionaries({}, optional={k: wire_docs for k in _event(1)}) | wire_docs,
        max_size=4,
    ),
    state=wire_docs,
)
def test_ingest_stores_the_good_refuses_the_rest_and_never_raises(
    repo: Repo, junk: list[Any], state: Any
) -> None:
    good = [_event(i) for i in range(1, 4)]
    events = [*good, *junk]
    body = {"v": 1, "batch_id": uuid7(), "device_id": "gate-01", "events": events}
    messages = [
        Incoming("tv-tinh", "gate-01", "events", _dumps(body)),
        Incoming("tv-tinh", "gate-01", "state", _dumps(state)),
    ]
    result = repo.ingest_isolated(messages, accept_unknown=True)
    assert len(result.acks) == 1, (result.refused, result.quarantined, body, state)
    (ack,) = result.acks
    assert {e["event_id"] for e in good} <= set(ack.stored)  # junk beside them costs nothing
    assert not set(ack.stored) & set(ack.rejected)


# -- the kiosk's apply steps ------------------------------------------------------------------

BASE = AgentConfig(role="gate", site="tv-tinh", device_id="gate-01", data_dir=Path("/tmp/x"))


@FUZZ
@given(overrides=st.dictionaries(st.text(max_size=20), json_docs, max_size=4))
def test_desired_config_applies_or_is_refused_whole(overrides: dict[str, Any]) -> None:
    try:
        new = apply_tunables(BASE, overrides)
    except ConfigError:
        return
    assert new.device_id == BASE.device_id and new.data_dir == BASE.data_dir


@FUZZ
@given(
    overrides=st.fixed_dictionaries(
        {},
        optional={
            "gate": st.dictionaries(
                st.sampled_from(["pulse_ms", "passback_s", "cooldown_s", "card_keys"]), json_docs
            ),
            "outbox": st.dictionaries(st.sampled_from(["max_events", "alarm_ratio"]), json_docs),
            "log": st.dictionaries(st.just("level"), json_docs),
        },
    )
)
def test_tunable_values_of_any_type_are_validated(overrides: dict[str, Any]) -> None:
    try:
        apply_tunables(BASE, overrides)
    except ConfigError:
        pass


patron_ids = st.from_regex(r"\A[A-Z][0-9]{1,3}\Z")
templates = st.lists(
    st.binary(min_size=0, max_size=600).map(lambda b: base64.b64encode(b).decode())
    | st.text(max_size=20),
    max_size=3,
)
readers = st.fixed_dictionaries(
    {
        "patron_id": patron_ids,
        "display_name": st.text(max_size=30),
        "status": st.sampled_from(["active", "blocked", "expired"]),
        "barcode": st.sampled_from(["", "B1", "B2", "P1", "P2"]),
        "model": st.sampled_from(["", "dlib-resnet@1", "other@2"]),
        "templates": templates,
    }
)


@settings(FUZZ, max_examples=150)
@given(
    batches=st.lists(
        st.fixed_dictionaries(
            {
                "upserts": st.lists(readers, max_size=4),
                "removes": st.lists(patron_ids, max_size=2),
                "revoked_cards": st.lists(st.text(max_size=8), max_size=2),
            }
        ),
        min_size=1,
        max_size=4,
    )
)
def test_gallery_deltas_apply_whole_or_not_at_all(tmp_path_factory: Any, batches: Any) -> None:
    tmp = tmp_path_factory.mktemp("gate")
    store = Store(tmp / "gate.sqlite3")
    gate = GallerySync(store, GalleryStore(store, b"k" * 32))
    gate.dims["dlib-resnet@1"] = 128
    try:
        for version, doc in enumerate(batches, start=1):
            try:
                delta = GalleryDelta.model_validate(
                    {"base": version - 1, "version": version, **doc}
                )
            except ValueError:
                continue
            before = store.conn.execute("SELECT count(*) FROM patron_cache").fetchone()
            try:
                applied = gate.apply(delta)
            except ValueError:
                assert gate.version() == version - 1  # refused whole: nothing half-applied
                after = store.conn.execute("SELECT count(*) FROM patron_cache").fetchone()
                assert after == before
                return
            assume(applied)
            assert gate.version() == version
            cached = {r[0] for r in store.conn.execute("SELECT patron_id FROM patron_cache")}
            assert {r.patron_id for r in delta.upserts} - set(delta.removes) <= cached
            assert not set(delta.removes) - {r.patron_id for r in delta.upserts} & cached
            ids, mat = gate.templates.load("dlib-resnet@1", 128)  # the gate could start
            assert mat.shape == (len(ids), 128)
    finally:
        store.close()


# -- what readers hold up to a kiosk ----------------------------------------------------------

_KEY = __import__(
    "cryptography.hazmat.primitives.asymmetric.ed25519", fromlist=["Ed25519PrivateKey"]
).Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
CARD = issue(_KEY, "k1", "c-1", "P000101", valid_days=30, now=1_790_000_000)


@FUZZ
@given(token=st.text(max_size=300) | mutations(CARD.encode()).map(lambda b: b.decode("latin-1")))
def test_card_tokens_verify_or_raise_card_token_error(token: str) -> None:
    verifier = CardVerifier({"k1": _KEY.public_key()})
    try:
        claims = verifier.verify(token, now=1_790_000_100)
    except CardTokenError:
        return
    assert token.strip() == CARD and claims.pid == "P000101"  # only the real one passes


QR = "079190012345|123456789|Nguyễn Thị Bình|15031990|Nữ|12 Lê Lợi, TP Tây Ninh|01012021"


@FUZZ
@given(payload=st.text(max_size=200) | mutations(QR.encode()) | st.binary(max_size=200))
def test_cccd_qr_parses_or_raises_cccd_error(payload: str | bytes) -> None:
    try:
        parse_qr(payload)
    except CccdError:
        pass


CITIZEN = demo_citizen(b"")[0]
MRZ = "\n".join(CITIZEN.mrz()[i : i + 30] for i in (0, 30, 60))


@FUZZ
@given(
    text=st.text(max_size=120)
    | mutations(MRZ.encode()).map(lambda b: b.decode("latin-1"))
    | mutations(CITIZEN.mrz_information().encode()).map(lambda b: b.decode("latin-1"))
)
# found by this test: "²" is a digit to str.isdigit() but not to int()
@example(text=CITIZEN.mrz_information()[:3] + "²" + CITIZEN.mrz_information()[4:])
def test_mrz_parses_or_raises_cccd_error(text: str) -> None:
    for parse in (parse_td1, parse_mrz_information):
        try:
            parse(text)
        except CccdError:
            pass


DG13 = build_dg13(
    {"full_name": "Nguyễn Thị Bình", "date_of_birth": "15/03/1990", "gender": "Nữ"},
    father="Nguyễn Văn A",
    mother="Trần Thị B",
)


@FUZZ
@given(data=mutations(DG13) | st.binary(max_size=300))
def test_tlv_and_data_groups_parse_or_raise_cccd_error(data: bytes) -> None:
    for parse in (
        lambda d: read_ber(d, 0, "fuzz"),
        lambda d: read_tlv(d, 0),
        parse_dg1,
        parse_dg13,
        parse_card_access,
    ):
        try:
            parse(data)
        except CccdError:
            pass


PKI = make_pki()
FILES = CITIZEN.files(PKI)


@settings(FUZZ, max_examples=150)
@given(sod=mutations(FILES["SOD"]), dg=st.sampled_from(["DG1", "DG2", "DG13"]), bad=st.booleans())
def test_passive_authentication_reports_and_never_raises(sod: bytes, dg: str, bad: bool) -> None:
    """A forged or damaged chip is a finding to show the librarian, not an exception."""
    files = dict(FILES)
    if bad:
        files[dg] = files[dg][:-1] + bytes([files[dg][-1] ^ 1])
    result = passive_authentication(sod, files, [PKI.csca])
    assert not result.verified or (sod == FILES["SOD"] and not bad)


def test_the_seeds_are_real_documents() -> None:
    """The mutations start from documents the parsers accept: otherwise they fuzz nothing."""
    assert parse_dg13(DG13).fields["full_name"] == "Nguyễn Thị Bình"
    assert parse_qr(QR).full_name == "Nguyễn Thị Bình"
    CardVerifier({"k1": _KEY.public_key()}).verify(CARD, now=1_790_000_100)
    assert parse_td1(MRZ).document_number
    assert passive_authentication(FILES["SOD"], FILES, [PKI.csca]).verified
    assert parse_mrz_information(CITIZEN.mrz_information())

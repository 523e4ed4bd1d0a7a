"""The MQTT wire protocol shared by agents and central.

This is the only module both sides import (see docs/architecture.md). Topics are one tree per
device; payloads are JSON. Events travel in batches: an agent publishes a batch of events it
has already committed to its outbox, central stores them (insert-or-ignore on ``event_id``) and
answers on the device's ``ack`` topic with the ids it has durably stored. Only then does the
agent delete them. Delivery is at-least-once; storage is exactly-once.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

M = TypeVar("M", bound=BaseModel)

PROTOCOL_VERSION = 1
#: Hard ceiling for any payload on the wire. Mosquitto is configured with the same limit.
MAX_PAYLOAD_BYTES = 1024 * 1024
#: Most events a single batch may carry.
MAX_BATCH_EVENTS = 5000

#: Largest sequence number or version on the wire: what a signed 64-bit database column holds.
MAX_INT = 2**63 - 1
#: Deepest JSON nesting accepted anywhere (orjson cannot write past 254; nothing we send
#: needs more than a handful).
MAX_DEPTH = 32
#: Timestamps outside these years are refused: nothing real happens there, and datetime
#: arithmetic overflows near the ends of its range.
YEARS = (2000, 2200)

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_ID_RE = re.compile(ID_PATTERN)
#: Patron numbers (library cards, ILS barcodes): printed on cards, typed at desks and sent to
#: library systems, so ASCII letters, digits and ``._-`` only; 64 at most, as the gallery stores.
PATRON_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: Largest body a signed envelope can carry within MAX_PAYLOAD_BYTES (the body travels as
#: base64, and the envelope's own fields take a few hundred bytes).
MAX_SIGNED_BODY = (MAX_PAYLOAD_BYTES - 1024) * 3 // 4
_B64URL = re.compile(r"[A-Za-z0-9_-]{1,64}")

Role = Literal["gate", "selfcheck", "desk", "exitgate"]
#: Roles that hold the site's gallery (readers, card keys, revocations, face templates): the
#: gate to let readers in, the self-check to know who borrows when the library system is away
#: and to recognise the card QR, the CCCD QR and (with consent) the face. Never the desk.
GALLERY_ROLES: frozenset[str] = frozenset({"gate", "selfcheck"})
#: What a reader may consent to their face being used for: entering at the gate, and being
#: recognised at a self-check. Each is its own consent, recorded and withdrawn on its own.
FacePurpose = Literal["face_gate", "face_selfcheck"]
FACE_PURPOSES: tuple[str, ...] = ("face_gate", "face_selfcheck")
#: The purpose each gallery role uses faces for.
ROLE_PURPOSE: dict[str, str] = {"gate": "face_gate", "selfcheck": "face_selfcheck"}

#: What every role sends about itself: start, health, configuration and updates.
DEVICE_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "device.started",
        "device.outbox_alarm",
        "device.storage_full",
        "device.desired_applied",
        "device.desired_rejected",
        "device.component_crashed",
        "device.update_installed",
        "device.update_failed",
        "device.update_committed",
        "device.update_rolled_back",
    }
)

#: Event types central accepts. A type missing here is quarantined at central, not dropped.
#: Which role may send which is central's table (fleet/authz.py).
EVENT_TYPES: frozenset[str] = (
    frozenset(
        {
            # gate
            "gate.decision",
            "gate.alarm",
            # self-checkout
            "circ.checkout",
            "circ.checkin",
            "circ.renew",
            "circ.offline_queued",
            "circ.attention",
            "circ.reconciled",
            # exit security gate
            "exit.alarm",
            "exit.passages",
            # card desk
            "desk.registration",
            "reader.registered",
            "consent.recorded",
            "card.issued",
        }
    )
    | DEVICE_EVENT_TYPES
)


class ProtocolError(ValueError):
    """A payload that cannot be accepted; ``reason`` is a short machine-readable slug."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def valid_id(value: str) -> bool:
    """Site and device ids are lowercase slugs so they are safe as topic levels and file names."""
    return bool(_ID_RE.match(value))


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids sort like the events they name."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_id(value: str) -> str:
    if not valid_id(value):
        raise ValueError(f"not a valid id: {value!r} (lowercase letters, digits, '-', '_')")
    return value


def aware_utc(value: datetime) -> datetime:
    """A timestamp the database and datetime arithmetic can hold, in UTC; else ValueError."""
    if value.tzinfo is None:
        raise ValueError("must carry a timezone (UTC)")
    if not YEARS[0] <= value.year <= YEARS[1]:
        raise ValueError(f"must be between the years {YEARS[0]} and {YEARS[1]}")
    return value.astimezone(UTC)


class Event(_Strict):
    """One thing that happened on a device. Immutable once written to the outbox."""

    event_id: str = Field(min_length=1, max_length=64, description="UUIDv7, unique forever")
    device_id: str = Field(description="The device that produced the event")
    site: str = Field(description="The site (branch) of the device")
    type: str = Field(min_length=1, max_length=64, description="Dotted event type")
    seq: int = Field(ge=1, le=MAX_INT, description="The device's monotonic event sequence number")
    occurred_at: datetime = Field(description="UTC wall-clock time on the device")
    payload: dict[str, Any] = Field(default_factory=dict, description="Type-specific body")

    _v_dev = field_validator("device_id", "site")(_check_id)

    _v_at = field_validator("occurred_at")(aware_utc)


class EventBatch(_Strict):
    v: int = Field(default=PROTOCOL_VERSION, description="Protocol version")
    batch_id: str = Field(min_length=1, max_length=64)
    device_id: str
    events: list[Any] = Field(
        max_length=MAX_BATCH_EVENTS,
        description="Events, validated one by one so one bad event cannot sink the batch",
    )


class Ack(_Strict):
    v: int = PROTOCOL_VERSION
    batch_id: str
    stored: list[str] = Field(description="Event ids that are durably stored (new or already)")
    rejected: dict[str, str] = Field(
        default_factory=dict,
        description="Event id -> reason, for events quarantined at central. Also final: the "
        "device may drop them, central keeps them for inspection.",
    )
    results: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Event id -> central's answer, for events that ask one (desk.registration:"
        " the patron number and the signed card). Sent again for a resent event.",
    )


#: a model or configuration release: ``name@version``; ``builtin``: none (the defaults)
BUILTIN = "builtin"
_REF = r"^(builtin|[0-9A-Za-z][0-9A-Za-z._+-]{0,63}@[0-9A-Za-z][0-9A-Za-z._+-]{0,63})$"
ModelRef = Annotated[str, Field(pattern=_REF, max_length=64)]
ModelTask = Literal["detect", "embed", "liveness"]


class DesiredState(_Strict):
    """What IT wants a device to be. Versioned; a device applies only newer versions."""

    version: int = Field(ge=0, le=MAX_INT)
    config: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the agent's tunable settings"
    )
    software: str | None = Field(
        default=None, max_length=64, description="Wanted software release (a signed version)"
    )
    models: dict[ModelTask, ModelRef] = Field(
        default_factory=dict,
        max_length=3,
        description="Wanted model per task: name@version, or builtin for the engine's own",
    )
    config_release: ModelRef | None = Field(
        default=None, description="Wanted configuration document: name@version, or builtin"
    )
    software_floor: str | None = Field(
        default=None,
        max_length=64,
        description="Lowest software release IT allows: the kiosk installs none below it, "
        "except going back to its own previous committed release. Left out of the document "
        "when unset, so kiosks of releases before it still accept their desired state",
        exclude_if=lambda v: v is None,
    )


UpdatePhase = Literal[
    "idle", "waiting", "downloading", "installing", "restarting", "trial", "failed"
]


class UpdateOutcome(_Strict):
    version: str = Field(max_length=64)
    result: Literal["committed", "rolled_back"]
    reason: str = Field(default="", max_length=500)
    at: float = Field(ge=0)


class UpdateReport(_Strict):
    """Where a kiosk is with its software: what it runs, what it is doing about the release
    central wants, and how its last trial ended."""

    phase: UpdatePhase = "idle"
    wanted: str | None = Field(default=None, max_length=64)
    committed: str | None = Field(default=None, max_length=64)
    pending: str | None = Field(default=None, max_length=64)
    done_bytes: int = Field(default=0, ge=0, le=MAX_INT)
    total_bytes: int = Field(default=0, ge=0, le=MAX_INT)
    reason: str | None = Field(default=None, max_length=64, description="Short code")
    detail: str | None = Field(default=None, max_length=500)
    last: UpdateOutcome | None = None
    refused: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=32, description="Versions rolled back here, not retried"
    )


class ReportedState(_Strict):
    device_id: str
    site: str
    role: Role
    online: bool
    software: str = ""
    started_at: datetime | None = None
    desired_version: int = Field(
        default=0, ge=0, le=MAX_INT, description="Last desired version applied"
    )
    desired_error: str | None = Field(default=None, max_length=2000)
    outbox_depth: int = Field(default=0, ge=0, le=MAX_INT)
    components: dict[str, str] = Field(default_factory=dict, description="name -> health")
    gallery_version: int = Field(
        default=0, ge=0, le=MAX_INT, description="Site gallery version applied"
    )
    degraded: list[Annotated[str, Field(max_length=32)]] = Field(
        default_factory=list,
        max_length=16,
        description="What the kiosk cannot do now and why, e.g. disk_full",
    )
    update: UpdateReport | None = None
    models: dict[str, str] = Field(
        default_factory=dict, max_length=8, description="Active models: task -> name@version"
    )
    model_update: UpdateReport | None = Field(
        default=None, description="The model updates: versions are name@version"
    )
    config_release: str | None = Field(
        default=None, max_length=64, description="Configuration document applied (name@version)"
    )
    config_update: UpdateReport | None = None
    reported_at: datetime | None = None
    replayed: str | None = Field(
        default=None,
        max_length=64,
        description="The last replay request (after central's restore) this kiosk carried "
        "out: central asks again until it says so",
    )


class GalleryReader(_Strict):
    patron_id: str = Field(pattern=PATRON_PATTERN)
    display_name: str = Field(
        max_length=200,
        description="The given name a gate greets with (biblioedge.names), never the full name",
    )
    status: Literal["active", "blocked", "expired"]
    expires_at: str = Field(default="", max_length=10, description="YYYY-MM-DD or empty")
    barcode: str = Field(default="", max_length=64)
    model: str = Field(default="", max_length=80, description="Embedder the templates are of")
    templates: list[str] = Field(
        default_factory=list, max_length=16, description="base64 of little-endian float32"
    )
    face_purposes: list[FacePurpose] = Field(
        default_factory=list,
        max_length=2,
        description="What the reader consented their face be used for; a kiosk keeps the "
        "templates only for its own purpose. Empty with templates: a central older than "
        "purposes, whose templates meant face_gate",
    )
    citizen_ref: str = Field(
        default="",
        pattern=r"^([0-9a-f]{64})?$",
        description="Keyed hash of the reader's ID number (the desks' pepper): a self-check "
        "finds the reader by the CCCD QR with it; gates do not keep it",
    )
    sealed_greeting: str = Field(
        default="",
        max_length=1024,
        pattern=r"^[A-Za-z0-9+/=]*$",
        description="base64 of the greeting (display_name) sealed under the site's greeting "
        "key, which only gates hold; display_name is then empty. Empty: an older central, "
        "which sent display_name in clear",
    )


class GalleryDelta(_Strict):
    """Changes to a site's gallery between two versions (central's change-log positions).

    Published on ``be/{site}/gallery``. A device applies a delta only when ``base`` equals the
    version it has, all of it in one transaction, then reports ``version`` in its state;
    central answers a lagging report with the delta from that device's version. So a device
    offline for a week catches up, and one that missed a message cannot apply a later one.
    """

    v: int = PROTOCOL_VERSION
    base: int = Field(ge=0, le=MAX_INT)
    version: int = Field(ge=0, le=MAX_INT)
    upserts: list[GalleryReader] = Field(default_factory=list, max_length=1000)
    removes: list[str] = Field(
        default_factory=list, max_length=1000, description="patron ids to erase"
    )
    revoked_cards: list[str] = Field(
        default_factory=list, max_length=20_000, description="card token ids"
    )
    card_keys: dict[str, str] = Field(
        default_factory=dict,
        max_length=16,
        description="Central's card-signing public keys, kid -> base64url",
    )

    @field_validator("card_keys")
    @classmethod
    def _ed25519_keys(cls, value: dict[str, str]) -> dict[str, str]:
        """A gate that stored an undecodable key would fail every card scan: refuse it here."""
        for kid, key in value.items():
            if not 1 <= len(kid) <= 32:
                raise ValueError("card key ids are 1 to 32 characters")
            try:
                if not _B64URL.fullmatch(key):
                    raise ValueError(key)
                raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
            except (ValueError, binascii.Error) as exc:
                raise ValueError(f"card key {kid[:32]!r} is not base64url") from exc
            if len(raw) != 32:
                raise ValueError(f"card key {kid[:32]!r} is not a 32-byte ed25519 key")
        return value


class RegistrationConsent(_Strict):
    purpose: Literal["face_gate"] = "face_gate"
    granted: bool
    text_version: str = Field(min_length=1, max_length=32)
    librarian: str = Field(min_length=1, max_length=64)


class RegistrationFace(_Strict):
    model: str = Field(min_length=1, max_length=80)
    templates: list[str] = Field(
        min_length=1, max_length=16, description="base64 of little-endian float32"
    )


class RegistrationCheck(_Strict):
    """How the desk made sure the person is the card holder; kept as the audit trail."""

    method: Literal["chip_face", "qr_librarian"]
    passive_auth: Literal["ok", "unknown_csca", "failed", "absent"] = "absent"
    face_score: float | None = None
    face_threshold: float | None = None
    override_by: str | None = Field(
        default=None, max_length=64, description="Librarian who accepted a failed check"
    )
    override_reason: str | None = Field(default=None, max_length=200)


class RegistrationGuardian(_Strict):
    """A minor's registration: the guardian whose own CCCD the desk read (chip, passive
    authentication) and who consented, and the child's own consent from age 7 (Decree
    13/2023 art. 20; docs/children.md). No name, no ID number: a keyed hash of hers."""

    citizen_ref: str = Field(pattern=r"^[0-9a-f]{64}$", description="Keyed hash of her ID")
    relationship: Literal["parent", "guardian"]
    named_on_child_card: bool = Field(
        default=False, description="The child's chip (DG13) names her as father or mother"
    )
    passive_auth: Literal["ok", "unknown_csca"]
    consent: bool = Field(description="The guardian's consent to the registration")
    child_consent: bool | None = Field(
        default=None, description="The child's own consent (asked from age 7; null before)"
    )
    child_age: int = Field(ge=0, le=30, description="The child's age on the day at the desk")
    majority_age: int = Field(ge=1, le=30, description="The desk's age of majority")


def registration_context(device_id: str, registration_id: str) -> bytes:
    """What a sealed ``desk.registration`` payload is bound to: it opens only as this desk's
    event for this registration, so a sealed blob copied elsewhere is refused."""
    return f"desk.registration\0{device_id}\0{registration_id}".encode()


class DeskRegistration(_Strict):
    """Payload of ``desk.registration``: one reader registered (or re-registered) at a desk.

    ``registration_id`` is the idempotency key; ``citizen_ref`` is a keyed hash of the citizen
    ID number so central recognises a returning reader without being sent the number.
    """

    registration_id: str = Field(min_length=8, max_length=64)
    citizen_ref: str = Field(pattern=r"^[0-9a-f]{64}$")
    display_name: str = Field(min_length=1, max_length=200)
    profile: dict[str, str] = Field(
        default_factory=dict, max_length=20, description="Kept citizen-ID fields (minimal)"
    )
    consent: RegistrationConsent
    face: RegistrationFace | None = None
    check: RegistrationCheck
    card_valid_days: int = Field(default=365 * 4, ge=1, le=3650)
    prereg: str | None = Field(
        default=None,
        max_length=128,
        description="The reader's pre-registration code (BP1.…) scanned at the desk, if any",
    )
    guardian: RegistrationGuardian | None = Field(
        default=None, description="Readers under the age of majority: who consented for them"
    )


class Command(_Strict):
    v: int = PROTOCOL_VERSION
    command_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64)
    issued_at: datetime = Field(description="A kiosk runs only commands newer than the last one")
    args: dict[str, Any] = Field(default_factory=dict)

    _v_at = field_validator("issued_at")(aware_utc)


class SiteKeys(_Strict):
    """The site's gallery keys, each wrapped to this kiosk's certificate key (retained on the
    kiosk's own ``keys`` topic). ``version`` only moves forward; ``active`` seals new deltas,
    ``greeting_active`` the readers' names in them (sent to gates only)."""

    v: int = PROTOCOL_VERSION
    device_id: str
    site: str
    version: int = Field(ge=1, le=2**62)
    active: str = Field(min_length=1, max_length=32)
    keys: dict[str, str] = Field(
        max_length=16, description="kid -> base64 of the key sealed to the gate's public key"
    )
    greeting_active: str = Field(
        default="", max_length=32, description="The greeting key that seals new names"
    )
    greeting_keys: dict[str, str] = Field(
        default_factory=dict,
        max_length=16,
        description="Gates only: kid -> base64 of the site's greeting key sealed to the gate "
        "(a self-check's set has none: it cannot open the names in a delta)",
    )


# -- topics -------------------------------------------------------------------------------

TOPIC_PREFIX = "be"
DEVICE_CHANNELS = ("events", "ack", "state", "desired", "cmd", "keys")


def device_topic(site: str, device_id: str, channel: str) -> str:
    if channel not in DEVICE_CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    return f"{TOPIC_PREFIX}/{site}/{device_id}/{channel}"


def gallery_topic(site: str) -> str:
    return f"{TOPIC_PREFIX}/{site}/gallery"


def parse_device_topic(topic: str) -> tuple[str, str, str]:
    """Split ``be/{site}/{device}/{channel}``; raise ProtocolError for anything else."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_PREFIX or parts[3] not in DEVICE_CHANNELS:
        raise ProtocolError("bad_topic", topic)
    _, site, device, channel = parts
    if not (valid_id(site) and valid_id(device)):
        raise ProtocolError("bad_topic", topic)
    return site, device, channel


# -- payload decoding ---------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return orjson.dumps(obj)


#: A batch is checked loosely (below what orjson can write back), its events one by one
#: against MAX_DEPTH, so one deep event is quarantined without sinking its batch.
BATCH_DEPTH = 200


def decode(
    model: type[M], payload: bytes | bytearray | str, max_depth: int = MAX_DEPTH, nul: bool = False
) -> M:
    """Size-check, parse and validate a payload; every failure becomes a ProtocolError.
    ``nul``: let NUL characters through (an event batch: each event is checked on its own,
    so one bad event costs that event, not the batch)."""
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("oversized", f"{len(raw)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("malformed_json", str(exc)) from exc
    if not isinstance(data, dict):
        raise ProtocolError("malformed", f"expected a JSON object, got {type(data).__name__}")
    check_depth(data, max_depth, nul)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError("invalid", _short(exc)) from exc


def check_depth(doc: Any, limit: int = MAX_DEPTH, nul: bool = False) -> None:
    """ProtocolError ``too_deep`` past ``limit`` levels of nesting, or ``nul_character`` for a
    NUL in any string or key (PostgreSQL can store neither in text nor in jsonb, so such a
    document would fail at central for ever). Iterative: a hostile document cannot exhaust
    the stack here either."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise ProtocolError("too_deep", f"JSON nested deeper than {limit} levels")
        if isinstance(node, dict):
            for k, v in node.items():
                if not nul and isinstance(k, str) and "\x00" in k:
                    raise ProtocolError("nul_character", "a key holds a NUL character")
                stack.append((v, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif not nul and isinstance(node, str) and "\x00" in node:
            raise ProtocolError("nul_character", "a string holds a NUL character")


def validate_event(data: Any) -> Event:
    if not isinstance(data, dict):
        raise ProtocolError(
            "invalid_event", f"an event is a JSON object, not {type(data).__name__}"
        )
    try:
        check_depth(data)
    except ProtocolError as exc:
        raise ProtocolError("invalid_event", exc.detail) from exc
    try:
        event = Event.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError("invalid_event", _short(exc)) from exc
    if event.type not in EVENT_TYPES:
        raise ProtocolError("unknown_type", event.type)
    return event


def _short(exc: ValidationError) -> str:
    errs = exc.errors()
    first = errs[0]
    loc = ".".join(str(p) for p in first["loc"])
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{loc}: {first['msg']}{more}"

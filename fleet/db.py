"""Central's database: SQLAlchemy 2 Core tables, SQLite by default and PostgreSQL by URL.

Schema changes go through Alembic (``fleet/migrations``); these table definitions are the
target the migrations must reach, and a test checks that they agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the backend stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


BigId = BigInteger().with_variant(Integer(), "sqlite")

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("site", String(64), nullable=False, index=True),
    Column("role", String(16), nullable=True),
    Column("registered", Boolean, nullable=False, default=False),
    Column("first_seen", UTCDateTime, nullable=True),
    Column("last_seen", UTCDateTime, nullable=True),
    Column("online", Boolean, nullable=False, default=False),
    Column("reported", JSON, nullable=True),
    Column("reported_at", UTCDateTime, nullable=True),
    Column("desired", JSON, nullable=True),
    Column("desired_version", Integer, nullable=False, default=0),
    Column("desired_updated_at", UTCDateTime, nullable=True),
    Column("labels", JSON, nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("device_id", String(64), nullable=False),
    Column("site", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("payload", JSON, nullable=False),
    Index("ix_events_device_seq", "device_id", "seq"),
    Index("ix_events_site_occurred", "site", "occurred_at"),
    Index("ix_events_type_occurred", "type", "occurred_at"),
)

quarantine = Table(
    "quarantined_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=True, unique=True),
    Column("device_id", String(64), nullable=False),
    Column("site", String(64), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)


#: The reader's name is sealed like templates and profiles (AES-GCM under central's template
#: key, bound to the patron id): central finds readers by patron id, barcode or the keyed hash
#: of the ID number, never by name, so the name need not be readable in the database.
readers = Table(
    "readers",
    metadata,
    Column("patron_id", String(64), primary_key=True),
    Column("site", String(64), nullable=False, index=True),
    Column("name_nonce", LargeBinary, nullable=False),
    Column("name_sealed", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("expires_at", String(10), nullable=False),
    Column("barcode", String(64), nullable=True, unique=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

templates = Table(
    "templates",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("patron_id", String(64), nullable=False, index=True),
    Column("model", String(80), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("patron_id", "model", "slot", name="uq_templates_slot"),
)

#: Every change to a site's gallery appends a row; its ``seq`` is the gallery version.
gallery_log = Table(
    "gallery_log",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("site", String(64), nullable=False),
    Column("patron_id", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_gallery_log_site_seq", "site", "seq"),
)

card_revocations = Table(
    "card_revocations",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("patron_id", String(64), nullable=False),
    Column("revoked_at", UTCDateTime, nullable=False),
)


card_keys = Table(
    "card_keys",
    metadata,
    Column("kid", String(32), primary_key=True),
    Column("public_key", String(64), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("sealed_private_key", LargeBinary, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime, nullable=True),
)

cards = Table(
    "cards",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("patron_id", String(64), nullable=False, index=True),
    Column("kid", String(32), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

consents = Table(
    "consents",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("patron_id", String(64), nullable=False, index=True),
    Column("purpose", String(32), nullable=False),
    Column("text_version", String(32), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("librarian", String(64), nullable=False),
    Column("idempotency_key", String(64), nullable=True, unique=True),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("withdrawn_at", UTCDateTime, nullable=True),
    Column("sites", JSON, nullable=True, comment="branches it covers; null: every branch"),
)


#: One row per desk registration: the idempotency key and what central answered, so a desk
#: that resends (lost ack, restart) gets the same patron and card, not a second one.
registrations = Table(
    "registrations",
    metadata,
    Column("registration_id", String(64), primary_key=True),
    Column("patron_id", String(64), nullable=False, index=True),
    Column("device_id", String(64), nullable=False),
    Column("result", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

#: The registrations of readers erased at central (migration 0024): a desk's registration
#: event that comes again after a restore (a kiosk's replay) makes no reader. Names no one:
#: a registration id and when it was erased.
erased_registrations = Table(
    "erased_registrations",
    metadata,
    Column("registration_id", String(64), primary_key=True),
    Column("erased_at", UTCDateTime, nullable=False),
)

#: The fields a desk kept from the citizen ID (configurable, minimal), sealed like templates.
#: ``citizen_ref`` is a keyed hash of the ID number: it finds a returning reader without
#: storing the number.
reader_profiles = Table(
    "reader_profiles",
    metadata,
    Column("patron_id", String(64), primary_key=True),
    Column("citizen_ref", String(64), nullable=False, unique=True),
    Column("nonce", LargeBinary, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)


#: A minor's registration: who consented for her (migration 0018, fleet/guardians.py). The
#: guardian is a keyed hash of her ID number, never her name or number; ``adult_on`` is the
#: day the reader reaches the desk's age of majority (her own consent is needed from then,
#: and the library system's category follows it when no date of birth is kept).
guardian_consents = Table(
    "guardian_consents",
    metadata,
    Column("patron_id", String(64), primary_key=True),
    Column("registration_id", String(64), nullable=False),
    Column("guardian_ref", String(64), nullable=False, index=True),
    Column("relationship", String(16), nullable=False, comment="parent or guardian"),
    Column("named_on_child_card", Boolean, nullable=False),
    Column("passive_auth", String(16), nullable=False),
    Column("child_age", Integer, nullable=False, comment="on the day at the desk"),
    Column("child_consent", Boolean, nullable=True, comment="null: under the age asked"),
    Column("adult_on", String(10), nullable=False, comment="YYYY-MM-DD"),
    Column("librarian", String(64), nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
)

#: Device certificates central issued: renewals add rows; revoking a device revokes them all
#: (the CRL lists every serial here with ``revoked_at``).
device_certs = Table(
    "device_certs",
    metadata,
    Column("serial", String(40), primary_key=True, comment="hex"),
    Column("device_id", String(64), nullable=False, index=True),
    Column("site", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("pem", Text, nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("not_after", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("renewed_from", String(40), nullable=True, comment="serial this renewal replaced"),
    Column(
        "revoke_at",
        UTCDateTime,
        nullable=True,
        comment="a replaced certificate's revocation, after the renewal's grace",
    ),
)

#: A renewal that asks for a new key: refused, kept here until IT approves or refuses it.
rekey_requests = Table(
    "rekey_requests",
    metadata,
    Column("request_id", String(32), primary_key=True),
    Column("device_id", String(64), nullable=False, index=True),
    Column("site", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("current_serial", String(40), nullable=False, comment="the certificate that asked"),
    Column("key_sha256", String(64), nullable=False, comment="SHA-256 of the new key's SPKI"),
    Column("csr", Text, nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("state", String(16), nullable=False, comment="pending, approved or refused"),
    Column("decided_by", String(64), nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("cert_serial", String(40), nullable=True, comment="issued on approval"),
)

#: One-time enrollment tokens, bound to one device; only a hash of the secret is kept.
enrollments = Table(
    "enrollments",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("secret_hash", String(64), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("site", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
)

#: Named API tokens with a role; only a hash of the token is kept.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

#: Who changed what through the API, and when.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", String(300), nullable=False),
    Column("status", Integer, nullable=False),
)

#: Each site's gallery key: AES-256, sealed under central's key, wrapped to each gate.
site_keys = Table(
    "site_keys",
    metadata,
    Column("kid", String(32), primary_key=True),
    Column("site", String(64), nullable=False, index=True),
    Column("nonce", LargeBinary, nullable=False),
    Column("sealed_key", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime, nullable=True),
)


#: A release rolled out to a selection of kiosks in waves.
rollouts = Table(
    "rollouts",
    metadata,
    Column("rollout_id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("release", String(64), nullable=False),
    Column("selector", JSON, nullable=False),
    Column("plan", JSON, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("wave", Integer, nullable=False),
    Column("halt_reason", Text, nullable=True),
    Column("history", JSON, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: Each kiosk of a rollout: its wave, where it is, what it ran before.
rollout_targets = Table(
    "rollout_targets",
    metadata,
    Column("rollout_id", String(32), primary_key=True),
    Column("device_id", String(64), primary_key=True),
    Column("site", String(64), nullable=False),
    Column("wave", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("previous", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Index("ix_rollout_targets_device", "device_id"),
)


#: Pushes to the library system (fleet/ils): one row per lifecycle change of a reader, sent in
#: ``id`` order per reader. No personal data: the push reads the reader's current state when it
#: is sent; ``data`` holds only what a change needs once the reader is gone (an erasure).
ils_queue = Table(
    "ils_queue",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("patron_id", String(64), nullable=False),
    Column("op", String(16), nullable=False),
    Column("data", JSON, nullable=False),
    Column("state", String(16), nullable=False, comment="pending, held or done"),
    Column("attempts", Integer, nullable=False),
    Column("next_at", UTCDateTime, nullable=False),
    Column("reason", String(64), nullable=True),
    Column("detail", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("done_at", UTCDateTime, nullable=True),
    Index("ix_ils_queue_state_next", "state", "next_at"),
    Index("ix_ils_queue_patron", "patron_id", "id"),
)

#: What the library system holds for a reader: its own id, the card number, the status it
#: last reported (status back: blocked, expired or deleted there is refused at kiosks).
ils_links = Table(
    "ils_links",
    metadata,
    Column("patron_id", String(64), primary_key=True),
    Column("ils_id", String(64), nullable=False),
    Column("cardnumber", String(64), nullable=False),
    Column("ils_status", String(16), nullable=False),
    Column("synced_at", UTCDateTime, nullable=False),
    Column("checked_at", UTCDateTime, nullable=True),
)


#: Staff cases from kiosks (``circ.attention`` events) a librarian marked handled (0019).
staff_cases_handled = Table(
    "staff_cases_handled",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("handled_by", String(64), nullable=False),
    Column("handled_at", UTCDateTime, nullable=False),
)

#: The card number each reader's last printed card carries (0019): "" when it was printed
#: before the library system assigned her number, so the librarian's page lists a reprint.
card_prints = Table(
    "card_prints",
    metadata,
    Column("patron_id", String(64), primary_key=True),
    Column("card_number", String(64), nullable=False, comment='"" : not yet assigned'),
    Column("printed_at", UTCDateTime, nullable=False),
    Column("printed_by", String(64), nullable=False),
)


def _json(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            json_serializer=_json,
            json_deserializer=orjson.loads,
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # An ack promises the event is on disk: commit must survive power loss.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            # Deleted rows are overwritten, not left in free pages: an erased reader, or a
            # name a migration sealed, is not still in the file's bytes.
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        return engine
    return create_engine(
        url, json_serializer=_json, json_deserializer=orjson.loads, pool_pre_ping=True
    )


#: The report figures that are columns of ``report_hours`` (a dot in a name is an underscore
#: in its column's): every figure a report always shows. Breakdowns by a free reason
#: (``refusals.blocked``, ``items_refused.hold``) are the row's ``breakdown``.
HOUR_FIGURES: tuple[str, ...] = (
    "gate_visits",
    "visits.adult",
    "visits.child",
    "visits.unknown",
    "refusals",
    "exit_in",
    "exit_out",
    "exit_alarms",
    "loans",
    "offline_loans",
    "returns",
    "renewals",
    "items_refused",
    "offline_settled",
    "offline_refused",
    "cards_new",
    "cards_new.adult",
    "cards_new.child",
    "cards_new.unknown",
    "cards_renewed",
    "cards_replaced",
    "erasures",
    "preregistrations",
)

#: Report figures kept at ingest, in the transaction that stores the events they count
#: (fleet/reports): one wide row per site, UTC hour and kiosk, so that a year by hour reads
#: ~50,000 rows, not a row per figure (migration 0023).
report_hours = Table(
    "report_hours",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("hour", Integer, primary_key=True, comment="hours since 1970-01-01T00:00Z"),
    Column("device_id", String(64), primary_key=True),
    *(
        Column(f.replace(".", "_"), BigInteger, nullable=False, server_default="0")
        for f in HOUR_FIGURES
    ),
    Column("breakdown", Text, nullable=True, comment="JSON {figure: count} of the breakdowns"),
    sqlite_with_rowid=False,  # the key is the order reports read in: no second copy
)

#: Which readers came to a site on a (local) day: unique readers over any run of days.
report_readers = Table(
    "report_readers",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("day", Integer, primary_key=True, comment="the library's local day since 1970-01-01"),
    Column("patron_id", String(64), primary_key=True),
    sqlite_with_rowid=False,
)

#: Events stored and not yet counted into the report figures (fleet/reports/pending.py): put
#: here by the transaction that stores them, taken by the one that counts them.
report_pending = Table(
    "report_pending",
    metadata,
    Column("event_id", String(64), primary_key=True),
    sqlite_with_rowid=False,
)

#: Which days of a (local) year a reader came to a site: bit ``j % 62`` of ``d{j // 62}`` for
#: the year's day ``j`` (0 = 1 January). Unique readers over any days of a year is then a
#: count of these rows (a reader a row), not a distinct count of every reader-day.
report_reader_years = Table(
    "report_reader_years",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("patron_id", String(64), primary_key=True),
    *(Column(f"d{i}", BigInteger, nullable=False, server_default="0") for i in range(6)),
    sqlite_with_rowid=False,
)

#: Each reader's latest gate grants per site (those at the latest time): whether a grant in
#: time order is a visit is then one key look-up, not a scan of the passback window
#: (fleet/reports/rollup.py ``Tail``).
report_last_grants = Table(
    "report_last_grants",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("patron_id", String(64), primary_key=True),
    Column(
        "at_us", BigInteger, nullable=True, comment="microseconds since 1970 UTC; none: being made"
    ),
    Column("event_id", String(64), nullable=True, comment="the greatest id at that time"),
    Column("first_event_id", String(64), nullable=True, comment="the first grant at that time"),
    Column("first_device_id", String(64), nullable=True),
    Column("first_counted", Boolean, nullable=True, comment="whether the first is a visit"),
)

#: A reader's age band, kept at registration so that reports never open sealed profiles.
reader_bands = Table(
    "reader_bands",
    metadata,
    Column("patron_id", String(64), primary_key=True),
    Column("band", String(8), nullable=False, comment="adult, child or unknown"),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: The alert conditions central is tracking (fleet/alerts): since when, and whether told.
alert_state = Table(
    "alert_state",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("detail", Text, nullable=False),
    Column("since", UTCDateTime, nullable=False),
    Column("fired_at", UTCDateTime, nullable=True),
)

#: Alert messages waiting for their target (e-mail, a webhook), kept until it takes them.
alert_outbox = Table(
    "alert_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("target", String(32), nullable=False),
    Column("body", JSON, nullable=False),
    Column("state", String(16), nullable=False, comment="pending, sent or dropped"),
    Column("attempts", Integer, nullable=False),
    Column("next_at", UTCDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("done_at", UTCDateTime, nullable=True),
    Index("ix_alert_outbox_state_next", "state", "next_at"),
)

#: Register from home (fleet/prereg.py): the form's data sealed until the desk confirms it or it
#: expires; a used one keeps only its id, times and patron number (a second use is refused).
preregistrations = Table(
    "preregistrations",
    metadata,
    Column("prereg_id", String(32), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
    Column("nonce", LargeBinary, nullable=True),
    Column("sealed", LargeBinary, nullable=True),
    Column("used_at", UTCDateTime, nullable=True),
    Column("patron_id", String(64), nullable=True),
)

#: A card offered to the reader's phone (fleet/phonecard.py): the token sealed under a key only
#: her pick-up link holds, until the pick-up expires.
phone_cards = Table(
    "phone_cards",
    metadata,
    Column("pickup_id", String(32), primary_key=True),
    Column("patron_id", String(64), nullable=False, index=True),
    Column("card_jti", String(64), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

#: Central replicas (PostgreSQL only, fleet/replicas.py): the one lease the leader holds, its
#: epoch raised at every change of holder (the fencing token the leader's writes check).
central_lease = Table(
    "central_lease",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

#: The replicas that have run on this database, with the schema each runs (its bridge user
#: is in the broker's ACL; /health lists them).
central_replicas = Table(
    "central_replicas",
    metadata,
    Column("replica_id", String(64), primary_key=True),
    Column("schema_rev", String(32), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
)

#: Changes made at central (API, CLI), one record per committed transaction, sealed to the
#: backup key and chained by MAC; shipped beside the backups (fleet/backup/journal.py).
central_journal = Table(
    "central_journal",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False, comment="UTC, ISO 8601"),
    Column("mac", String(64), nullable=False, comment="HMAC chaining this record"),
    Column("record", LargeBinary, nullable=False, comment="the sealed record"),
    Column("shipped_at", String(40), nullable=True),
)

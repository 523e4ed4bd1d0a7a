"""Offline-first sync between one agent and central over MQTT.

Outbound: events are already durable in the outbox when they get here. The sender reads them in
seq order, publishes batches at QoS1 with up to ``max_inflight_batches`` unacknowledged, and
deletes rows only when central's ack names them. A batch not acknowledged in time makes the
sender rewind and publish everything still in the outbox again; central ignores what it has,
so a lost ack costs bandwidth, never data.

Inbound: acks, the retained desired-state document, commands and gallery deltas, each signed
by central (``provisioning.signing``) and verified against the control keys the kiosk got at
enrollment before anything is acted on: even whoever controls the broker cannot make a kiosk
delete its outbox, change its settings or let a stranger in. Anything unsigned, wrongly signed,
stale or malformed is refused with a logged reason and a counted metric; the connection stays up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiomqtt
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from biblioedge import __version__
from biblioedge.agent.config import AgentConfig
from biblioedge.agent.metrics import AgentMetrics
from biblioedge.agent.sitekeys import SiteKeyRing
from biblioedge.agent.store import AsyncStore, Store
from biblioedge.agent.supervisor import Context
from biblioedge.logs import fields
from biblioedge.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Command,
    DesiredState,
    GalleryDelta,
    ProtocolError,
    ReportedState,
    SiteKeys,
    UpdateReport,
    decode,
    device_topic,
    dumps,
    gallery_topic,
    utc_now,
    uuid7,
)
from biblioedge.provisioning import signing
from biblioedge.provisioning.enroll import IdentityFiles
from biblioedge.retry import Backoff, Transition
from biblioedge.settings import MQTT_SOCKET_OPTIONS

log = logging.getLogger("biblioedge.agent.sync")

DesiredHandler = Callable[[DesiredState], Awaitable[None]]
GalleryHandler = Callable[[GalleryDelta], Awaitable[None]]
StateProvider = Callable[[], ReportedState]


@dataclass
class _Inflight:
    sent_at: float
    event_ids: list[str]


#: How often acknowledged events past outbox.keep_acked_h are forgotten.
KEPT_PRUNE_EVERY_S = 600.0


@dataclass
class SyncStatus:
    connected: bool = False
    connected_at: float | None = None
    inflight: dict[str, _Inflight] = field(default_factory=dict)


class Sync:
    """The component that owns the MQTT connection of one agent."""

    name = "sync"

    def __init__(
        self,
        config_ref: Callable[[], AgentConfig],
        store: AsyncStore,
        metrics: AgentMetrics,
        state: StateProvider,
        on_desired: DesiredHandler,
        on_gallery: GalleryHandler | None = None,
    ) -> None:
        self._cfg = config_ref
        self.store = store
        self.metrics = metrics
        self._state = state
        #: the backup id of the last replay carried out, said in every state report after it
        self._replayed: str | None = None
        self._on_desired = on_desired
        self._on_gallery = on_gallery
        self.status = SyncStatus()
        #: called after central's answers to some events were stored (the desk waits on them)
        self.answer_listeners: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._state_dirty = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._cursor = 0
        self._link = Transition(log, "broker")
        self._last_command: datetime | None = None
        self._pruned_at = 0.0
        self._reconnect = asyncio.Event()
        #: set when the broker refused our certificate in the TLS handshake (Renewal asks
        #: central whether it was replaced)
        self.cert_refused = asyncio.Event()
        cfg = config_ref()
        # paho logs the handshake's alert (aiomqtt only says the connect timed out): watch
        # this kiosk's MQTT log for it
        self._mqtt_log = logging.getLogger(f"mqtt.{cfg.device_id}")
        self._mqtt_log.addFilter(_RefusalWatch(self.cert_refused))
        #: the site's gallery keys (GALLERY_ROLES only: the desk keeps no templates); the
        #: greeting keys, which open names, only on a gate
        self.site_keys = (
            SiteKeyRing(cfg.identity_dir, cfg.device_id, cfg.site, greets=cfg.role == "gate")
            if on_gallery
            else None
        )
        self.control_keys: dict[str, Ed25519PublicKey] = {
            kid: signing.load_public(k) for kid, k in config_ref().security.control_keys.items()
        }

    # -- called by other components -------------------------------------------------------

    def wake(self) -> None:
        """New events are in the outbox."""
        self._wake.set()

    def state_changed(self) -> None:
        self._state_dirty.set()

    def reconnect(self) -> None:
        """Drop the connection so the next one uses a renewed certificate."""
        self._reconnect.set()

    # -- the component ------------------------------------------------------------------

    async def run(self, ctx: Context) -> None:
        cfg = self._cfg()
        backoff = Backoff(base=0.2, cap=15.0)
        self._link = Transition(log, f"broker {cfg.broker.url}")
        while True:
            ctx.heartbeat()
            try:
                await self._session(ctx)
            except* aiomqtt.MqttError as group:
                self._link.failed(group.exceptions[0])
                if any(certificate_refused(e) for e in group.exceptions):
                    self.cert_refused.set()
            finally:
                self._client = None
                self.status.connected = False
                self.status.inflight.clear()
                self.metrics.connected.set(0)
            began = self.status.connected_at
            self.status.connected_at = None
            if began is not None and time.monotonic() - began > 30:
                backoff.reset()  # a long healthy session earns a fast first retry
            await self._sleep_beating(ctx, backoff.next_delay())

    async def _sleep_beating(self, ctx: Context, delay: float) -> None:
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            ctx.heartbeat()
            await asyncio.sleep(min(left, 1.0))

    def _client_for(self, cfg: AgentConfig) -> aiomqtt.Client:
        offline = ReportedState(
            device_id=cfg.device_id,
            site=cfg.site,
            role=cfg.role,
            online=False,
            software=__version__,
            reported_at=None,
        )
        password = cfg.broker.password.get_secret_value() if cfg.broker.password else None
        tls: ssl.SSLContext | None = None
        if cfg.broker.tls:
            identity = IdentityFiles(cfg.identity_dir)
            tls = identity.tls_context() if identity.present() else ssl.create_default_context()
        return aiomqtt.Client(
            cfg.broker.host,
            cfg.broker.port,
            # the broker forces the certificate's CN (the device id) as client id: ask for the same
            identifier=cfg.device_id,
            username=cfg.broker.username,
            password=password,
            keepalive=cfg.broker.keepalive_s,
            timeout=cfg.broker.connect_timeout_s,
            tls_context=tls,
            will=aiomqtt.Will(
                device_topic(cfg.site, cfg.device_id, "state"), dumps(offline), qos=1, retain=True
            ),
            max_inflight_messages=64,
            logger=self._mqtt_log,
            socket_options=MQTT_SOCKET_OPTIONS,
        )

    async def _session(self, ctx: Context) -> None:
        cfg = self._cfg()
        async with self._client_for(cfg) as client:
            self._client = client
            self.status.connected = True
            self.status.connected_at = time.monotonic()
            self.metrics.connected.set(1)
            self.metrics.reconnects.inc()
            log.info("connected to broker %s", cfg.broker.url)
            self._link.ok()
            topics = [
                (device_topic(cfg.site, cfg.device_id, "ack"), 1),
                (device_topic(cfg.site, cfg.device_id, "desired"), 1),
                (device_topic(cfg.site, cfg.device_id, "cmd"), 1),
            ]
            if self._on_gallery is not None:  # GALLERY_ROLES only
                topics.append((gallery_topic(cfg.site), 1))
                topics.append((device_topic(cfg.site, cfg.device_id, "keys"), 1))
            await client.subscribe(topics)
            self._cursor = 0  # resync: anything still in the outbox goes again
            self.status.inflight.clear()
            await self.publish_state()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._receive(client), name="sync:receive")
                    tg.create_task(self._until_reconnect(), name="sync:reconnect")
                    tg.create_task(self._send(ctx, client), name="sync:send")
                    tg.create_task(self._report(client), name="sync:report")
            except asyncio.CancelledError:
                # A clean disconnect does not fire the will: say goodbye ourselves.
                await self._say_offline(client)
                raise

    async def _until_reconnect(self) -> None:
        self._reconnect.clear()
        await self._reconnect.wait()
        raise aiomqtt.MqttError("reconnecting with the renewed certificate")

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        state = self._state().model_copy(update={"online": False, "reported_at": utc_now()})
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self._publish_state(client, state, wait_s=1.0)

    # -- outbound -----------------------------------------------------------------------

    async def _send(self, ctx: Context, client: aiomqtt.Client) -> None:
        cfg = self._cfg()
        topic = device_topic(cfg.site, cfg.device_id, "events")
        head = b'{"v":%d,"device_id":"%s","batch_id":"' % (PROTOCOL_VERSION, cfg.device_id.encode())
        while True:
            ctx.heartbeat()
            cfg = self._cfg()
            inflight = self.status.inflight
            now = time.monotonic()
            if any(now - b.sent_at > cfg.sync.ack_timeout_s for b in inflight.values()):
                log.warning(
                    "no ack within %.1f s, resending the outbox",
                    cfg.sync.ack_timeout_s,
                    extra=fields(inflight=len(inflight)),
                )
                self.metrics.batches_resent.inc()
                inflight.clear()
                self._cursor = 0
            if len(inflight) < cfg.sync.max_inflight_batches:
                rows = await self.store.call(
                    Store.read_batch,
                    self.store.store,
                    self._cursor,
                    cfg.sync.batch_max_events,
                    cfg.sync.batch_max_bytes,
                )
                if rows:
                    batch_id = uuid7()
                    payload = (
                        head
                        + batch_id.encode()
                        + b'","events":['
                        + b",".join(r.body for r in rows)
                        + b"]}"
                    )
                    inflight[batch_id] = _Inflight(time.monotonic(), [r.event_id for r in rows])
                    self._cursor = rows[-1].seq
                    await client.publish(topic, payload, qos=1, timeout=cfg.sync.ack_timeout_s)
                    self.metrics.batches_sent.inc()
                    continue
            self._wake.clear()
            try:
                async with asyncio.timeout(cfg.sync.idle_poll_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _report(self, client: aiomqtt.Client) -> None:
        while True:
            try:
                async with asyncio.timeout(self._cfg().sync.state_interval_s):
                    await self._state_dirty.wait()
            except TimeoutError:
                pass
            self._state_dirty.clear()
            await self.publish_state()

    async def publish_state(self) -> None:
        if self._client is not None:
            await self._publish_state(self._client, self._state(), wait_s=10.0)

    async def _publish_state(
        self, client: aiomqtt.Client, state: ReportedState, wait_s: float
    ) -> None:
        cfg = self._cfg()
        topic = device_topic(cfg.site, cfg.device_id, "state")
        if self._replayed is not None:
            state = state.model_copy(update={"replayed": self._replayed})
        await client.publish(topic, dumps(state), qos=1, retain=True, timeout=wait_s)

    # -- inbound ------------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            channel = topic.rsplit("/", 1)[-1]
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload or "").encode()
            if not payload:
                continue  # a retained document cleared by central
            try:
                body = self._open(topic, bytes(payload))
                if channel == "ack":
                    await self._handle_ack(decode(Ack, body))
                elif channel == "desired":
                    await self._on_desired(decode(DesiredState, body))
                elif channel == "cmd":
                    await self._handle_command(decode(Command, body))
                elif channel == "keys" and self.site_keys is not None:
                    if self.site_keys.update(decode(SiteKeys, body)):
                        self._state_dirty.set()  # central answers with the delta we lack
                elif channel == "gallery" and self._on_gallery and self.site_keys is not None:
                    await self._on_gallery(self.site_keys.open_delta(body))
            except ProtocolError as exc:
                self.metrics.bad_messages.labels(exc.reason).inc()
                log.warning("refused %s message: %s", channel, exc, extra=fields(reason=exc.reason))
            except aiomqtt.MqttError:
                raise
            except Exception as exc:  # a bad message costs that message, not the connection
                reason = f"internal:{type(exc).__name__}"
                self.metrics.bad_messages.labels(reason).inc()
                log.error("%s message failed: %s", channel, exc, exc_info=exc)

    def _open(self, topic: str, payload: bytes) -> bytes:
        """The body central signed for this topic. Without control keys (an unenrolled demo
        kiosk, security.require off) the envelope is opened unverified."""
        if self.control_keys:
            return signing.verify(self.control_keys, topic, payload)
        try:
            env = orjson.loads(payload)
            return base64.b64decode(env["body"], validate=True)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ProtocolError("unsigned", "not a signed envelope") from exc

    async def _handle_ack(self, ack: Ack) -> None:
        batch = self.status.inflight.pop(ack.batch_id, None)
        if batch is not None:
            self.metrics.ack_latency.observe(time.monotonic() - batch.sent_at)
        done = list(ack.stored) + list(ack.rejected)
        answers = {**ack.results, **{e: {"rejected": r} for e, r in ack.rejected.items()}}
        keep_s = self._cfg().outbox.keep_acked_h * 3600
        self.store.store.keep_acked = keep_s > 0
        deleted = await self.store.call(Store.delete_acked, self.store.store, done, answers)
        if time.monotonic() - self._pruned_at > KEPT_PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            await self.store.call(Store.prune_kept, self.store.store, time.time() - keep_s)
            self.metrics.events_kept.set(await self.store.call(Store.kept_count, self.store.store))
        if answers:
            for listener in self.answer_listeners:
                listener()
        self.metrics.events_acked.inc(deleted)
        if ack.rejected:
            self.metrics.events_rejected.inc(len(ack.rejected))
            for event_id, reason in list(ack.rejected.items())[:5]:
                log.warning("central quarantined event %s: %s", event_id, reason)
        self._wake.set()

    async def _handle_command(self, cmd: Command) -> None:
        now = utc_now()
        max_age = self._cfg().security.command_max_age_s
        if (now - cmd.issued_at).total_seconds() > max_age:
            raise ProtocolError("stale_command", f"{cmd.name} was issued at {cmd.issued_at}")
        if self._last_command is not None and cmd.issued_at <= self._last_command:
            raise ProtocolError("replayed_command", f"{cmd.name} is not newer than the last one")
        self._last_command = cmd.issued_at
        log.info("command %s", cmd.name, extra=fields(command_id=cmd.command_id))
        if cmd.name == "resync":
            self.status.inflight.clear()
            self._cursor = 0
            self._wake.set()
            self._state_dirty.set()
        elif cmd.name == "report_state":
            self._state_dirty.set()
        elif cmd.name == "replay":
            await self._replay(cmd)
        else:
            raise ProtocolError("unknown_command", cmd.name)

    async def _replay(self, cmd: Command) -> None:
        """Central was restored from a backup: send again what it acknowledged after it."""
        after = cmd.args.get("after_seq", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise ProtocolError("bad_command", f"replay: after_seq {after!r}")
        moved = await self.store.call(Store.requeue_kept, self.store.store, after)
        self.metrics.events_replayed.inc(moved)
        log.warning(
            "central was restored from backup %s: sending again %d acknowledged events after %d",
            str(cmd.args.get("backup_id", "?"))[:64],
            moved,
            after,
            extra=fields(command_id=cmd.command_id),
        )
        self.status.inflight.clear()
        self._cursor = 0
        self._wake.set()
        request = cmd.args.get("request", cmd.args.get("backup_id"))
        if isinstance(request, str) and 0 < len(request) <= 64:
            self._replayed = request  # requeued for good: central may stop asking
            self._state_dirty.set()


def reported_state(
    cfg: AgentConfig,
    *,
    started_at: float,
    desired_version: int,
    desired_error: str | None,
    outbox_depth: int,
    components: dict[str, str],
    gallery_version: int = 0,
    degraded: list[str] | None = None,
    update: UpdateReport | None = None,
    **releases: Any,
) -> ReportedState:
    """``releases``: the model and configuration fields of ``ReportedState``."""
    from datetime import UTC, datetime

    return ReportedState(
        device_id=cfg.device_id,
        site=cfg.site,
        role=cfg.role,
        online=True,
        software=__version__,
        started_at=datetime.fromtimestamp(started_at, UTC),
        desired_version=desired_version,
        desired_error=desired_error,
        outbox_depth=outbox_depth,
        components=components,
        gallery_version=gallery_version,
        degraded=degraded or [],
        update=update,
        reported_at=utc_now(),
        **releases,
    )


#: TLS alerts a broker sends when it will not take the certificate (OpenSSL's wording, as
#: aiomqtt passes it on): revoked, not from its CA, or expired
_CERT_ALERTS = (
    "alert certificate revoked",
    "alert certificate unknown",
    "alert certificate expired",
)


def certificate_refused(exc: BaseException | str) -> bool:
    """Whether the connection failed because the broker refused our certificate."""
    text = str(exc).lower().replace("_", " ")
    return any(alert in text for alert in _CERT_ALERTS)


class _RefusalWatch(logging.Filter):
    """Sets ``seen`` when the MQTT client logs a refused certificate; filters nothing out."""

    def __init__(self, seen: asyncio.Event) -> None:
        super().__init__()
        self.seen = seen

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and certificate_refused(record.getMessage()):
            self.seen.set()
        return True

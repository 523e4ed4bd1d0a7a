"""The MQTT side of central: stores what devices send, acknowledges it, publishes desired state.

One receive loop feeds a queue; one ingest worker drains it, storing up to ``ingest_coalesce``
messages per transaction on a dedicated thread, and only then publishes the acks. Coalescing
is what makes one fsync carry thousands of events. The queue is ``quotas.Scheduler``: one small
queue per device taken in turn, each device within its role's quotas, so a flooding kiosk
neither fills central's disk nor delays the others' acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiomqtt
import orjson

from biblioedge.fleet.authz import GalleryResends, SecurityCase
from biblioedge.fleet.backup.replay import Replays
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.identity import CentralIdentity
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.quotas import OverQuota, Scheduler
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.repo import AckOut, Incoming, IngestResult, Repo
from biblioedge.fleet.sitekeys import SiteKeyring
from biblioedge.fleet.store.devices import device_roles
from biblioedge.protocol import (
    MAX_PAYLOAD_BYTES,
    Ack,
    Command,
    DesiredState,
    ProtocolError,
    device_topic,
    dumps,
    gallery_topic,
    parse_device_topic,
    utc_now,
    uuid7,
)
from biblioedge.retry import Backoff, Transition
from biblioedge.settings import MQTT_SOCKET_OPTIONS

log = logging.getLogger("biblioedge.fleet.bridge")


class Bridge:
    def __init__(
        self,
        cfg: CentralConfig,
        repo: Repo,
        metrics: CentralMetrics,
        readers: Readers,
        identity: CentralIdentity,
    ) -> None:
        self.cfg = cfg
        self.identity = identity
        self.signer = identity.signer
        self.site_keys = SiteKeyring(repo, identity.aead)
        #: (device id, site, certificate PEM) of the gates that hold a valid certificate
        self.gates: Callable[[], list[tuple[str, str, str]]] = lambda: []
        self.repo = repo
        self.readers = readers
        self.metrics = metrics
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.quotas = Scheduler(cfg.quotas, on_over_quota=self._over_quota)
        #: called once when a device stays over its quota (a security attention case)
        self.over_quota_hooks: list[Callable[[OverQuota], None]] = []
        self._wake = asyncio.Event()
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
        #: monotonic times of the session's last failed and last good publish, and of the
        #: recent session restarts: what /health judges "can publish and acknowledge" by
        self._publish_failed = 0.0
        self._published = 0.0
        self._restarts: list[float] = []
        self.resends = GalleryResends()
        #: after a restore from backup: which kiosks still have to be asked to send again
        self.replays: Replays | None = None
        #: (site, device) of kiosks to ask to resend their unacknowledged batches now: see
        #: ``_resync_unwitnessed``
        self._resync: set[tuple[str, str]] = set()
        self._resync_wake = asyncio.Event()
        #: central replicas (fleet/replicas.py): set while this replica leads. Events are
        #: shared among the replicas' bridges; kiosks' states (retained, and what a gallery
        #: resend or a replay request follows) are read by the leader alone. None: one central.
        self.leading: asyncio.Event | None = None

    def problems(self) -> list[str]:
        """Why the bridge cannot do its job now (empty: it can). A bridge that is connected
        but whose acks fail, or that keeps restarting, is not healthy: kiosks would hold
        their outboxes and IT would not know."""
        now = time.monotonic()
        out = []
        if not self.connected.is_set():
            out.append("not connected")
        if self._publish_failed > self._published:
            out.append("publishing fails")
        recent = [t for t in self._restarts if now - t < 60]
        self._restarts = recent
        if len(recent) >= 3:
            out.append(f"{len(recent)} session restarts in the last minute")
        if self.quotas.full():
            out.append("ingest queue full")
        return out

    async def _publish(
        self, client: aiomqtt.Client, topic: str, payload: bytes, retain: bool = False
    ) -> None:
        """Every publish goes through here, so /health knows when publishing fails."""
        try:
            await client.publish(topic, payload, qos=1, retain=retain, timeout=10)
        except Exception:
            self._publish_failed = time.monotonic()
            raise
        self._published = time.monotonic()

    async def run(self) -> None:
        # Central is one client of a broker it usually shares a machine or a rack with: it
        # retries every two seconds at most, where a fleet's kiosks spread theirs up to 15 s.
        # After an outage nothing is ingested until the bridge is back (and replicas, with
        # clean sessions, are not even queued for): a 10 s cap cost a fleet's return up to
        # 10 s (bench continuity --phase reconnect). One TLS handshake per 2 s costs nothing.
        backoff = Backoff(base=0.2, cap=2.0)
        link = Transition(log, f"broker {self.cfg.broker.url}")
        while True:
            try:
                async with self._client() as client:
                    self.client = client
                    self.connected.set()
                    self._published = time.monotonic()  # a new session starts healthy
                    self.metrics.connected.set(1)
                    link.ok()
                    backoff.reset()
                    log.info("bridge connected to %s", self.cfg.broker.url)
                    replica = self.cfg.replica
                    if replica is None:
                        await client.subscribe([("be/+/+/events", 1), ("be/+/+/state", 1)])
                    else:
                        await client.subscribe(f"$share/{replica.group}/be/+/+/events", qos=1)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._receive(client), name="bridge:receive")
                        tg.create_task(self._ingest(client), name="bridge:ingest")
                        tg.create_task(self._reassert(client), name="bridge:reassert")
                        if replica is not None and self.leading is not None:
                            tg.create_task(self._follow_leader(client), name="bridge:states")
                            tg.create_task(self._resync_unwitnessed(client), name="bridge:resync")
            except* aiomqtt.MqttError as group:
                self._restarts.append(time.monotonic())
                link.failed(group.exceptions[0])
            except* Exception as group:  # a bug must not take central down: log, reconnect
                self._restarts.append(time.monotonic())
                self.metrics.refused.labels("bridge_restart").inc()
                log.error("bridge session failed, restarting it", exc_info=group.exceptions[0])
            finally:
                self.client = None
                self.connected.clear()
                self.metrics.connected.set(0)
            await asyncio.sleep(backoff.next_delay())

    async def _follow_leader(self, client: aiomqtt.Client) -> None:
        """Read the kiosks' states while this replica leads: subscribing brings every
        kiosk's retained state, so a new leader starts from the whole fleet's picture."""
        assert self.leading is not None
        subscribed = False
        try:
            while True:
                if self.leading.is_set() and not subscribed:
                    await client.subscribe("be/+/+/state", qos=1)
                    subscribed = True
                elif not self.leading.is_set() and subscribed:
                    await client.unsubscribe("be/+/+/state")
                    subscribed = False
                await asyncio.sleep(0.2)  # leadership changes at most every renew_s
        finally:
            if subscribed:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.unsubscribe("be/+/+/state", timeout=1)

    async def _resync_unwitnessed(self, client: aiomqtt.Client) -> None:
        """Ask kiosks that connected while this leader was not listening to resend now.

        Replicas keep clean sessions (see ``_client``), so what kiosks publish while *no*
        replica is subscribed (the broker restarted, every replica reconnecting with its
        backoff) is dropped by the broker, and each kiosk waited out its ack timeout (10 s)
        before sending it again: after a broker outage, most of a fleet's return (bench
        continuity --phase reconnect, two replicas). A kiosk's connection the leader did not
        witness shows as its "online" state arriving *retained* when the leader subscribes;
        such a kiosk gets a signed ``resync`` (it sends its unacknowledged batches again at
        once). A needless one costs a few duplicate batches, which ingest ignores."""
        while True:
            await self._resync_wake.wait()
            self._resync_wake.clear()
            due, self._resync = sorted(self._resync), set()
            for site, device_id in due:
                cmd = Command(command_id=uuid7(), name="resync", issued_at=utc_now(), args={})
                topic = device_topic(site, device_id, "cmd")
                await self._publish(client, topic, self.signer.envelope(topic, dumps(cmd)))
            if due:
                log.info("asked %d kiosks that connected unwitnessed to resend", len(due))

    async def _reassert(self, client: aiomqtt.Client) -> None:
        """Every desired document and gate key again, beside ingest rather than before it:
        with a thousand kiosks this is a thousand retained publishes and a key wrapped per
        gate, and a fleet back from an outage must not wait for it to be acknowledged.
        Among replicas the leader does it (once per connection, when it leads): the
        documents are retained, so one copy is enough, and every replica doing it after a
        broker restart cost each of them the time the fleet's events waited for."""
        if self.leading is not None:
            await self.leading.wait()
        await self._publish_all_desired(client)
        await self._publish_keys(client, None)

    def _client(self) -> aiomqtt.Client:
        b = self.cfg.broker
        client = aiomqtt.Client(
            b.host,
            b.port,
            identifier=self.identity.bridge_id,
            username=b.username,
            password=b.password.get_secret_value() if b.password else None,
            keepalive=b.keepalive_s,
            timeout=b.connect_timeout_s,
            tls_context=self.identity.bridge_tls() if b.tls else None,
            max_inflight_messages=256,
            socket_options=MQTT_SOCKET_OPTIONS,
            max_queued_incoming_messages=0,
            # A persistent session: the broker keeps the bridge's subscriptions and queues
            # kiosks' QoS1 events while the bridge is away (central restarting, or the broker
            # back before the bridge's next retry). With a clean session, what a fleet sent in
            # the seconds before the bridge subscribed again was dropped, and every kiosk
            # waited out its ack timeout to send it again (bench continuity --phase reconnect).
            # The queue is bounded by the broker's max_queued_messages/bytes; what it drops,
            # the kiosks still hold in their outboxes, and ingest is exactly-once.
            # A replica keeps a clean session: the broker would go on handing a killed
            # replica its share of the events, to wait for it, instead of to the live ones.
            clean_session=self.cfg.replica is not None,
        )
        # acks go out together (one per stored message, up to ingest_coalesce at once) and a
        # fleet's worth of desired documents at reconnect: aiomqtt's default of 10 logged a
        # warning for each publish beyond it
        client.pending_calls_threshold = 4096
        return client

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload or "").encode()
            if not payload:  # a retained message being cleared (a deleted device's state)
                continue
            try:
                site, device, channel = parse_device_topic(str(message.topic))
                if len(payload) > MAX_PAYLOAD_BYTES:
                    raise ProtocolError("oversized", f"{len(payload)} bytes")
            except ProtocolError as exc:
                self.metrics.refused.labels(exc.reason).inc()
                log.warning("refused message on %s: %s", message.topic, exc)
                continue
            if (
                message.retain
                and channel == "state"
                and self.leading is not None
                and _says_online(bytes(payload))
            ):
                self._resync.add((site, device))
                self._resync_wake.set()
            reason = self.quotas.offer(Incoming(site, device, channel, bytes(payload)))
            if reason is not None:  # not stored, not acked: an honest kiosk sends it again
                self.metrics.quota_refused.labels(device, reason).inc()
                continue
            self._wake.set()
            self.metrics.queue.set(len(self.quotas))

    def _over_quota(self, over: OverQuota) -> None:
        self.metrics.over_quota.labels(over.device_id).inc()
        detail = ", ".join(f"{k} {n}" for k, n in sorted(over.refused.items()))
        case = SecurityCase(over.device_id, over.site, "over_quota", f"refused: {detail}")
        # on the ingest thread, like every write: the receive loop never waits on the database
        self._db.submit(self._raise_case, case, over.role)
        for hook in self.over_quota_hooks:
            hook(over)

    def _raise_case(self, case: SecurityCase, role: str | None) -> None:
        try:
            if self.repo.raise_case(case, role):
                self.metrics.security_cases.inc()
                log.warning("security case: %s/%s: %s", case.site, case.device_id, case.detail)
        except Exception:  # a case that cannot be stored must not cost the bridge
            log.exception("cannot store the over-quota case of %s", case.device_id)

    async def _next_batch(self) -> list[Incoming]:
        """The next run to store: one message per device in turn, each within its quota;
        waits for a message or for a waiting device's tokens."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            unchecked = self.quotas.unchecked_roles()
            if unchecked:  # the registry's role decides a device's quota, before its first turn
                try:
                    roles = await loop.run_in_executor(self._db, device_roles, self.repo, unchecked)
                except Exception as exc:  # the database is down: keep their current quota
                    log.warning("cannot read the devices' roles: %s", exc)
                    roles = {}
                self.quotas.set_roles(roles, checked=unchecked)
            batch = self.quotas.take(self.cfg.ingest_coalesce)
            if batch:
                self.metrics.queue.set(len(self.quotas))
                return batch
            wait = self.quotas.ready_in()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wait is None else max(wait, 0.001)):
                    await self._wake.wait()

    async def _ingest(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            with self.metrics.ingest_seconds.time():
                result: IngestResult = await loop.run_in_executor(
                    self._db, self.repo.ingest_isolated, batch, self.cfg.accept_unknown_devices
                )
            self._count(result)
            await self._resend_galleries(client, result.gallery_versions)
            if result.changed_sites:  # a desk registered readers: every branch follows now
                await self.library_changed()
            if self.replays is not None and self.replays.backup_id is not None:
                await self._ask_replays(client, batch)
            # Acks only after the transaction committed: that is the whole promise. They are
            # independent, so all of them go out at once rather than one PUBACK round trip
            # after another (over TLS that wait had cut throughput by a quarter).
            await asyncio.gather(*(self._publish_ack(client, ack) for ack in result.acks))

    async def _ask_replays(self, client: aiomqtt.Client, batch: list[Incoming]) -> None:
        """A kiosk that reports its state to a central restored from backup is asked to
        send again what the lost central had acknowledged after the backup, until a state
        report says it did (fleet/backup/replay.py)."""
        assert self.replays is not None
        for msg in batch:
            if msg.channel != "state":
                continue
            doc = _state_doc(msg.payload)
            if self.replays.reported(msg.device_id, doc.get("replayed")):
                continue
            if doc.get("online") is not True:
                continue  # a retained or last-will report: the kiosk may not be there to hear
            after = self.replays.due(msg.device_id)
            if after is None:
                continue
            cmd = Command(
                command_id=uuid7(),
                name="replay",
                issued_at=utc_now(),
                args={
                    "after_seq": after,
                    "backup_id": self.replays.backup_id,
                    "request": self.replays.request_id,
                },
            )
            topic = device_topic(msg.site, msg.device_id, "cmd")
            await self._publish(client, topic, self.signer.envelope(topic, dumps(cmd)))
            self.replays.asked(msg.device_id)
            log.warning("asked %s to send again its events after %d", msg.device_id, after)

    async def _publish_ack(self, client: aiomqtt.Client, ack: AckOut) -> None:
        body = Ack(
            batch_id=ack.batch_id, stored=ack.stored, rejected=ack.rejected, results=ack.results
        )
        topic = device_topic(ack.site, ack.device_id, "ack")
        await self._publish(client, topic, self.signer.envelope(topic, dumps(body)))
        self.metrics.acks.inc()

    def _count(self, r: IngestResult) -> None:
        self.metrics.ingested.inc(r.inserted)
        self.metrics.duplicates.inc(r.duplicates)
        self.metrics.held.inc(r.held)
        for reason, n in r.quarantined.items():
            self.metrics.quarantined.labels(reason).inc(n)
        for reason, n in r.refused.items():
            self.metrics.refused.labels(reason).inc(n)
        for reason, n in r.security.items():
            self.metrics.security_refused.labels(reason).inc(n)
        self.metrics.security_cases.inc(len(r.cases))

    async def _resend_galleries(
        self, client: aiomqtt.Client, reports: list[tuple[str, str, int]]
    ) -> None:
        """Answer lagging gallery versions, each device within its resend budget: a kiosk
        reporting version 0 again and again gets a few deltas, not one per report (the delta
        rides the site's topic, so every gate of the site would receive each one)."""
        loop = asyncio.get_running_loop()
        current: dict[str, int] = {}
        wanted: set[tuple[str, int]] = set()
        for site, device_id, version in reports:
            if site not in current:
                current[site] = await loop.run_in_executor(
                    self._db, self.readers.site_version, site
                )
            if version >= current[site] or (site, version) in wanted:
                continue  # up to date (a report costs nothing then), or already answered
            if not self.resends.allow(device_id):
                self.metrics.refused.labels("gallery_resend_limited").inc()
                continue
            wanted.add((site, version))
        for site, version in sorted(wanted):
            await self._send_gallery(client, site, version)

    async def _publish_all_desired(self, client: aiomqtt.Client) -> None:
        """Re-assert every desired document, in case the broker lost its retained store."""
        loop = asyncio.get_running_loop()
        docs = await loop.run_in_executor(self._db, self.repo.all_desired)
        for site, device_id, desired in docs:
            try:
                await self._publish_desired(client, site, device_id, desired)
            except ProtocolError as exc:  # stored before the API's limits: skip, do not loop
                self.metrics.refused.labels(f"desired_{exc.reason}").inc()
                log.error("cannot publish the desired state of %s: %s", device_id, exc)

    async def _publish_desired(
        self, client: aiomqtt.Client, site: str, device_id: str, desired: DesiredState
    ) -> None:
        topic = device_topic(site, device_id, "desired")
        await self._publish(client, topic, self.signer.envelope(topic, dumps(desired)), True)

    async def publish_desired(self, site: str, device_id: str, desired: DesiredState) -> bool:
        """Best effort now; a disconnected bridge re-publishes everything when it reconnects."""
        client = self.client
        if client is None:
            return False
        with contextlib.suppress(aiomqtt.MqttError):
            await self._publish_desired(client, site, device_id, desired)
            return True
        return False

    async def _send_gallery(self, client: aiomqtt.Client, site: str, base: int) -> None:
        """Publish the delta after ``base`` if the site has changed since."""
        loop = asyncio.get_running_loop()
        delta = await loop.run_in_executor(  # names sealed for the site's gates only
            self._db,
            lambda: self.readers.delta(site, base, seal_name=self.site_keys.name_sealer(site)),
        )
        if delta is not None:
            topic = gallery_topic(site)
            sealed = await loop.run_in_executor(
                self._db, self.site_keys.seal_delta, site, dumps(delta)
            )
            try:
                envelope = self.signer.envelope(topic, sealed)
            except ProtocolError as exc:  # deltas are sized below this; never loop on one
                self.metrics.refused.labels("gallery_oversized").inc()
                log.error("cannot publish the gallery delta of %s after %d: %s", site, base, exc)
                return
            await self._publish(client, topic, envelope)
            self.metrics.gallery_deltas.inc()

    async def gallery_changed(self, site: str) -> None:
        """After an enrollment, update or erasure: bring every gate of the site up to date.
        A disconnected bridge catches up from the gates' next state reports."""
        client = self.client
        if client is None:
            return
        loop = asyncio.get_running_loop()
        versions = await loop.run_in_executor(self._db, self.repo.gallery_versions, site)
        with contextlib.suppress(aiomqtt.MqttError):
            for base in sorted(versions):
                await self._send_gallery(client, site, base)

    async def library_changed(self, site: str = "") -> None:
        """A reader changed: she is at every branch, so every branch's kiosks follow now
        (``site``, her home branch, is no limit; the signature is ``gallery_changed``'s)."""
        del site
        loop = asyncio.get_running_loop()
        for branch in await loop.run_in_executor(self._db, self.readers.sites):
            await self.gallery_changed(branch)

    async def _publish_keys(
        self, client: aiomqtt.Client, site: str | None, device: str | None = None
    ) -> None:
        """The site keys, wrapped to each gate of ``site`` (every site: None), retained;
        to ``device`` alone when given."""
        loop = asyncio.get_running_loop()
        by_site: dict[str, list[tuple[str, str]]] = {}
        for device_id, gate_site, cert in await loop.run_in_executor(self._db, self.gates):
            if (site is None or gate_site == site) and device in (None, device_id):
                by_site.setdefault(gate_site, []).append((device_id, cert))
        for gate_site, kiosks in sorted(by_site.items()):
            # one site at a time on the database thread: ingest's turns come in between
            wrapped = await loop.run_in_executor(
                self._db, self.site_keys.messages, gate_site, kiosks
            )
            for device_id, body in wrapped:
                topic = device_topic(gate_site, device_id, "keys")
                await self._publish(client, topic, self.signer.envelope(topic, body), True)

    async def site_keys_changed(
        self, site: str, revoked: str | None = None, device: str | None = None
    ) -> None:
        """After a gate enrolled or renewed (``device``: only its wrapping changed, so only
        it is sent its keys; the site's other gates hold theirs) or was revoked (the site
        key rotates first, every gate of the site gets the new one, and the revoked gate's
        retained copy is cleared). Re-wrapping every gate of the site for each enrollment
        was a fleet's enrollment's largest cost at central (ECIES per gate, per gate)."""
        loop = asyncio.get_running_loop()
        if revoked is not None:
            await loop.run_in_executor(self._db, self.site_keys.rotate, site)
        client = self.client
        if client is None:
            return  # published to every gate when the bridge reconnects
        with contextlib.suppress(aiomqtt.MqttError):
            if revoked is not None:
                await self._publish(client, device_topic(site, revoked, "keys"), b"", True)
            await self._publish_keys(client, site, None if revoked is not None else device)

    async def send_command(
        self, site: str, device_id: str, name: str, args: dict[str, Any] | None = None
    ) -> bool:
        """A signed command to one kiosk (the dashboard's resync); False when the broker is
        not connected (a command is for now: it is not kept for later)."""
        client = self.client
        if client is None:
            return False
        cmd = Command(command_id=uuid7(), name=name, issued_at=utc_now(), args=args or {})
        topic = device_topic(site, device_id, "cmd")
        with contextlib.suppress(aiomqtt.MqttError):
            await self._publish(client, topic, self.signer.envelope(topic, dumps(cmd)))
            return True
        return False

    async def forget_device(self, site: str, device_id: str) -> None:
        """Clear a deleted device's retained topics, so nothing of it comes back on restart."""
        client = self.client
        if client is None:
            return
        with contextlib.suppress(aiomqtt.MqttError):
            for channel in ("desired", "keys", "state"):
                await self._publish(client, device_topic(site, device_id, channel), b"", True)

    def close(self) -> None:
        self._db.shutdown(wait=True)


def _state_doc(payload: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _says_online(payload: bytes) -> bool:
    return _state_doc(payload).get("online") is True

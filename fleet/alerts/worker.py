"""Central's alert loop: look, record what changed, send what waits.

It runs beside the API as one more background job; each send is bounded by a timeout and
runs in a thread, so a target that hangs delays only its own messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from biblioedge.fleet.alerts.deliver import DeliveryError, Refused, send_email, send_webhook
from biblioedge.fleet.alerts.messages import body_of
from biblioedge.fleet.alerts.rules import KioskSeen, changes, conditions
from biblioedge.fleet.alerts.settings import AlertsConfig
from biblioedge.fleet.alerts.store import AlertStore, Message
from biblioedge.fleet.backup import last_status
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.dashboard import attention, kiosks
from biblioedge.fleet.repo import Repo
from biblioedge.protocol import utc_now

log = logging.getLogger("biblioedge.central.alerts")
KEEP_DONE = timedelta(days=30)


class AlertWorker:
    def __init__(
        self,
        cfg: CentralConfig,
        repo: Repo,
        rollouts: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        assert cfg.alerts is not None
        self.central = cfg
        self.cfg: AlertsConfig = cfg.alerts
        self.repo = repo
        self.store = AlertStore(repo)
        self.rollouts = rollouts
        self.own = (cfg.http.host, cfg.http.port)
        self.dashboard = self.cfg.dashboard_url or cfg.public_url.rstrip("/") + "/dashboard"

    def backup_stale(self, now: datetime) -> str | None:
        b = self.central.backup
        if b.public_key is None and b.every_h == 0:
            return None  # no backups set up: /health and the dashboard say so
        status = last_status(self.central, now)
        if status is None:
            return "no backup yet / chưa có bản sao lưu nào"
        if status["stale"]:
            return f"{status['age_h']} h ({status.get('created', '')})"
        return None

    def check(self, now: datetime | None = None) -> int:
        """Run the rules once; how many messages were queued."""
        now = now or utc_now()
        fleet = kiosks(self.repo)
        seen = [KioskSeen(k.device_id, k.online, k.revoked, k.last_seen) for k in fleet]
        wrong = conditions(
            self.cfg,
            attention(self.repo, fleet, self.rollouts()),
            seen,
            self.backup_stale(now),
            now,
        )
        todo = changes(self.cfg, self.store.tracked(), wrong, now)
        bodies = {
            c.key: body_of(
                "resolved" if c.action == "resolve" else "fired",
                c.kind,
                c.subject,
                c.detail,
                c.since,
                self.dashboard,
            )
            for c in todo
        }
        queued = self.store.apply(todo, self.cfg.targets(), bodies, now)
        for c in todo:
            if c.action in ("fire", "resolve"):
                log.warning("alert %s: %s %s %s", c.action, c.kind, c.subject, c.detail)
        return queued

    def test(self, now: datetime | None = None) -> int:
        """Queue a test message to every target (``central alerts test``)."""
        now = now or utc_now()
        body = body_of("fired", "test", "central", "biblioedge", now, self.dashboard)
        return len([self.store.queue(t, body, now) for t in self.cfg.targets()])

    def _send(self, message: Message) -> None:
        if message.target == "email":
            if self.cfg.email is None:
                raise Refused("no [alerts.email] any more")
            send_email(self.cfg.email, message.body, self.cfg)
            return
        index = int(message.target.removeprefix("webhook"))
        if index >= len(self.cfg.webhooks):
            raise Refused(f"no {message.target} any more")
        send_webhook(self.cfg.webhooks[index], message.body, self.cfg, self.own)

    def deliver(self, now: datetime | None = None, limit: int = 200) -> dict[str, int]:
        """Send what is due, each target in order; a target that fails, or whose oldest
        message is not due yet, waits for a later round."""
        now = now or utc_now()
        done = {"sent": 0, "failed": 0, "dropped": 0}
        failing: set[str] = set()
        for message in self.store.pending(limit):
            if message.target in failing:
                continue
            if message.next_at > now:
                failing.add(message.target)
                continue
            if not self.store.claim(message.id):
                continue  # sent meanwhile
            try:
                self._send(message)
            except DeliveryError as exc:
                give_up = isinstance(exc, Refused) or (
                    now - message.created_at > timedelta(hours=self.cfg.give_up_h)
                )
                self.store.failed(message, str(exc), now, give_up=give_up)
                failing.add(message.target)
                done["dropped" if give_up else "failed"] += 1
                log.warning("alert to %s not delivered: %s", message.target, exc)
                continue
            except (OSError, ValueError) as exc:  # a target set up wrong costs its messages
                self.store.failed(message, repr(exc), now, give_up=False)
                failing.add(message.target)
                done["failed"] += 1
                log.warning("alert to %s not delivered: %r", message.target, exc)
                continue
            self.store.sent(message.id, now)
            done["sent"] += 1
        return done

    async def run(self) -> None:
        last_prune = utc_now()
        while True:
            try:
                await asyncio.to_thread(self.check)
                await asyncio.to_thread(self.deliver)
                if utc_now() - last_prune > timedelta(days=1):
                    last_prune = utc_now()
                    await asyncio.to_thread(self.store.prune, last_prune - KEEP_DONE)
            except asyncio.CancelledError:
                raise
            except Exception:  # the alerts must outlive any one bad look  # noqa: BLE001
                log.exception("alert round failed; the next one runs in %s s", self.cfg.check_s)
            await asyncio.sleep(self.cfg.check_s)

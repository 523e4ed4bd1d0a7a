"""The alerts' tables: the conditions being tracked and the messages waiting to go.

A change of conditions and the messages it makes are written in one transaction: a crash
between the two can neither lose a message nor send one twice after a restart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from biblioedge.fleet.alerts.rules import Change, Tracked
from biblioedge.fleet.db import alert_outbox, alert_state
from biblioedge.fleet.store import Db, engine_of

PENDING, SENT, DROPPED = "pending", "sent", "dropped"


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    target: str
    body: dict[str, Any]
    attempts: int
    created_at: datetime
    next_at: datetime


class AlertStore:
    def __init__(self, db: Db, base_s: float = 30.0, max_s: float = 1800.0) -> None:
        self.engine = engine_of(db)
        self.base_s = base_s
        self.max_s = max_s

    def tracked(self) -> dict[str, Tracked]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(alert_state)).mappings().all()
        return {
            r["key"]: Tracked(
                r["key"],
                r["kind"],
                r["subject"],
                r["detail"],
                r["since"],
                r["fired_at"] is not None,
            )
            for r in rows
        }

    def apply(
        self,
        changes: list[Change],
        targets: list[str],
        bodies: dict[str, dict[str, Any]],
        now: datetime,
    ) -> int:
        """Record the changes and queue one message per target for each told change (its
        body by key); how many messages were queued."""
        queued = 0
        with self.engine.begin() as conn:
            for c in changes:
                if c.action in ("resolve", "forget"):
                    conn.execute(delete(alert_state).where(alert_state.c.key == c.key))
                else:
                    conn.execute(delete(alert_state).where(alert_state.c.key == c.key))
                    conn.execute(
                        insert(alert_state).values(
                            key=c.key,
                            kind=c.kind,
                            subject=c.subject[:255],
                            detail=c.detail,
                            since=c.since,
                            fired_at=now if c.action == "fire" else None,
                        )
                    )
                if c.action in ("fire", "resolve"):
                    for target in targets:
                        conn.execute(
                            insert(alert_outbox).values(
                                target=target,
                                body=bodies[c.key],
                                state=PENDING,
                                attempts=0,
                                next_at=now,
                                created_at=now,
                            )
                        )
                        queued += 1
        return queued

    def queue(self, target: str, body: dict[str, Any], now: datetime) -> int:
        with self.engine.begin() as conn:
            row = conn.execute(
                insert(alert_outbox)
                .values(
                    target=target, body=body, state=PENDING, attempts=0, next_at=now, created_at=now
                )
                .returning(alert_outbox.c.id)
            ).scalar_one()
        return int(row)

    def pending(self, limit: int = 200) -> list[Message]:
        """The oldest waiting messages, due or not: each target takes its own in order (an
        "ended" never arrives before its "alert")."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(alert_outbox)
                .where(alert_outbox.c.state == PENDING)
                .order_by(alert_outbox.c.id)
                .limit(limit)
            ).mappings()
            return [
                Message(
                    r["id"], r["target"], r["body"], r["attempts"], r["created_at"], r["next_at"]
                )
                for r in rows
            ]

    def claim(self, message_id: int) -> bool:
        """Just before a message goes out: still waiting? A transaction of its own, so that
        a central replica that no longer leads is refused here (fenced) instead of sending
        what the new leader sends."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(alert_outbox)
                .where(alert_outbox.c.id == message_id, alert_outbox.c.state == PENDING)
                .values(attempts=alert_outbox.c.attempts)
            )
        return done.rowcount == 1

    def sent(self, message_id: int, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(alert_outbox)
                .where(alert_outbox.c.id == message_id)
                .values(state=SENT, done_at=now, attempts=alert_outbox.c.attempts + 1)
            )

    def failed(
        self, message: Message, error: str, now: datetime, *, give_up: bool
    ) -> datetime | None:
        """Back off (capped, jittered) or drop; when it is tried next (None: dropped)."""
        attempts = message.attempts + 1
        delay = min(self.max_s, self.base_s * 2 ** min(attempts - 1, 20))
        next_at = now + timedelta(seconds=delay * random.uniform(0.5, 1.0))  # noqa: S311
        values: dict[str, Any] = {"attempts": attempts, "last_error": error[:500]}
        if give_up:
            values.update(state=DROPPED, done_at=now)
        else:
            values["next_at"] = next_at
        with self.engine.begin() as conn:
            conn.execute(
                update(alert_outbox).where(alert_outbox.c.id == message.id).values(**values)
            )
        return None if give_up else next_at

    def summary(self) -> dict[str, Any]:
        """For the dashboard and ``central alerts status``: what waits, what failed."""
        with self.engine.connect() as conn:
            counts: dict[str, int] = dict(
                conn.execute(
                    select(alert_outbox.c.state, func.count()).group_by(alert_outbox.c.state)
                ).all()
            )
            waiting = conn.execute(
                select(alert_outbox.c.target, alert_outbox.c.attempts, alert_outbox.c.last_error)
                .where(alert_outbox.c.state == PENDING, alert_outbox.c.attempts > 0)
                .order_by(alert_outbox.c.id)
                .limit(10)
            ).all()
            active = conn.execute(
                select(alert_state.c.kind, alert_state.c.subject, alert_state.c.since)
                .where(alert_state.c.fired_at.is_not(None))
                .order_by(alert_state.c.since)
            ).all()
        return {
            "pending": int(counts.get(PENDING, 0)),
            "sent": int(counts.get(SENT, 0)),
            "dropped": int(counts.get(DROPPED, 0)),
            "retrying": [{"target": t, "attempts": a, "error": e or ""} for t, a, e in waiting],
            "active": [
                {"kind": k, "subject": s, "since": since.isoformat(timespec="seconds")}
                for k, s, since in active
            ],
        }

    def prune(self, before: datetime) -> int:
        """Sent and dropped messages are kept a while (what was said, for the audit)."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    delete(alert_outbox).where(
                        alert_outbox.c.state != PENDING, alert_outbox.c.done_at < before
                    )
                ).rowcount
            )

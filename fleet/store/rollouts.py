"""Every SQL statement of rollouts: the ``rollouts`` and ``rollout_targets`` tables, and the
kiosks and health events the planner reads. Part of the repository layer (see
``fleet/store/__init__.py``): it reads rows into the planner's types and writes the planner's steps,
and decides nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from biblioedge.fleet.db import devices, events, rollout_targets, rollouts
from biblioedge.fleet.rollout_plan import (
    ACTIVE,
    HEALTH_EVENTS_LIMIT,
    HEALTH_TYPES,
    HealthEvent,
    Kiosk,
    Steps,
    Target,
)
from biblioedge.fleet.store import Db, engine_of
from biblioedge.fleet.store.devices import revoked_devices


class RolloutStore:
    def __init__(self, repo: Db) -> None:
        self.engine = engine_of(repo)

    # -- reading ----------------------------------------------------------------------------

    def kiosks(self, ids: list[str] | None = None) -> dict[str, Kiosk]:
        """Registered kiosks (those with a role) by id."""
        q = select(devices).where(devices.c.role.is_not(None))
        if ids is not None:
            q = q.where(devices.c.device_id.in_(ids))
        with self.engine.connect() as conn:
            return {
                r.device_id: Kiosk(
                    r.device_id,
                    r.site,
                    r.role,
                    bool(r.online),
                    r.labels or {},
                    r.reported or {},
                )
                for r in conn.execute(q)
            }

    def revoked(self, ids: list[str] | None = None) -> frozenset[str]:
        return frozenset(revoked_devices(self.engine, ids))

    def active(self) -> list[dict[str, Any]]:
        """Rollouts the engine looks at: running, halted (kiosks going back) and paused."""
        q = select(rollouts).where(rollouts.c.state.in_(("running", "halted", "paused")))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def targets(self, rollout_id: str) -> dict[str, Target]:
        q = select(rollout_targets).where(rollout_targets.c.rollout_id == rollout_id)
        with self.engine.connect() as conn:
            return {
                t.device_id: Target(
                    t.device_id,
                    t.site,
                    int(t.wave),
                    t.state,
                    t.previous,
                    t.reason,
                    t.started_at,
                    t.finished_at,
                )
                for t in conn.execute(q)
            }

    def list_all(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(rollouts).order_by(rollouts.c.created_at.desc()).limit(limit)
            ).fetchall()
            return [self._summary(conn, dict(r._mapping)) for r in rows]

    def get(self, rollout_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.rollout_id == rollout_id)).first()
            if row is None:
                return None
            out = self._summary(conn, dict(row._mapping))
            out["targets"] = [
                dict(t._mapping)
                for t in conn.execute(
                    select(rollout_targets)
                    .where(rollout_targets.c.rollout_id == rollout_id)
                    .order_by(rollout_targets.c.wave, rollout_targets.c.device_id)
                )
            ]
            return out

    @staticmethod
    def _summary(conn: Connection, r: dict[str, Any]) -> dict[str, Any]:
        rows = conn.execute(
            select(rollout_targets.c.wave, rollout_targets.c.state).where(
                rollout_targets.c.rollout_id == r["rollout_id"]
            )
        ).fetchall()
        waves: dict[int, dict[str, int]] = {}
        for wave, state in rows:
            counts = waves.setdefault(int(wave), {})
            counts[state] = counts.get(state, 0) + 1
        r["waves"] = [
            {"wave": w, "size": sum(c.values()), "states": c} for w, c in sorted(waves.items())
        ]
        r["targets_total"] = len(rows)
        return r

    def health_events(
        self, device_ids: list[str], since: datetime, until: datetime
    ) -> list[HealthEvent]:
        """The events application health is judged by, of these kiosks over a window."""
        q = (
            select(events.c.device_id, events.c.type, events.c.occurred_at, events.c.payload)
            .where(
                and_(
                    events.c.device_id.in_(device_ids),
                    events.c.occurred_at >= since,
                    events.c.occurred_at < until,
                    events.c.type.in_(HEALTH_TYPES),
                )
            )
            .order_by(events.c.device_id, events.c.occurred_at)
            .limit(2 * HEALTH_EVENTS_LIMIT)  # two windows, before and after
        )
        with self.engine.connect() as conn:
            return [HealthEvent(d, t, at, payload or {}) for d, t, at, payload in conn.execute(q)]

    # -- writing ----------------------------------------------------------------------------

    def create(self, row: dict[str, Any], targets: Sequence[Target]) -> list[tuple[str, str]]:
        """Store a new rollout and its targets in one transaction, unless some of the kiosks
        are in an active rollout of the same kind: then nothing is written and (up to five
        of) those (device, rollout) pairs are returned."""
        ids = [t.device_id for t in targets]
        with self.engine.begin() as conn:
            busy = conn.execute(
                select(rollout_targets.c.device_id, rollouts.c.rollout_id)
                .join(rollouts, rollouts.c.rollout_id == rollout_targets.c.rollout_id)
                .where(
                    and_(
                        rollouts.c.state.in_(ACTIVE),
                        rollouts.c.kind == row["kind"],
                        rollout_targets.c.device_id.in_(ids),
                    )
                )
                .limit(5)
            ).fetchall()
            if busy:
                return [(str(d), str(r)) for d, r in busy]
            conn.execute(insert(rollouts).values(**row))
            conn.execute(insert(rollout_targets), [_row(row["rollout_id"], t) for t in targets])
        return []

    def change(self, rollout_id: str, decide: Callable[[str, list[Any]], dict[str, Any]]) -> bool:
        """Read the rollout's state and history, and write the columns ``decide`` returns,
        in one transaction (``decide`` may raise to write nothing); False if no such rollout."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(rollouts.c.state, rollouts.c.history).where(
                    rollouts.c.rollout_id == rollout_id
                )
            ).first()
            if row is None:
                return False
            values = decide(row.state, list(row.history))
            conn.execute(
                update(rollouts).where(rollouts.c.rollout_id == rollout_id).values(**values)
            )
        return True

    def apply(self, rollout_id: str, seen_state: str, steps: Steps, now: datetime) -> None:
        """Write one look's steps in one transaction. The rollout's own row changes only if
        its state is still ``seen_state``: IT's pause or abort meanwhile wins."""
        with self.engine.begin() as conn:
            if steps.joins:
                conn.execute(insert(rollout_targets), [_row(rollout_id, t) for t in steps.joins])
            for device_id, values in steps.updates.items():
                conn.execute(
                    update(rollout_targets)
                    .where(
                        and_(
                            rollout_targets.c.rollout_id == rollout_id,
                            rollout_targets.c.device_id == device_id,
                        )
                    )
                    .values(**values)
                )
            change = steps.rollout
            if change is not None:
                conn.execute(
                    update(rollouts)
                    .where(
                        and_(rollouts.c.rollout_id == rollout_id, rollouts.c.state == seen_state)
                    )
                    .values(
                        state=change.state,
                        wave=change.wave,
                        halt_reason=change.halt_reason,
                        history=[dict(h) for h in change.history],
                        updated_at=now,
                    )
                )


def _row(rollout_id: str, t: Target) -> dict[str, Any]:
    return {
        "rollout_id": rollout_id,
        "device_id": t.device_id,
        "site": t.site,
        "wave": t.wave,
        "state": t.state,
    }

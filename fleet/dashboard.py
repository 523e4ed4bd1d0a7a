"""What the fleet dashboard shows, and its sign-in sessions.

The page is rendered at central from the same repository the API reads; nothing here writes
except through ``Rollouts``. A session lives at central: the cookie is a random id that
central maps to the API token it was opened with and its expiry. Signing out removes it, so
a copied cookie stops working at once (a cookie that only carried a signature would stay
valid until it expired); a revoked token ends its sessions at the next request. Sessions
are kept in memory, at most ``MAX_SESSIONS`` (the oldest go first): a restart of central
signs everyone out, which costs a sign-in and never keeps a session alive.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from biblioedge.fleet.auth import Principal, Tokens
from biblioedge.fleet.authz import SECURITY_ATTENTION
from biblioedge.fleet.device_status import with_revocation
from biblioedge.fleet.ils.queue import Queue
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.rollout_plan import QUARANTINE_LABEL, QUARANTINE_ON
from biblioedge.fleet.rollouts import Rollouts
from biblioedge.fleet.store.devices import revoked_devices
from biblioedge.fleet.store.enrollments import pending_rekeys
from biblioedge.keys import load_or_create_key
from biblioedge.protocol import utc_now

SESSION_S = 12 * 3600
MAX_SESSIONS = 10_000
OFFLINE_ALERT = timedelta(minutes=10)
ATTENTION_WINDOW = timedelta(hours=24)
#: Exit alarms stay on the dashboard this long: staff act on them now, not tomorrow
EXIT_ALARM_WINDOW = timedelta(minutes=30)


class Sessions:
    def __init__(self, tokens: Tokens, key_file: Path, max_sessions: int = MAX_SESSIONS) -> None:
        self.tokens = tokens
        self.key = load_or_create_key(key_file)
        self.max_sessions = max_sessions
        self._open: OrderedDict[str, tuple[str, float]] = OrderedDict()  # id -> token, expiry
        self._lock = threading.Lock()  # opened and checked from the thread pool too

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def open(self, token: str) -> tuple[Principal, str] | None:
        who = self.tokens.check(token.strip())
        if who is None:
            return None
        session = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            for old, (_, expires) in list(self._open.items()):
                if expires > now:
                    break  # oldest first: the rest expire later
                del self._open[old]
            self._open[session] = (who.token_id, now + SESSION_S)
            while len(self._open) > self.max_sessions:
                self._open.popitem(last=False)
        return who, session

    def close(self, cookie: str | None) -> bool:
        """Sign out: the session is gone at central, whoever holds a copy of the cookie."""
        if not cookie:
            return False
        with self._lock:
            return self._open.pop(cookie, None) is not None

    def check(self, cookie: str | None) -> Principal | None:
        if not cookie or len(cookie) > 64:
            return None
        with self._lock:
            found = self._open.get(cookie)
        if found is None:
            return None
        token_id, expires = found
        if expires < time.time():
            self.close(cookie)
            return None
        who = self.tokens.principal(token_id)
        if who is None:
            self.close(cookie)
        return who

    def csrf(self, cookie: str) -> str:
        """A form token bound to the session: a page of another site cannot post as IT."""
        return self._sign(f"csrf:{cookie}")[:32]


@dataclass
class Kiosk:
    device_id: str
    site: str
    role: str
    online: bool
    revoked: bool
    software: str
    models: str
    last_seen: datetime | None
    outbox: int
    health: list[str]
    alarms: list[str]
    update: str
    #: online, offline, never (registered, never connected), revoked or quarantined
    state: str = "offline"
    #: (component, its state) for each component not up; the page says them in words
    trouble: list[tuple[str, str]] = field(default_factory=list)
    #: what the update is doing, for words: (phase, release, percent or None)
    updating: tuple[str, str, int | None] | None = None
    first_seen: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return ""
    s = int((now - when).total_seconds())
    if s < 60:
        return f"{max(s, 0)} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def kiosks(repo: Repo) -> list[Kiosk]:
    out = []
    for d in with_revocation(repo.list_devices(), revoked_devices(repo)):
        rep = d.get("reported") or {}
        upd = rep.get("update") or {}
        components = rep.get("components") or {}
        health = [f"{k}: {v}" for k, v in sorted(components.items()) if v != "up"]
        alarms = list(rep.get("degraded") or [])
        if rep.get("desired_error"):
            alarms.append(f"config: {rep['desired_error']}"[:120])
        if upd.get("phase") == "failed":
            alarms.append(f"update {upd.get('wanted')}: {upd.get('reason')}")
        phase = upd.get("phase") or "idle"
        update_text = ""
        updating = None
        if phase not in ("idle",):
            update_text = f"{phase} {upd.get('wanted') or ''}".strip()
            pct = None
            if phase == "downloading" and upd.get("total_bytes"):
                pct = 100 * upd.get("done_bytes", 0) // upd["total_bytes"]
                update_text += f" {pct}%"
            updating = (str(phase), str(upd.get("wanted") or ""), pct)
        labels = dict(d.get("labels") or {})
        out.append(
            Kiosk(
                device_id=d["device_id"],
                site=d["site"],
                role=d["role"] or "",
                online=bool(d["online"]),
                revoked=bool(d["revoked"]),
                software=str(upd.get("committed") or rep.get("software") or ""),
                models=", ".join(f"{k}={v}" for k, v in sorted((rep.get("models") or {}).items())),
                last_seen=d["last_seen"],
                outbox=int(rep.get("outbox_depth") or 0),
                health=health,
                alarms=alarms,
                update=update_text,
                state=state_of(d, labels),
                trouble=[(str(k), str(v)) for k, v in sorted(components.items()) if v != "up"],
                updating=updating,
                first_seen=d.get("first_seen"),
                labels=labels,
            )
        )
    return out


def state_of(device: dict[str, Any], labels: dict[str, str]) -> str:
    """One word for where a kiosk is: a kiosk enrolled but never heard from is not "offline
    with good health", it is its own case."""
    if device.get("revoked"):
        return "revoked"
    if labels.get(QUARANTINE_LABEL) == QUARANTINE_ON:
        return "quarantined"
    if device.get("online"):
        return "online"
    return "offline" if device.get("last_seen") is not None else "never"


def attention(
    repo: Repo, fleet: list[Kiosk], rollouts: list[dict[str, Any]]
) -> list[tuple[str, str, str]]:
    """(kind, subject, detail): what a person should look at, most urgent first."""
    now = utc_now()
    items: list[tuple[str, str, str]] = [
        ("att_rekey", device, request) for device, request in pending_rekeys(repo)
    ]
    # a kiosk said what its role may not (fleet/authz.py): first, it may be a stolen one
    rows, _ = repo.list_events(type_=SECURITY_ATTENTION, since=now - ATTENTION_WINDOW, limit=20)
    for e in rows:
        p = e["payload"]
        items.append(
            ("att_security", e["device_id"], f"{p.get('reason', '')}: {p.get('detail', '')}")
        )
    for r in rollouts:
        if r["state"] == "halted":
            items.append(
                ("att_rollout", f"{r['release']} ({r['rollout_id']})", r["halt_reason"] or "")
            )
    for k in fleet:
        if k.revoked:
            continue  # cut off on purpose: nothing to look at
        if k.state == "quarantined":
            items.append(("att_quarantined", k.device_id, ""))
        if k.state == "never":
            since = k.first_seen.strftime("%Y-%m-%d %H:%M") if k.first_seen else ""
            items.append(("att_never", k.device_id, since))
        if not k.online and k.last_seen is not None and now - k.last_seen > OFFLINE_ALERT:
            items.append(("att_offline", k.device_id, k.last_seen.strftime("%Y-%m-%d %H:%M")))
        for alarm in k.alarms:
            kind = (
                "att_update"
                if alarm.startswith("update")
                else ("att_desired" if alarm.startswith("config") else "att_degraded")
            )
            items.append((kind, k.device_id, alarm))
    rows, _ = repo.list_events(type_="circ.attention", since=now - ATTENTION_WINDOW, limit=20)
    for e in rows:
        p = e["payload"]
        items.append(
            ("att_circ", e["device_id"], f"{p.get('item_id', '')} {p.get('reason', '')}".strip())
        )
    items += exit_alarms(repo, now)
    items += ils_waiting(repo)
    quarantined = len(repo.list_quarantine(limit=100))
    if quarantined:
        items.append(("att_quarantine", "central", str(quarantined)))
    return items


def ils_waiting(repo: Repo) -> list[tuple[str, str, str]]:
    """Pushes to the library system held for a person (each, with why), and those retrying
    (one line: how many, the latest reason)."""
    summary = Queue(repo).summary()
    out = [
        ("att_ils_held", w["patron_id"], f"{w['op']}: {w['reason']}: {w['detail']}")
        for w in summary["waiting"]
        if w["state"] == "held"
    ]
    retrying = [w for w in summary["waiting"] if w["state"] != "held"]
    if retrying:
        w = retrying[0]
        out.append(
            (
                "att_ils_waiting",
                str(summary["pending"]),
                f"{w['reason']}: {w['detail']} ({summary['oldest_waiting'] or ''})",
            )
        )
    return out


def exit_alarms(repo: Repo, now: datetime) -> list[tuple[str, str, str]]:
    """Live exit-gate alarms: the items that left unborrowed, or a gate not guarding."""
    rows, _ = repo.list_events(type_="exit.alarm", since=now - EXIT_ALARM_WINDOW, limit=20)
    out = []
    for e in rows:
        p = e["payload"] or {}
        when = e["occurred_at"].strftime("%H:%M") if e.get("occurred_at") else ""
        if p.get("reason") == "reader_out_of_service":
            out.append(("att_exit_down", e["device_id"], f"{when} {p.get('state', '')}".strip()))
            continue
        listed = [i for i in p.get("items") or [] if isinstance(i, dict)]
        ids = ", ".join(str(i.get("item_id") or i.get("uid") or "?") for i in listed[:5])
        more = f" +{len(listed) - 5}" if len(listed) > 5 else ""
        out.append(("att_exit", e["device_id"], f"{when} {ids}{more} ({p.get('reason', '')})"))
    return out


def recent_events(repo: Repo, limit: int = 15) -> list[dict[str, Any]]:
    rows, _ = repo.list_events(limit=limit)
    out = []
    for e in rows:
        p = e["payload"] or {}
        keys = (
            "decision",
            "method",
            "reason",
            "result",
            "item_id",
            "version",
            "component",
            "state",
        )
        summary = ", ".join(f"{k}={p[k]}" for k in keys if k in p)
        fields = [str(p[k])[:60] for k in keys if k in p and not isinstance(p[k], dict | list)]
        out.append({**e, "summary": summary[:140], "fields": fields})
    return out


def snapshot(repo: Repo, engine: Rollouts | None) -> dict[str, Any]:
    fleet = kiosks(repo)
    rollouts = engine.list_all(20) if engine is not None else []
    now = utc_now()
    return {
        "kiosks": fleet,
        "online": sum(1 for k in fleet if k.online),
        "rollouts": rollouts,
        "events": recent_events(repo),
        "attention": attention(repo, fleet, rollouts),
        "now": now,
        "ago": lambda when: _ago(when, now),
    }

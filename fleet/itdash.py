"""What the IT pages of the dashboard compute: the fleet searched, filtered and sorted, the
view by branch, one kiosk's page (health over time, activity, last events), the audit trail,
the backup panel, and the words for internals.

Everything here reads what central already records (the device registry, the events the
kiosks sent, the audit trail, the backup status file); nothing writes. Words are looked up
by code in the dashboard's catalogue: a code with no words is shown as itself, as detail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from biblioedge.fleet.backup.status import continuity_status
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.dashboard import Kiosk
from biblioedge.fleet.dashboard_text import Lang, catalogue
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.rollout_plan import RolloutError
from biblioedge.fleet.store.activity import activity_rows
from biblioedge.protocol import utc_now

STATES = ("online", "offline", "never", "quarantined", "revoked")
ROLES = ("gate", "selfcheck", "desk", "exitgate")
SORTS = ("device", "site", "state", "last_seen", "outbox", "software")
#: most urgent first when sorting by state
_STATE_ORDER = {"never": 0, "offline": 1, "quarantined": 2, "online": 3, "revoked": 4}
HISTORY_DAYS = 14
#: events read for one kiosk's activity chart; a busy gate's fortnight fits
ACTIVITY_LIMIT = 50_000
LAST_EVENTS = 30
#: device.* events that are trouble (the others say things went well)
TROUBLE = frozenset(
    {
        "device.outbox_alarm",
        "device.storage_full",
        "device.desired_rejected",
        "device.component_crashed",
        "device.update_failed",
        "device.update_rolled_back",
    }
)
#: codes: snake_case tokens anywhere, or the first word (``update 0.2.1: rolled_back``);
#: other plain words are left alone (they may be a sentence from a kiosk, in English)
_CODE = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b|^[a-z]+\b")
#: payload fields an event line shows, in this order
_SHOWN = ("decision", "method", "reason", "result", "item_id", "version", "component", "state")


class Say:
    """``say(text)``: each code in ``text`` with words for it replaced by them (unknown_face
    → "không nhận ra khuôn mặt"); free text and unknown codes stay as they are.
    ``say.halt(reason)``: a rollout's halt reason (fleet/rollout_plan.py words it in English
    for the API and the log) in the page's language, waves counted from 1 as the page does."""

    def __init__(self, lang: Lang) -> None:
        self.t = catalogue(lang)

    def __call__(self, text: object) -> str:
        return _CODE.sub(lambda m: self.t.get(f"w_{m.group(0)}", m.group(0)), str(text))

    def halt(self, reason: object) -> str:
        text = str(reason or "")
        m = _HALT_WAVE.match(text)
        if m is None:
            return self(text)
        wave, rest = int(m.group(1)) + 1, m.group(2)
        for pattern, key in _HALTS:
            found = pattern.match(rest)
            if found:
                parts = [self(g) for g in found.groups()]
                return self.t["halt_wave"].format(wave=wave) + self.t[key].format(*parts)
        return self.t["halt_wave"].format(wave=wave) + self(rest)


_HALT_WAVE = re.compile(r"^wave (\d+): (.*)$", re.S)
_HALTS = (
    (re.compile(r"^(\d+) of (\d+) failed \((.*)\)$", re.S), "halt_failed"),
    (re.compile(r"^(\d+) component crashes on the new release, (\d+) before$"), "halt_crashes"),
    (re.compile(r"^gate false rejects (\S+) on the new release, (\S+) before$"), "halt_rejects"),
    (re.compile(r"^failed loans (\S+) on the new release, (\S+) before$"), "halt_loans"),
)


def sayer(lang: Lang) -> Say:
    return Say(lang)


# -- the fleet table: search, filter, sort ----------------------------------------------


@dataclass(frozen=True)
class View:
    """What the person asked the fleet table for (the page's query string), bounded."""

    q: str = ""
    site: str = ""
    role: str = ""
    state: str = ""
    sort: str = "site"
    desc: bool = False

    @classmethod
    def of(cls, query: Mapping[str, str]) -> View:
        """Unknown values are ignored, not errors: a stale bookmark still shows the fleet."""
        role = query.get("role", "")
        state = query.get("state", "")
        sort = query.get("sort", "site")
        return cls(
            q=query.get("q", "").strip()[:64],
            site=query.get("site", "").strip()[:64],
            role=role if role in ROLES else "",
            state=state if state in STATES else "",
            sort=sort if sort in SORTS else "site",
            desc=query.get("desc") == "1",
        )

    @property
    def active(self) -> bool:
        return bool(self.q or self.site or self.role or self.state)

    def apply(self, fleet: list[Kiosk]) -> list[Kiosk]:
        q = self.q.casefold()
        shown = [
            k
            for k in fleet
            if (not self.site or k.site == self.site)
            and (not self.role or k.role == self.role)
            and (not self.state or k.state == self.state)
            and (not q or q in _haystack(k))
        ]
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        keys: dict[str, Callable[[Kiosk], Any]] = {
            "device": lambda k: k.device_id,
            "site": lambda k: (k.site, k.device_id),
            "state": lambda k: (_STATE_ORDER.get(k.state, 9), k.site, k.device_id),
            "last_seen": lambda k: (k.last_seen or epoch, k.device_id),
            "outbox": lambda k: (k.outbox, k.device_id),
            "software": lambda k: (k.software, k.device_id),
        }
        return sorted(shown, key=keys[self.sort], reverse=self.desc)


def _haystack(k: Kiosk) -> str:
    labels = " ".join(f"{a}={b}" for a, b in k.labels.items())
    return " ".join((k.device_id, k.site, k.role, k.software, k.models, labels)).casefold()


def sites_of(fleet: list[Kiosk]) -> list[str]:
    return sorted({k.site for k in fleet})


# -- the view by branch ---------------------------------------------------------------------


def branches(fleet: list[Kiosk], attention: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """One row per site: its kiosks by state, how many need attention, its versions."""
    flagged = {subject for _, subject, _ in attention}
    out: dict[str, dict[str, Any]] = {}
    for k in fleet:
        b = out.setdefault(
            k.site,
            {"site": k.site, "total": 0, "states": dict.fromkeys(STATES, 0), "attention": 0}
            | {"software": {}},
        )
        b["total"] += 1
        b["states"][k.state] += 1
        b["attention"] += k.device_id in flagged
        if k.software:
            b["software"][k.software] = b["software"].get(k.software, 0) + 1
    return [out[s] for s in sorted(out)]


# -- one kiosk's page -------------------------------------------------------------------------


def _series_of(kind: str, decision: str | None) -> str | None:
    if kind == "gate.decision":
        return "visits" if decision == "grant" else "refused"
    if kind == "circ.checkout":
        return "loans"
    if kind == "circ.checkin":
        return "returns"
    if kind in TROUBLE:
        return "trouble"
    return None


SERIES = ("visits", "refused", "loans", "returns", "trouble")


def activity(repo: Repo, device_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Events a day for the last ``HISTORY_DAYS`` days, by kind (what the chart draws and
    the table beside it lists)."""
    now = now or utc_now()
    first = (now - timedelta(days=HISTORY_DAYS - 1)).date()
    days = [first + timedelta(days=i) for i in range(HISTORY_DAYS)]
    counts = {s: [0] * HISTORY_DAYS for s in SERIES}
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    counted = {"gate.decision", "circ.checkout", "circ.checkin", *TROUBLE}
    rows = activity_rows(repo, device_id, start, counted, ACTIVITY_LIMIT)
    for when, kind, decision in rows:
        series = _series_of(kind, decision)
        if series is None:
            continue
        i = (when.astimezone(UTC).date() - first).days
        if 0 <= i < HISTORY_DAYS:
            counts[series][i] += 1
    return {
        "days": [d.isoformat() for d in days],
        "series": counts,
        "truncated": len(rows) >= ACTIVITY_LIMIT,
    }


def health_history(repo: Repo, device_id: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """The kiosk's own reports of trouble and recovery (device.* events), newest first."""
    since = (now or utc_now()) - timedelta(days=HISTORY_DAYS)
    rows, _ = repo.list_events(device_id=device_id, since=since, limit=2000)
    return [e for e in rows if str(e["type"]).startswith("device.")][:100]


def event_lines(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event with the payload fields a person reads, as (field, value) pairs."""
    out = []
    for e in rows:
        p = e.get("payload") or {}
        shown = [(k, str(p[k])[:80]) for k in _SHOWN if k in p and not isinstance(p[k], dict)]
        out.append({**e, "fields": shown, "trouble": e["type"] in TROUBLE})
    return out


def last_events(repo: Repo, device_id: str) -> list[dict[str, Any]]:
    rows, _ = repo.list_events(device_id=device_id, limit=LAST_EVENTS)
    return event_lines(rows)


# -- the audit trail ------------------------------------------------------------------------

_AUDIT_WORDS = (
    (re.compile(r"^/dashboard/login$"), "audit_login"),
    (re.compile(r"^/dashboard/logout$"), "audit_logout"),
    (re.compile(r"/rollouts/[^/]+/(pause|resume|abort)$"), "audit_rollout_{0}"),
    (re.compile(r"/rollouts$"), "audit_rollout_start"),
    (re.compile(r"/kiosks/[^/]+/(desired|resync|quarantine|unquarantine|revoke)$"), "audit_{0}"),
    (re.compile(r"^/api/v1/devices/[^/]+/desired$"), "audit_desired"),
    (re.compile(r"^/api/v1/devices/[^/]+/revoke$"), "audit_revoke"),
    (re.compile(r"^/api/v1/devices/[^/]+/labels$"), "audit_labels"),
)


def audit_what(path: str) -> str | None:
    """The catalogue key that says what an audited request did, or None (shown as the raw
    method and path)."""
    for pattern, key in _AUDIT_WORDS:
        m = pattern.search(path)
        if m:
            return key.format(*m.groups())
    return None


def audit_result(status: int) -> str:
    return "done_ok" if status < 400 else ("done_refused" if status < 500 else "done_failed")


# -- backups --------------------------------------------------------------------------------


def backup_panel(cfg: CentralConfig | None, now: datetime | None = None) -> dict[str, Any]:
    """The last backup, its age, size and copies (directories and S3), and the last restore
    drill, as ``GET /api/v1/backups/status`` says them (``fleet/backup/status.py``)."""
    if cfg is None:
        return {"backup": None, "drill": None, "configured": False}
    status = continuity_status(cfg, now)
    last, drill = status["last"], status["last_drill"]
    return {
        "backup": None
        if last is None
        else {
            "created": str(last.get("created") or ""),
            "age_h": float(last.get("age_h") or 0.0),
            "bytes": int(last.get("bytes") or 0),
            "stale": bool(last.get("stale")),
            "backup_id": str(last.get("backup_id") or ""),
            "copies": [{"path": str(c["where"]), "ok": bool(c["ok"])} for c in last["copies"]],
        },
        "drill": None
        if drill is None
        else {
            "at": str(drill.get("at") or ""),
            "result": "drill_ok" if drill.get("ok") else "drill_failed",
        },
        "configured": bool(status["configured"]),
    }


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover - the loop returns at GB


def human_age(hours: float) -> str:
    if hours < 1:
        return f"{max(int(hours * 60), 0)} min"
    if hours < 48:
        return f"{hours:.0f} h"
    return f"{hours / 24:.0f} d"


# -- what a redirect may say ----------------------------------------------------------------

#: the messages a redirect may carry: ``?refused=`` or ``?done=`` show only these
MESSAGES = frozenset(
    {
        "busy",
        "no_match",
        "bad_state",
        "no_rollout",
        "choose_release",
        "no_release",
        "below_floor",
        "bad_waves",
        "unknown_site",
        "refused",
        "stale",
        "bad_json",
        "bad_desired",
        "too_large",
        "no_certificate",
        "not_confirmed",
        "broker_down",
        "offline_cmd",
        "saved",
        "resync_sent",
        "quarantined",
        "released",
        "revoked",
    }
)


def known_message(code: str | None) -> str | None:
    """The catalogue key for a message code from the query string, None for anything else:
    a crafted ``?refused=`` shows nothing."""
    return f"msg_{code}" if code in MESSAGES else None


def rollout_refusal(exc: RolloutError) -> str:
    """The message code for a rollout central refused."""
    d = exc.detail
    if d.startswith("already in an active rollout"):
        return "busy"
    if d.startswith("the selection matches no kiosk"):
        return "no_match"
    if d.startswith("cannot "):
        return "bad_state"
    if d == "no such rollout":
        return "no_rollout"
    if d == "choose a release":
        return "choose_release"
    if "floor" in d:
        return "below_floor"
    if "release" in d:
        return "no_release"
    return "refused"


_WAVE = re.compile(r"^(?:[1-9][0-9]{0,4}|100000|(?:[1-9][0-9]?|100)%)$")


def parse_waves(text: str) -> list[int | str] | None:
    """``1,10%,100%`` as a plan's waves; None for anything a person mistyped."""
    parts = [w.strip() for w in text.split(",") if w.strip()]
    if not parts or len(parts) > 10 or not all(_WAVE.match(w) for w in parts):
        return None
    return [w if w.endswith("%") else int(w) for w in parts]

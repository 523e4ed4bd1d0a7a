"""Alerts as IT receives them: by e-mail through an SMTP server from outside the project
(aiosmtpd, from PyPI) and by webhook to a local HTTP receiver; once when a condition starts,
once when it ends, never twice across a restart, and never to central itself or a private
address that was not allowed."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiosmtpd.controller import Controller

from biblioedge.fleet.alerts.rules import (
    Condition,
    KioskSeen,
    Tracked,
    changes,
    conditions,
)
from biblioedge.fleet.alerts.settings import AlertsConfig
from biblioedge.fleet.alerts.worker import AlertWorker
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.repo import Incoming, Repo
from biblioedge.procs import free_port
from biblioedge.settings import ConfigError

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)

# -- the rules, pure ----------------------------------------------------------------------


def test_a_condition_fires_once_after_its_hold_and_ends_once() -> None:
    cfg = AlertsConfig(offline_after_min=30)
    seen = [KioskSeen("gate-01", False, False, T0)]
    assert conditions(cfg, [], seen, None, T0 + timedelta(minutes=29)) == {}
    wrong = conditions(cfg, [], seen, None, T0 + timedelta(minutes=30))
    assert list(wrong) == ["offline:gate-01"]
    (fire,) = changes(cfg, {}, wrong, T0 + timedelta(minutes=30))
    assert (fire.action, fire.kind, fire.subject) == ("fire", "offline", "gate-01")
    tracked = {fire.key: Tracked(fire.key, "offline", "gate-01", fire.detail, fire.since, True)}
    assert changes(cfg, tracked, wrong, T0 + timedelta(hours=5)) == []  # told already
    (end,) = changes(cfg, tracked, {}, T0 + timedelta(hours=6))
    assert end.action == "resolve"


def test_a_flapping_health_never_alerts_and_a_security_case_never_ends() -> None:
    cfg = AlertsConfig()
    wrong = conditions(cfg, [("att_degraded", "gate-01", "camera")], [], None, T0)
    (track,) = changes(cfg, {}, wrong, T0)
    assert track.action == "track"  # five minutes of hold
    tracked = {track.key: Tracked(track.key, "degraded", "gate-01", "camera", T0, False)}
    (forget,) = changes(cfg, tracked, {}, T0 + timedelta(minutes=2))
    assert forget.action == "forget"  # back before anyone needed to know
    case = conditions(cfg, [("att_security", "gate-02", "role: desk.registration")], [], None, T0)
    (fire,) = changes(cfg, {}, case, T0)
    assert fire.action == "fire"
    tracked = {fire.key: Tracked(fire.key, "security", "gate-02", fire.detail, T0, True)}
    assert [c.action for c in changes(cfg, tracked, {}, T0 + timedelta(days=2))] == ["forget"]


def test_only_the_chosen_kinds_alert_and_a_revoked_kiosk_is_not_offline() -> None:
    cfg = AlertsConfig(kinds=["rollout_halted"])
    att = [("att_degraded", "g", "x"), ("att_rollout", "0.2.1 (r1)", "wave 1: 2 failed")]
    seen = [KioskSeen("gone", False, True, T0 - timedelta(days=3))]
    assert list(conditions(cfg, att, seen, "40 h", T0)) == ["rollout_halted:0.2.1 (r1)"]
    assert conditions(AlertsConfig(), [], seen, None, T0) == {}
    never = conditions(
        AlertsConfig(kinds=["never_seen"]), [], [KioskSeen("new", False, False, None)], None, T0
    )
    assert never == {"never_seen:new": Condition("never_seen", "new", "")}


def test_the_config_refuses_urls_with_credentials_and_telegram_without_a_chat() -> None:
    from biblioedge.fleet.config import load_central_config

    for webhook, why in (
        ({"url": "https://user:pw@chat.example/x"}, "no user or password"),
        ({"url": "ftp://chat.example/x"}, "http(s)://"),
        ({"url": "https://api.telegram.org/botX/sendMessage", "format": "telegram"}, "chat_id"),
        ({}, "exactly one of url and url_file"),
    ):
        with pytest.raises(ConfigError, match=re.escape(why)):
            load_central_config(None, {}, {"data_dir": "/tmp/x", "alerts": {"webhooks": [webhook]}})


# -- end to end: a real SMTP server and an HTTP receiver ------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class Receiver:
    """A chat app's incoming webhook: records each POST; can be told to answer slowly,
    with an error, or with a redirect."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.answer = 200
        self.hang = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.hang.is_set():
                    receiver.release.wait(30)  # longer than the alerts' timeout
                receiver.posts.append(json.loads(body))
                self.send_response(receiver.answer)
                if receiver.answer in (301, 302, 307):
                    self.send_header("Location", "http://169.254.169.254/latest/meta-data")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.hang.clear()
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def _central(tmp_path: Path, alerts: dict[str, Any]) -> tuple[CentralConfig, Repo]:
    cfg = CentralConfig.model_validate(
        {"data_dir": str(tmp_path), "http": {"port": 18443}, "alerts": alerts}
    )
    repo = Repo(cfg.db_url)
    repo.migrate()
    return cfg, repo


def _report(repo: Repo, device: str, online: bool) -> None:
    state = {"device_id": device, "site": "tv-tinh", "role": "gate", "online": online}
    result = repo.ingest(
        [Incoming("tv-tinh", device, "state", orjson.dumps(state))], accept_unknown=True
    )
    assert result.states == 1 and not result.refused and not result.security, result


def test_a_kiosk_offline_too_long_is_told_once_by_mail_and_webhook_and_once_when_back(
    tmp_path: Path, smtp: tuple[Inbox, int], receiver: Receiver
) -> None:
    inbox, port = smtp
    cfg, repo = _central(
        tmp_path,
        {
            "offline_after_min": 30,
            "allow_private": ["127.0.0.1"],
            "email": {
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "sender": "biblioedge@thuvien.example",
                "to": ["it@thuvien.example"],
            },
            "webhooks": [{"url": receiver.url, "format": "slack"}],
        },
    )
    try:
        repo.register_device("gate-01", "tv-tinh", "gate")
        _report(repo, "gate-01", True)
        _report(repo, "gate-01", False)  # its last will: gone
        worker = AlertWorker(cfg, repo)
        later = datetime.now(UTC) + timedelta(hours=1)
        assert worker.check(later) == 2  # one message per target
        assert worker.deliver(later) == {"sent": 2, "failed": 0, "dropped": 0}
        (mail,) = inbox.messages
        assert mail["Subject"] == "[CẢNH BÁO] Thiết bị mất kết nối: gate-01"
        assert "Kiosk offline" in mail.get_content()
        (post,) = receiver.posts
        assert post["text"].startswith("[CẢNH BÁO] Thiết bị mất kết nối: gate-01\n[ALERT]")

        # central restarts: the same condition is not told again
        again = AlertWorker(cfg, repo)
        assert again.check(later + timedelta(minutes=5)) == 0
        assert again.deliver(later + timedelta(minutes=5))["sent"] == 0

        _report(repo, "gate-01", True)  # back
        assert again.check(later + timedelta(minutes=10)) == 2
        again.deliver(later + timedelta(minutes=10))
        assert inbox.messages[-1]["Subject"] == "[ĐÃ HẾT] Thiết bị mất kết nối: gate-01"
        assert receiver.posts[-1]["text"].startswith("[ĐÃ HẾT]")
        assert again.store.summary()["active"] == []
    finally:
        repo.close()


def test_a_target_that_is_down_or_slow_is_retried_and_never_holds_the_others(
    tmp_path: Path, smtp: tuple[Inbox, int], receiver: Receiver
) -> None:
    inbox, port = smtp
    cfg, repo = _central(
        tmp_path,
        {
            "timeout_s": 1,
            "allow_private": ["127.0.0.1"],
            "webhooks": [{"url": receiver.url}, {"url": f"http://127.0.0.1:{free_port()}/down"}],
            "email": {
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "sender": "a@b.example",
                "to": ["c@d.example"],
            },
        },
    )
    try:
        worker = AlertWorker(cfg, repo)
        receiver.hang.set()  # the first webhook answers after the timeout
        now = datetime.now(UTC)
        assert worker.test(now) == 3
        done = worker.deliver(now)
        assert done == {"sent": 1, "failed": 2, "dropped": 0}  # the e-mail went regardless
        assert len(inbox.messages) == 1
        waiting = worker.store.summary()["retrying"]
        assert {w["target"] for w in waiting} == {"webhook0", "webhook1"}
        assert any("Timeout" in w["error"] for w in waiting), waiting
        assert any("Connect" in w["error"] for w in waiting), waiting
        assert worker.deliver(now)["sent"] == 0  # backing off: not tried again at once
        receiver.hang.clear()
        receiver.release.set()
        done = worker.deliver(now + timedelta(hours=1))
        assert done["sent"] == 1 and done["failed"] == 1  # the slow one now answers
        gone = now + timedelta(hours=cfg.alerts.give_up_h + 1) if cfg.alerts else now
        assert worker.deliver(gone)["dropped"] == 1  # the dead one is given up, with why
        assert worker.store.summary()["pending"] == 0
    finally:
        repo.close()


def test_a_webhook_never_reaches_central_itself_a_private_address_or_a_redirect(
    tmp_path: Path, receiver: Receiver
) -> None:
    cfg, repo = _central(
        tmp_path,
        {
            "allow_private": ["127.0.0.1"],
            "webhooks": [
                {"url": "http://127.0.0.1:18443/api/v1/devices"},  # central's own port
                {"url": "http://10.20.30.40/hook"},  # a private address not allowed
                {"url": "http://localhost:18443/x"},  # central again, by name
                {"url": receiver.url},  # allowed, but it redirects
            ],
        },
    )
    try:
        receiver.answer = 302
        worker = AlertWorker(cfg, repo)
        now = datetime.now(UTC)
        worker.test(now)
        done = worker.deliver(now)
        assert done == {"sent": 0, "failed": 1, "dropped": 3}
        with repo.engine.connect() as conn:
            errors = dict(
                conn.exec_driver_sql("SELECT target, last_error FROM alert_outbox").fetchall()
            )
        assert "central itself" in errors["webhook0"] and "central itself" in errors["webhook2"]
        assert "private address" in errors["webhook1"]
        assert "not followed" in errors["webhook3"]
        assert len(receiver.posts) == 1  # the redirect was not followed anywhere
    finally:
        repo.close()


def test_central_alerts_test_command(tmp_path: Path, receiver: Receiver) -> None:
    import subprocess
    import sys

    conf = tmp_path / "central.toml"
    conf.write_text(
        f'data_dir = "{tmp_path}"\n[alerts]\nallow_private = ["127.0.0.1"]\n'
        f'[[alerts.webhooks]]\nurl = "{receiver.url}"\nformat = "teams"\n'
    )
    cli = [sys.executable, "-m", "biblioedge", "central", "alerts"]
    out = subprocess.run(
        [*cli, "test", "--config", str(conf), "--json"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"queued": 1, "sent": 1, "failed": 0, "dropped": 0}
    (card,) = receiver.posts
    assert card["@type"] == "MessageCard" and card["title"].startswith("[CẢNH BÁO] Thử cảnh báo")
    receiver.answer = 500
    out = subprocess.run(
        [*cli, "test", "--config", str(conf)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr


# -- for IT teams that run Prometheus and Grafana -------------------------------------------


def _exported_metrics() -> set[str]:
    from prometheus_client import generate_latest

    from biblioedge.agent.gate.flow import GateMetrics
    from biblioedge.agent.metrics import AgentMetrics

    agent = AgentMetrics()
    GateMetrics(agent.registry)  # a gate's agent exports both
    text = generate_latest(CentralMetrics().registry).decode()
    text += generate_latest(agent.registry).decode()
    return set(re.findall(r"^# TYPE (\w+)", text, re.M)) | set(
        re.findall(r"^(\w+)(?:\{| )", text, re.M)
    )


def test_the_shipped_prometheus_rules_and_grafana_dashboard_use_metrics_that_exist() -> None:
    monitoring = ROOT / "docs" / "monitoring"
    rules = yaml.safe_load((monitoring / "prometheus-rules.yml").read_text())
    exported = _exported_metrics()
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            assert rule["labels"]["severity"] in ("warning", "critical")
            names += re.findall(r"\b((?:central|agent|gate|desk)_\w+)", rule["expr"])
    dashboard = json.loads((monitoring / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names += re.findall(r"\b((?:central|agent|gate|desk)_\w+)", target["expr"])
    assert names
    # counters are exported as NAME_total; histograms as NAME_bucket/_sum/_count
    missing = {
        n
        for n in names
        if n not in exported and re.sub(r"_(total|bucket|sum|count)$", "", n) not in exported
    }
    assert missing == set()

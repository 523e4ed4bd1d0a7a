"""The dashboard's IT pages in a real headless Chromium (Debian's): a page per kiosk with its
activity chart, health over time, last events in words and its actions; search, filter and
sort; the view by branch; the audit trail; the backup panel of a real backup; never-seen
kiosks; refusals said in words, and nothing shown for a crafted ``?refused=``; a phone-sized
window without a page that scrolls sideways."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import x25519
from test_dashboard import CHROMIUM, DRIVER, browser, click, report, sign_in, wait_text
from tuf_kit import tuf_server

from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Audit, Tokens
from biblioedge.fleet.backup import run_backup
from biblioedge.fleet.backup.status import record_drill
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.repo import Incoming, Repo
from biblioedge.fleet.rollouts import RolloutError, RolloutPlan, Rollouts, Selector
from biblioedge.keys import load_or_create_key
from biblioedge.procs import free_port
from biblioedge.protocol import utc_now, uuid7
from biblioedge.provisioning.sealing import x25519_public_b64

__all__ = ["browser"]  # the shared Chromium fixture
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed"
)


def send(repo: Repo, device: str, site: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Events as the kiosk sends them, through central's own ingest."""
    now = utc_now()
    body = {
        "v": 1,
        "batch_id": uuid7(),
        "device_id": device,
        "events": [
            {
                "event_id": uuid7(),
                "device_id": device,
                "site": site,
                "type": kind,
                "seq": int(time.time_ns() // 1000) + i,
                "occurred_at": (now - timedelta(seconds=len(events) - i)).isoformat(),
                "payload": payload,
            }
            for i, (kind, payload) in enumerate(events)
        ],
    }
    result = repo.ingest([Incoming(site, device, "events", orjson.dumps(body))], True)
    assert not result.quarantined, result.quarantined


def login(browser: Any, url: str, token: str) -> None:
    """Sign in and wait until the fleet page is there (the session cookie is set)."""
    sign_in(browser, url, token)
    wait_text(browser, "#who", "(")


def texts(browser: Any, css: str) -> list[str]:
    """The text of each element ``css`` finds, read at once (a live update may replace the
    section between finding and reading element by element)."""
    got = browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent)",
        css,
    )
    return [str(t).strip() for t in got]


@pytest.fixture
def central(tmp_path: Path) -> Iterator[dict[str, Any]]:
    key = x25519.X25519PrivateKey.generate()
    with tuf_server(tmp_path / "tuf") as srv:
        srv.software("2.0")
        cfg = CentralConfig(
            data_dir=tmp_path / "central",
            backup={"public_key": x25519_public_b64(key), "copies": [str(tmp_path / "copy")]},
        )
        cfg.data_dir.mkdir(parents=True)
        repo = Repo(cfg.db_url)
        template_key = load_or_create_key(cfg.data_dir / "keys" / "templates.key")
        repo.migrate(template_key)
        readers = Readers(repo, template_key)  # the librarian's pages are served too
        cards = Cards(readers, load_or_create_key(cfg.data_dir / "keys" / "cards.key"))
        for device_id, s, role in (
            ("gate-1", "tv-tinh", "gate"),
            ("gate-2", "tv-tinh", "gate"),
            ("self-1", "tv-huyen", "selfcheck"),
            ("desk-9", "tv-huyen", "desk"),  # enrolled, never connected
        ):
            repo.register_device(device_id, s, role)
        report(repo, "gate-1", "1.0", models={"detect": "dlib-hog@1", "embed": "dlib-resnet@1"})
        report(repo, "gate-2", "1.0", online=False)
        report(repo, "self-1", "1.0", components={"sync": "up", "rfid": "down"})
        send(
            repo,
            "gate-1",
            "tv-tinh",
            [
                ("gate.decision", {"decision": "grant", "method": "face", "patron_id": "P1"}),
                ("gate.decision", {"decision": "deny", "method": "face", "reason": "unknown_face"}),
                ("device.component_crashed", {"component": "camera", "reason": "crashed"}),
                ("gate.decision", {"decision": "grant", "method": "card_qr", "patron_id": "P2"}),
            ],
        )
        engine = Rollouts(repo, srv.repo, None)
        tokens = Tokens(repo.engine)
        _, admin = tokens.create("it-admin", "admin")
        _, viewer = tokens.create("watcher", "viewer")
        app = create_app(
            cfg,
            repo,
            None,
            CentralMetrics(),
            readers=readers,
            cards=cards,
            releases=srv.repo,
            rollouts=engine,
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        try:
            yield {
                "url": f"http://127.0.0.1:{port}",
                "repo": repo,
                "cfg": cfg,
                "admin": admin,
                "viewer": viewer,
                "rollouts": engine,
            }
        finally:
            server.should_exit = True
            thread.join(5)
            repo.close()


def test_the_fleet_table_links_each_kiosk_and_says_never_seen_in_words(
    central: dict[str, Any], browser: Any
) -> None:

    login(browser, central["url"], central["viewer"])
    row = wait_text(browser, "#kiosk-desk-9", "Chưa từng kết nối")
    assert "Chưa rõ" in row and "Tốt" not in row  # no health claimed for a kiosk never heard
    attention = wait_text(browser, "#attention", "Đã đăng ký nhưng chưa từng kết nối")
    assert "desk-9" in attention
    wait_text(browser, "#kiosk-gate-1 .models", "detect=dlib-hog@1")
    wait_text(browser, "#kiosk-self-1 .health", "đầu đọc RFID: ngừng")
    # the last events, in words, the raw type only as small detail
    events = wait_text(browser, "#events", "Quyết định ở cổng")
    assert "không nhận ra khuôn mặt" in events and "reason=" not in events
    # search, filter, sort
    browser.get(central["url"] + "/dashboard?q=gate&sort=device&desc=1")
    assert texts(browser, "#kiosks a.kiosk-link") == ["gate-2", "gate-1"]
    browser.get(central["url"] + "/dashboard?site=tv-huyen&state=never")
    assert texts(browser, "#kiosks a.kiosk-link") == ["desk-9"]
    wait_text(browser, "#kiosks h2", "đang hiện 1/4")
    # a bookmark with values that mean nothing shows the whole fleet, not an error
    browser.get(central["url"] + "/dashboard?state=<b>&sort=drop+table&role=x")
    assert len(texts(browser, "#kiosks a.kiosk-link")) == 4
    # the view by branch
    click(browser, "#nav-branches")
    branch = wait_text(browser, "#branch-tv-huyen", "tv-huyen")
    assert branch.split()[1] == "2"  # two kiosks there
    click(browser, "#branch-tv-huyen td.n-never a")
    wait_text(browser, "#kiosks", "desk-9")
    # rows are links to a page per kiosk; English on a tap
    click(browser, "#kiosk-desk-9 a.kiosk-link")
    wait_text(browser, "#kiosk-state", "Chưa từng kết nối")
    click(browser, "#lang")
    wait_text(browser, "#kiosk-state", "Never connected")


def test_a_page_per_kiosk_shows_activity_health_and_events(
    central: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    login(browser, central["url"], central["viewer"])
    browser.get(central["url"] + "/dashboard/kiosks/gate-1")
    wait_text(browser, "#overview", "Thiết bị gate-1")
    wait_text(browser, "#kiosk-models", "embed=dlib-resnet@1")
    # the chart is drawn by the vendored Chart.js; the table beside it has the figures
    wait_text(browser, "#activity", "Lượt vào")
    canvas = browser.find_element(By.ID, "chart-activity")
    assert canvas.get_attribute("data-drawn") == "true"
    cells = [int(c) for c in texts(browser, "#activity-table tbody td")]
    totals = [sum(cells[i::5]) for i in range(5)]  # over the fortnight: a run may cross midnight
    assert totals == [2, 1, 0, 0, 1]  # entries, refused, loans, returns, trouble
    wait_text(browser, "#health-history", "Thành phần bị lỗi")
    events = wait_text(browser, "#kiosk-events", "không nhận ra khuôn mặt")
    assert "thẻ QR" in events and "gate.decision" in events  # the code, as detail
    # a viewer has nothing to press
    assert browser.find_elements(By.ID, "actions") == []
    # no such kiosk: 404, and a crafted id is not looked up
    with httpx.Client(base_url=central["url"]) as http:
        cookie = browser.get_cookie("be_session")["value"]
        for path in ("/dashboard/kiosks/nobody", "/dashboard/kiosks/BAD%20ID"):
            r = http.get(path, headers={"Cookie": f"be_session={cookie}"})
            assert r.status_code == 404


def test_admin_acts_on_a_kiosk_and_the_audit_trail_says_so(
    central: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    repo: Repo = central["repo"]
    login(browser, central["url"], central["admin"])
    page = central["url"] + "/dashboard/kiosks/gate-2"
    browser.get(page)
    # quarantine: the state says it, the attention list has it, and no rollout takes it
    click(browser, "#quarantine")
    wait_text(browser, "#message", "Thiết bị đã được cách ly.")
    wait_text(browser, "#kiosk-state", "Đang cách ly")
    with pytest.raises(RolloutError, match="matches no kiosk"):
        central["rollouts"].create(
            "software", "2.0", Selector(devices=["gate-2"]), RolloutPlan(), "it"
        )
    browser.get(central["url"] + "/dashboard")
    wait_text(browser, "#attention", "Thiết bị đang cách ly")
    browser.get(page)
    click(browser, "#unquarantine")
    wait_text(browser, "#message", "Đã bỏ cách ly.")
    # desired settings: saved (with no broker the kiosk gets them on reconnect)
    Select(browser.find_element(By.ID, "desired-software")).select_by_value("2.0")
    box = browser.find_element(By.ID, "desired-config")
    box.clear()
    box.send_keys('{"gate": {"cooldown_s": 3}}')
    click(browser, "#save-desired")
    wait_text(browser, "#message", "thiết bị sẽ nhận khi kết nối lại")
    device = repo.get_device("gate-2")
    assert device is not None and device["desired_version"] == 1
    assert device["desired"]["software"] == "2.0"
    assert device["desired"]["config"] == {"gate": {"cooldown_s": 3}}
    # what is not JSON, or not sections of settings, is refused with words, nothing saved
    box = browser.find_element(By.ID, "desired-config")
    box.clear()
    box.send_keys('{"gate": {"no_such_setting": 1}')
    click(browser, "#save-desired")
    wait_text(browser, "#message", "Cấu hình phải là JSON")
    browser.get(page)  # afresh: the same message must come from this submission
    box = browser.find_element(By.ID, "desired-config")
    box.clear()
    box.send_keys('["a list"]')
    click(browser, "#save-desired")
    wait_text(browser, "#message", "Cấu hình phải là JSON")
    device = repo.get_device("gate-2")
    assert device is not None and device["desired_version"] == 1
    # resync with no broker connected, revoke without ticking the box: refused in words
    click(browser, "#resync")
    wait_text(browser, "#message", "lệnh chưa được gửi")
    click(browser, "#revoke")
    wait_text(browser, "#message", "Hãy đánh dấu ô xác nhận.")
    # the audit trail, in words, newest first
    click(browser, "#nav-audit")
    trail = wait_text(browser, "#audit", "Cách ly thiết bị")
    for words in ("Bỏ cách ly thiết bị", "Đổi cấu hình mong muốn", "Yêu cầu đồng bộ lại"):
        assert words in trail
    assert trail.index("Thu hồi thiết bị") < trail.index("Cách ly thiết bị")
    paths = [a["path"] for a in Audit(repo.engine).list(50) if a["actor"] == "it-admin"]
    assert "/dashboard/kiosks/gate-2/quarantine" in paths


def test_a_stale_form_and_crafted_messages(central: dict[str, Any], browser: Any) -> None:
    repo: Repo = central["repo"]
    login(browser, central["url"], central["admin"])
    browser.get(central["url"] + "/dashboard/kiosks/gate-1")
    wait_text(browser, "#overview", "gate-1")
    # someone else changes the settings between reading the page and saving it
    repo.put_desired("gate-1", 0, {"config": {}})
    click(browser, "#save-desired")
    wait_text(browser, "#message", "vừa được người khác thay đổi")
    # a mistyped wave is a plain message, not a validation dump
    browser.get(central["url"] + "/dashboard")
    waves = browser.find_element("id", "waves")
    waves.clear()
    waves.send_keys("1,abc%")
    click(browser, "#start-rollout")
    shown = wait_text(browser, "#message", "Các đợt phải là số thiết bị")
    assert "validation" not in shown
    # any other text in ?refused= is never shown
    for crafted in ("Your+account+is+locked.+Call+0900", "<script>alert(1)</script>", "busy2"):
        browser.get(central["url"] + f"/dashboard?refused={crafted}")
        wait_text(browser, "h1", "Quản lý thiết bị thư viện")
        assert browser.find_elements("id", "message") == []
        assert "0900" not in browser.page_source
    # a site that is not one of the fleet's is refused
    cookie = browser.get_cookie("be_session")["value"]
    page = browser.page_source
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    with httpx.Client(base_url=central["url"], follow_redirects=False) as http:
        r = http.post(
            "/dashboard/rollouts",
            data={"csrf": csrf, "release": "software:2.0", "waves": "1", "sites": "nowhere"},
            headers={"Cookie": f"be_session={cookie}"},
        )
        assert r.status_code == 303 and r.headers["location"].endswith("refused=unknown_site")
        # a viewer's session cannot act on a kiosk
        viewer = http.post("/dashboard/login", data={"token": central["viewer"]})
        vcookie = viewer.cookies["be_session"]
        vpage = http.get("/dashboard", headers={"Cookie": f"be_session={vcookie}"}).text
        vcsrf = vpage.split('name="csrf" value="')[1].split('"')[0]
        r = http.post(
            "/dashboard/kiosks/gate-1/quarantine",
            data={"csrf": vcsrf},
            headers={"Cookie": f"be_session={vcookie}"},
        )
        assert r.status_code == 403
        labels = (repo.get_device("gate-1") or {}).get("labels") or {}
        assert "quarantine" not in labels
        # the audit trail is for admins
        r = http.get("/dashboard/audit", headers={"Cookie": f"be_session={vcookie}"})
        assert "Chỉ quản trị viên" in r.text and "audit-row" not in r.text


def test_the_backup_panel_shows_a_real_backup(central: dict[str, Any], browser: Any) -> None:
    login(browser, central["url"], central["viewer"])
    wait_text(browser, "#backup-none", "Chưa có bản sao lưu nào.")
    wait_text(browser, "#attention", "Chưa có bản sao lưu")
    from biblioedge.fleet.central import open_identity

    open_identity(central["cfg"], central["repo"])  # as `central init` leaves it
    status = run_backup(central["cfg"], None)
    browser.get(central["url"] + "/dashboard")
    wait_text(browser, "#backup-age", "Còn mới")
    copies = wait_text(browser, "#backup-copies", "tốt")
    assert str(Path(central["cfg"].data_dir).parent / "copy") in copies
    assert status["backup_id"] in wait_text(browser, "#backup-created", status["created"][:10])
    wait_text(browser, "#backup-drill", "Chưa ghi nhận")
    attention = wait_text(browser, "#attention", "")
    assert "sao lưu" not in attention
    # IT's restore drill (`central backup verify`) is recorded and shown
    record_drill(central["cfg"], Path(status["path"]), status, None)
    browser.get(central["url"] + "/dashboard")
    wait_text(browser, "#backup-drill", "khôi phục được")


def test_a_phone_sized_window_never_scrolls_the_page_sideways(
    central: dict[str, Any], browser: Any
) -> None:
    login(browser, central["url"], central["admin"])
    browser.set_window_size(390, 844)
    for path in ("/dashboard", "/dashboard/kiosks/gate-1", "/dashboard/branches"):
        browser.get(central["url"] + path)
        wait_text(browser, "h1", "Quản lý thiết bị thư viện")
        wide = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert wide <= 1, f"{path} scrolls sideways by {wide}px on a phone"

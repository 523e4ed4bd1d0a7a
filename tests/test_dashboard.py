"""The fleet dashboard in a real headless Chromium (Debian's, through its chromedriver): what a
person signed in as viewer or admin sees, the language toggle, live updates without a
reload, and the actions an admin takes; plus the refusals a crafted request gets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from browser import CHROMIUM, DRIVER, chromium
from sqlalchemy import update
from tuf_kit import tuf_server

from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Audit, Tokens
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.db import devices
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.rollouts import RolloutPlan, Rollouts, Selector
from biblioedge.procs import free_port

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed"
)


def report(repo: Repo, device_id: str, software: str, online: bool = True, **extra: Any) -> None:
    doc = {
        "device_id": device_id,
        "software": software,
        "outbox_depth": 3,
        "components": {"sync": "up"},
        "update": {"phase": "idle", "committed": software},
        **extra,
    }
    with repo.engine.begin() as conn:
        conn.execute(
            update(devices)
            .where(devices.c.device_id == device_id)
            .values(reported=doc, online=online, last_seen=repo_now())
        )


def repo_now() -> Any:
    from biblioedge.protocol import utc_now

    return utc_now()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with tuf_server(tmp_path / "tuf") as srv:
        srv.software("2.0")
        srv.software("3.0")
        cfg = CentralConfig(data_dir=tmp_path / "central")
        cfg.data_dir.mkdir(parents=True)
        repo = Repo(cfg.db_url)
        repo.migrate()
        for device_id, s in (("gate-1", "tv-tinh"), ("gate-2", "tv-tinh"), ("self-1", "tv-huyen")):
            repo.register_device(
                device_id, s, "selfcheck" if device_id.startswith("self") else "gate"
            )
        report(repo, "gate-1", "1.0")
        report(repo, "gate-2", "1.0", online=False)
        report(repo, "self-1", "1.0", degraded=["disk_full"])
        engine = Rollouts(repo, srv.repo, None)
        halted = engine.create("software", "2.0", Selector(sites=["tv-huyen"]), RolloutPlan(), "it")
        r = engine.get(halted["rollout_id"])
        assert r is not None
        engine._step(r, engine.track("software", "2.0"))
        with repo.engine.begin() as conn:
            from biblioedge.fleet.db import rollouts

            conn.execute(
                update(rollouts).values(
                    state="halted", halt_reason="wave 0: self-1: rolled back: self-test failed"
                )
            )
        running = engine.create("software", "3.0", Selector(sites=["tv-tinh"]), RolloutPlan(), "it")
        tokens = Tokens(repo.engine)
        _, admin = tokens.create("it-admin", "admin")
        _, viewer = tokens.create("watcher", "viewer")
        app = create_app(cfg, repo, None, CentralMetrics(), releases=srv.repo, rollouts=engine)
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
                "admin": admin,
                "viewer": viewer,
                "running": running["rollout_id"],
                "halted": halted["rollout_id"],
                "tokens": tokens,
            }
        finally:
            server.should_exit = True
            thread.join(5)
            repo.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def sign_in(browser: Any, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url + "/dashboard")
    assert browser.current_url.endswith("/dashboard/login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "sign-in").click()


def wait_text(browser: Any, css: str, text: str, timeout: float = 10) -> str:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def seen(d: Any) -> str | bool:
        try:  # a live update may replace the section between finding and reading
            got = " ".join(e.text for e in d.find_elements(By.CSS_SELECTOR, css))
        except StaleElementReferenceException:
            return False
        except WebDriverException as exc:  # the same, as chromedriver sometimes words it
            if "does not belong to the document" in str(exc):
                return False
            raise
        return got if text in got else False

    return str(WebDriverWait(browser, timeout).until(seen))


def click(browser: Any, css: str) -> None:
    """Click what ``css`` finds, again if a live update replaced it in between."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + 10  # the page may still be loading after the last click
    while True:
        try:
            browser.find_element(By.CSS_SELECTOR, css).click()
            return
        except (StaleElementReferenceException, NoSuchElementException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_viewer_sees_the_fleet_in_vietnamese_then_english_and_live(
    site: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, site["url"], "bet_wrong")
    wait_text(browser, "#error", "Mã truy cập không đúng")
    sign_in(browser, site["url"], site["viewer"])
    wait_text(browser, "h1", "Quản lý thiết bị thư viện")
    row = wait_text(browser, "#kiosk-gate-1", "Trực tuyến")
    assert "1.0" in row and "Cổng vào" in row
    wait_text(browser, "#kiosk-gate-2", "Ngoại tuyến")
    wait_text(browser, "#kiosk-self-1", "hết dung lượng")
    attention = wait_text(browser, "#attention", "Triển khai bị dừng")
    assert "self-test failed" in attention
    wait_text(browser, f"#rollout-{site['halted']}", "Đã dừng do lỗi")
    # a viewer is told so and has nothing to press
    wait_text(browser, "#viewer-note", "Bạn chỉ có quyền xem.")
    assert browser.find_elements(By.CSS_SELECTOR, "button.pause") == []
    assert browser.find_elements(By.ID, "new-rollout") == []
    # the session cookie is not readable by scripts on the page
    assert browser.execute_script("return document.cookie").find("be_session") == -1
    # live: a kiosk reports a new version, the page shows it without a reload
    marker = browser.find_element(By.TAG_NAME, "h1")
    report(site["repo"], "gate-1", "3.0")
    wait_text(browser, "#kiosk-gate-1 .software", "3.0")
    assert marker.is_displayed()  # same page: the h1 element is still the one we held
    click(browser, "#lang")
    wait_text(browser, "h1", "Library fleet")
    wait_text(browser, "#kiosk-gate-1", "Online")
    wait_text(browser, "#attention", "Rollout halted")
    browser.get(site["url"] + "/dashboard")  # the choice is remembered
    wait_text(browser, "h1", "Library fleet")


def test_admin_pauses_resumes_and_starts_a_rollout(site: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    sign_in(browser, site["url"], site["admin"])
    row = f"#rollout-{site['running']}"
    click(browser, f"{row} button.pause")
    wait_text(browser, f"{row} .state", "Tạm dừng")
    click(browser, f"{row} button.resume")
    wait_text(browser, f"{row} .state", "Đang chạy")
    # a second rollout for kiosks already in one: refused, and the page says why
    Select(browser.find_element(By.ID, "release")).select_by_value("software:2.0")
    click(browser, "#start-rollout")
    wait_text(browser, "#message", "đang trong một đợt triển khai khác")
    click(browser, f"{row} button.abort")
    wait_text(browser, f"{row} .state", "Đã hủy")
    Select(browser.find_element(By.ID, "release")).select_by_value("software:3.0")
    Select(browser.find_element(By.ID, "sites")).select_by_value("tv-tinh")
    click(browser, "#start-rollout")
    wait_text(browser, "#rollouts tr.rollout.running", "3.0")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rollouts tr.rollout.running")) == 1
    actions = [a["path"] for a in Audit(site["repo"].engine).list(50) if a["actor"] == "it-admin"]
    assert f"/dashboard/rollouts/{site['running']}/pause" in actions
    assert "/dashboard/rollouts" in actions


def test_crafted_dashboard_requests_are_refused(site: dict[str, Any]) -> None:
    url = site["url"]
    with httpx.Client(base_url=url, follow_redirects=False) as http:
        assert http.get("/").headers["location"] == "/dashboard"
        assert http.get("/dashboard").status_code == 303  # to the sign-in page
        assert http.get("/dashboard/stream").status_code == 401
        r = http.post("/dashboard/login", data={"token": site["viewer"]})
        assert r.status_code == 303
        cookie = r.cookies["be_session"]
        assert "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        page = http.get("/dashboard", headers={"Cookie": f"be_session={cookie}"})
        assert "default-src 'self'" in page.headers["content-security-policy"]
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        # a viewer with a valid form token still cannot act
        r = http.post(
            f"/dashboard/rollouts/{site['running']}/pause",
            data={"csrf": csrf},
            headers={"Cookie": f"be_session={cookie}"},
        )
        assert r.status_code == 403
        # a forged cookie, or a form from another page (no csrf), is refused
        assert (
            http.get(
                "/dashboard", headers={"Cookie": f"be_session={cookie[:-4] + '0000'}"}
            ).status_code
            == 303
        )
        admin = http.post("/dashboard/login", data={"token": site["admin"]}).cookies["be_session"]
        r = http.post(
            f"/dashboard/rollouts/{site['running']}/pause",
            data={},
            headers={"Cookie": f"be_session={admin}"},
        )
        assert r.status_code == 403
        # a revoked token ends its sessions
        site["tokens"].revoke("watcher")
        assert http.get("/dashboard", headers={"Cookie": f"be_session={cookie}"}).status_code == 303
        # hostile forms: too large, not UTF-8
        assert http.post("/dashboard/login", content=b"token=" + b"x" * 10_000).status_code == 413
        assert http.post("/dashboard/login", content=b"token=\xff\xfe").status_code in (400, 401)
        assert http.get("/dashboard/static/../central.sqlite3").status_code == 404

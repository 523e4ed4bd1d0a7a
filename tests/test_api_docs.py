"""``/docs`` and ``/redoc`` work on a network without internet: Swagger UI and ReDoc come from
central itself (a package from the registries), rendered in Debian's Chromium."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from test_dashboard import CHROMIUM, DRIVER, browser  # noqa: F401 - the shared Chromium fixture

from biblioedge.fleet.api import create_app
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.repo import Repo
from biblioedge.procs import free_port


@pytest.fixture
def central_url(tmp_path: Path) -> Iterator[str]:
    cfg = CentralConfig(data_dir=tmp_path)
    repo = Repo(cfg.db_url)
    repo.migrate()
    app = create_app(cfg, repo, None, CentralMetrics())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
        repo.close()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_elsewhere(central_url: str, page: str) -> None:
    html = httpx.get(central_url + page).text
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert urls, html
    assert all(u.startswith("/") for u in urls), urls  # no CDN, no fonts from elsewhere
    for url in urls:
        r = httpx.get(central_url + url)
        assert r.status_code == 200, url
        assert len(r.content) > 1000, url


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium is not installed")
def test_swagger_ui_renders_the_operations_offline(central_url: str, browser: Any) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(central_url + "/docs")
    WebDriverWait(browser, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    )
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/api/v1/health" in {p.replace("\u200b", "") for p in paths}

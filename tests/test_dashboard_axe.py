"""axe-core over every dashboard page in Debian's Chromium, signed in, in Vietnamese and in
English: no serious or critical violation. axe-core comes from npm (pinned in
tests/axe/package.json; ``scripts/setup.sh --test`` installs it); it is injected through
WebDriver, which the page's CSP does not govern, and runs on the page as a person sees it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_dashboard import CHROMIUM, DRIVER, browser, wait_text
from test_itdash import central, login

__all__ = ["browser", "central"]  # the shared fixtures

AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
PAGES = (
    "/dashboard",
    "/dashboard/kiosks/gate-1",
    "/dashboard/kiosks/desk-9",
    "/dashboard/branches",
    "/dashboard/audit",
    "/dashboard/reports",
    "/dashboard/readers",  # the librarian's view
    "/dashboard/cases",
)
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed"
)


def axe_source() -> str:
    if not AXE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{AXE} is missing: scripts/setup.sh --test installs axe-core from npm")
        pytest.skip("axe-core is not installed (scripts/setup.sh --test installs it from npm)")
    return AXE.read_text()


def violations(browser: Any, source: str) -> list[dict[str, Any]]:
    """The serious and critical violations axe finds on the page as it is now."""
    browser.execute_script(source)
    browser.set_script_timeout(60)
    found = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(JSON.stringify(r.violations)))"
        ".catch(e => done(JSON.stringify([{id: 'axe-error', impact: 'critical',"
        " help: String(e), nodes: []}])));"
    )
    return [v for v in json.loads(found) if v.get("impact") in ("serious", "critical")]


def describe(found: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n.get("target")) for n in v.get("nodes", [])[:3])
        for v in found
    )


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_every_dashboard_page_has_no_serious_accessibility_violation(
    central: dict[str, Any], browser: Any, lang: str
) -> None:
    source = axe_source()
    browser.get(central["url"] + f"/dashboard/login?lang={lang}")
    assert not (found := violations(browser, source)), f"login: {describe(found)}"
    # the harness itself: a page with a low-contrast text is caught (axe ran, and counts)
    browser.execute_script(
        "const p = document.createElement('p'); p.textContent = 'hello world';"
        "p.style.color = '#eeeeee'; p.style.background = '#ffffff';"
        "document.querySelector('main').appendChild(p);"
    )
    assert "color-contrast" in [v["id"] for v in violations(browser, source)]
    login(browser, central["url"], central["admin"])
    failures = []
    for path in PAGES:
        browser.get(central["url"] + path)
        wait_text(browser, "h1", "Quản lý thiết bị thư viện" if lang == "vi" else "Library fleet")
        assert browser.find_element("tag name", "html").get_attribute("lang") == lang
        found = violations(browser, source)
        if found:
            failures.append(f"{path}: {describe(found)}")
    assert not failures, "\n".join(failures)

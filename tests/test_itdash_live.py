"""The kiosk page's actions on real processes: central with its broker (mutual TLS) and a
gate agent enrolled through the real path. The dashboard's resync reaches the kiosk as a
signed command, the models column shows what the gate runs, and revoke cuts it off."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest

from biblioedge.demo.launch import CentralProcess, wait_until


def _csrf(page: str) -> str:
    return page.split('name="csrf" value="')[1].split('"', maxsplit=1)[0]


@pytest.mark.integration
def test_resync_and_revoke_from_the_kiosk_page(make_agent: Any, central: CentralProcess) -> None:
    gate = make_agent("gate-01")
    gate.start()
    with central.client() as api:
        wait_until(lambda: api.get("/devices/gate-01").json()["online"], 60, 0.2, what="online")
    tls = ssl.create_default_context(cafile=central.ca_file)
    with httpx.Client(base_url=central.url, verify=tls, timeout=30) as web:
        assert web.post("/dashboard/login", data={"token": central.token}).status_code == 303
        # the gate runs the built-in face models when its store has none: the page says so
        wait_until(
            lambda: "dlib-hog@1" in web.get("/dashboard/kiosks/gate-01").text,
            60,
            interval=0.5,
            what="the gate's models on its page",
        )
        page = web.get("/dashboard/kiosks/gate-01").text
        assert "Trực tuyến" in page
        r = web.post("/dashboard/kiosks/gate-01/resync", data={"csrf": _csrf(page)})
        assert r.status_code == 303 and r.headers["location"].endswith("done=resync_sent")
        wait_until(
            lambda: "command resync" in gate.log_tail(200), 30, 0.2, what="the kiosk's resync"
        )
        # revoke: refused without the box ticked, done with it, and the page says revoked
        r = web.post("/dashboard/kiosks/gate-01/revoke", data={"csrf": _csrf(page)})
        assert r.headers["location"].endswith("refused=not_confirmed")
        r = web.post(
            "/dashboard/kiosks/gate-01/revoke", data={"csrf": _csrf(page), "confirm": "yes"}
        )
        assert r.headers["location"].endswith("done=revoked")
        page = web.get("/dashboard/kiosks/gate-01").text
        assert "Đã thu hồi" in page and 'id="revoke"' not in page
        # a second revoke finds no certificate left
        r = web.post(
            "/dashboard/kiosks/gate-01/revoke", data={"csrf": _csrf(page), "confirm": "yes"}
        )
        assert r.headers["location"].endswith("refused=no_certificate")
    with central.client() as api:
        assert api.get("/devices/gate-01").json()["revoked"] is True
        paths = [a["path"] for a in api.get("/audit").json()]
    assert "/dashboard/kiosks/gate-01/resync" in paths
    assert "/dashboard/kiosks/gate-01/revoke" in paths

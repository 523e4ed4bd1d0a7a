"""The librarian's view (issue 26 deliver 4), as librarians use it: central's real app on a
loopback port, readers registered the way desks register them, kiosks' staff cases arriving
as events, the pages read over HTTP and in Debian's Chromium (Vietnamese first, English on a
tap). Nothing inside central is replaced."""

from __future__ import annotations

import base64
import contextlib
import html
import os
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import uvicorn
from test_reports_ui import _shoot, _wait, browser, needs_chromium  # noqa: F401 - a fixture

from biblioedge.citizen import citizen_ref
from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Audit, Tokens
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.librarian import id_number_of
from biblioedge.fleet.librarian_text import catalogue, keys
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.registrations import REGISTRATION, Registrar
from biblioedge.fleet.repo import Incoming, Repo
from biblioedge.keys import load_or_create_key
from biblioedge.procs import free_port
from biblioedge.protocol import uuid7

SITE, DESK, SELFCHECK = "tv-tinh", "desk-1", "self-1"
ID_NUMBER = "001090012345"
CCCD_QR = f"{ID_NUMBER}|123456789|Nguyễn Thị Hoa|17051990|Nữ|Thôn 3, Hà Giang|01012021"
PEPPER = b"p" * 32


class Library:
    """Central's database and app, with one reader registered at a desk (face consent given)
    and the staff cases a self-check sent."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "central").mkdir()
        pepper = tmp / "citizen.pepper"
        pepper.write_bytes(PEPPER)
        self.cfg = CentralConfig(data_dir=tmp / "central", pepper_file=pepper)
        self.repo = Repo(self.cfg.db_url)
        key = load_or_create_key(tmp / "t.key")
        self.repo.migrate(key)
        self.repo.register_device(DESK, SITE, "desk")
        self.repo.register_device(SELFCHECK, SITE, "selfcheck")
        self.readers = Readers(self.repo, key)
        self.cards = Cards(self.readers, load_or_create_key(tmp / "c.key"))
        self.repo.effects[REGISTRATION] = Registrar(self.readers, self.cards)
        tokens = Tokens(self.repo.engine)
        _, self.librarian = tokens.create("thu-thu-lan", "librarian")
        _, self.viewer = tokens.create("watcher", "viewer")
        self.seq = 0
        self.patron = self.register()
        app = create_app(
            self.cfg, self.repo, None, CentralMetrics(), readers=self.readers, cards=self.cards
        )
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:  # noqa: ASYNC110 - a thread, not a coroutine
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def send(self, device: str, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        event = {
            "event_id": uuid7(),
            "device_id": device,
            "site": SITE,
            "type": type_,
            "seq": self.seq,
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": payload,
        }
        body = {"batch_id": str(uuid.uuid4()), "device_id": device, "events": [event]}
        (ack,) = self.repo.ingest([Incoming(SITE, device, "events", orjson.dumps(body))], True).acks
        return {"event_id": event["event_id"], **dict(ack.results.get(event["event_id"], {}))}

    def register(self) -> str:
        vec = np.random.default_rng(1).normal(size=128).astype("<f4")
        answer = self.send(
            DESK,
            REGISTRATION,
            {
                "registration_id": uuid7(),
                "citizen_ref": citizen_ref(PEPPER, ID_NUMBER),
                "display_name": "Nguyễn Thị Hoa",
                "profile": {"date_of_birth": "17/05/1990", "gender": "Nữ"},
                "consent": {
                    "purpose": "face_gate",
                    "granted": True,
                    "text_version": "vi-2026-1",
                    "librarian": "lan",
                },
                "face": {"model": "sim@1", "templates": [base64.b64encode(vec).decode()]},
                "check": {"method": "chip_face", "passive_auth": "ok", "face_score": 0.97},
            },
        )
        return str(answer["patron_id"])

    def staff_case(self, reason: str, item: str, action: str, patron: str = "") -> str:
        payload = {"reason": reason, "item_id": item, "action": action}
        if patron:
            payload["patron_id"] = patron
        return str(self.send(SELFCHECK, "circ.attention", payload)["event_id"])

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self.repo.close()


@pytest.fixture
def library(tmp_path: Path) -> Iterator[Library]:
    lib = Library(tmp_path)
    yield lib
    lib.close()


@contextlib.contextmanager
def _signed_in(lib: Library, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lib.url, follow_redirects=False) as http:
        r = http.post("/dashboard/login", data={"token": token})
        assert r.status_code == 303
        http.cookies.set("be_session", r.cookies["be_session"])
        yield http


def _csrf(page: str) -> str:
    start = page.index('name="csrf" value="') + len('name="csrf" value="')
    return page[start : page.index('"', start)]


def test_words_are_there_in_both_languages_and_nfc() -> None:
    vi, en = catalogue("vi"), catalogue("en")
    assert set(vi) == set(en) == keys()
    assert all(unicodedata.is_normalized("NFC", v) for v in [*vi.values(), *en.values()])


def test_only_the_id_number_is_read_from_a_scanned_cccd() -> None:
    assert id_number_of(CCCD_QR) == ID_NUMBER
    assert id_number_of(f"\ufeff {ID_NUMBER} ") == ID_NUMBER
    assert id_number_of("BE0000001") is None
    assert id_number_of("12345|Nguyễn") is None


def test_a_reader_is_found_by_card_or_cccd_and_never_listed(library: Library) -> None:
    pid = library.patron
    with _signed_in(library, library.librarian) as http:
        page = http.get("/dashboard/readers")
        assert page.status_code == 200 and "Tìm bạn đọc" in page.text
        assert "Nguyễn" not in page.text  # no list of readers, no names
        csrf = _csrf(page.text)
        for key in (pid, CCCD_QR, f"  {ID_NUMBER}  "):
            r = http.post("/dashboard/readers/find", data={"csrf": csrf, "key": key})
            assert r.status_code == 303 and r.headers["location"] == f"/dashboard/readers/{pid}"
        refused = {
            "BE9999999": "Không tìm thấy bạn đọc nào.",
            "999999999999": "Không tìm thấy bạn đọc nào.",
            "<script>alert(1)</script>": "Đây không phải số thẻ hay mã QR của CCCD.",
            "x" * 5000: "",  # too large a form: refused before it is read
        }
        for key, reason in refused.items():
            r = http.post("/dashboard/readers/find", data={"csrf": csrf, "key": key})
            assert r.status_code in (404, 413), key[:20]
            assert reason in html.unescape(r.text)
            assert "<script>alert" not in r.text
        # a form from elsewhere (no session token) changes nothing and finds no one
        assert http.post("/dashboard/readers/find", data={"key": pid}).status_code == 403
        reader = http.get(f"/dashboard/readers/{pid}")
        assert "Nguyễn Thị Hoa" in reader.text and 'id="card-number">' + pid in reader.text
        assert ID_NUMBER not in reader.text  # the ID number is never shown, nor kept
        assert http.get("/dashboard/readers/..%2F..%2Fapi").status_code == 404
        assert http.get("/dashboard/readers/BE9999999").status_code == 404
    with _signed_in(library, library.viewer) as http:
        page = http.get("/dashboard/readers")
        assert page.status_code == 403 and "thủ thư" in page.text
        assert http.get(f"/dashboard/readers/{pid}").status_code == 403
        assert 'id="nav-readers"' not in http.get("/dashboard").text
        csrf = _csrf(http.get("/dashboard").text)
        r = http.post("/dashboard/readers/find", data={"csrf": csrf, "key": pid})
        assert r.status_code == 403
    with httpx.Client(base_url=library.url, follow_redirects=False) as anonymous:
        assert anonymous.get(f"/dashboard/readers/{pid}").status_code == 303
        assert anonymous.post("/dashboard/readers/find", data={"key": pid}).status_code == 401


def test_consent_withdrawn_reprint_and_replacement(library: Library) -> None:
    pid = library.patron
    assert library.readers.get(pid)["templates"] == {"sim@1": 1}
    version = library.readers.site_version(SITE)
    with _signed_in(library, library.librarian) as http:
        page = http.get(f"/dashboard/readers/{pid}").text
        csrf = _csrf(page)
        r = http.post(
            f"/dashboard/readers/{pid}/withdraw", data={"csrf": csrf, "purpose": "face_gate"}
        )
        assert r.status_code == 303 and r.headers["location"].endswith("?done=withdrawn")
        after = http.get(r.headers["location"]).text
        assert "Đã rút lại đồng ý" in after and "Đã rút lại</td>" in after
        # her templates are gone at central, and every kiosk hears of it at its next sync
        assert library.readers.get(pid)["templates"] == {}
        delta = library.readers.delta(SITE, version)
        assert delta is not None and [u.templates for u in delta.upserts] == [[]]
        bad = http.post(f"/dashboard/readers/{pid}/withdraw", data={"csrf": csrf, "purpose": "x"})
        assert bad.status_code == 422
        # a crafted message shows nothing
        assert "evil" not in http.get(f"/dashboard/readers/{pid}?done=evil").text
        # reprint: a new card with the same number; the old one still opens
        card = http.post(f"/dashboard/readers/{pid}/reprint", data={"csrf": csrf})
        assert card.status_code == 200 and f'id="card-number">{pid}' in card.text
        assert "<svg" in card.text and "<script" not in card.text
        live = library.readers.get(pid)
        assert live["status"] == "active"
        # its language link goes back to her page, and prints nothing
        back = http.get(f"/dashboard/readers/{pid}/reprint?lang=en")
        assert back.status_code == 303 and back.headers["location"].endswith(f"{pid}?lang=en")
        # replacement: every earlier card revoked
        new = http.post(f"/dashboard/readers/{pid}/replace", data={"csrf": csrf})
        assert new.status_code == 200 and "Đã thu hồi 2 thẻ cũ." in new.text
        assert 'id="live-cards">1<' in http.get(f"/dashboard/readers/{pid}").text
    trail = Audit(library.repo.engine).list(50)
    paths = [r["path"] for r in trail if r["actor"] == "thu-thu-lan"]
    assert f"/dashboard/readers/{pid}/withdraw" in paths
    assert f"/dashboard/readers/{pid}/replace" in paths


def test_staff_cases_are_handled_once_and_say_by_whom(library: Library) -> None:
    refused = library.staff_case(
        "offline_refused",
        "30000007",
        "Liên hệ bạn đọc: hệ thống thư viện từ chối một lượt mượn / Contact the reader: the "
        "library system refused a loan made offline",
        patron=library.patron,
    )
    library.staff_case(
        "return_not_secured",
        "30000002",
        "Bật lại an ninh cho tài liệu đã trả / Secure the returned item again",
    )
    with _signed_in(library, library.librarian) as http:
        page = http.get("/dashboard/cases").text
        assert "Hệ thống thư viện từ chối một lượt mượn lúc mất kết nối" in page
        assert "Tài liệu đã trả nhưng chưa bật lại an ninh" in page
        assert "Bật lại an ninh cho tài liệu đã trả" in page and "Secure the" not in page
        assert page.count('class="mark-handled"') == 2
        csrf = _csrf(page)
        r = http.post(f"/dashboard/cases/{refused}/handled", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"].endswith("?done=handled")
        page = http.get(r.headers["location"]).text
        assert "thu-thu-lan lúc" in page and page.count('class="mark-handled"') == 1
        again = http.post(f"/dashboard/cases/{refused}/handled", data={"csrf": csrf})
        assert again.headers["location"].endswith("?done=already")
        assert http.post("/dashboard/cases/nope/handled", data={"csrf": csrf}).status_code == 404
        english = http.get("/dashboard/cases?lang=en").text
        assert "A loan made offline was refused by the library system" in english
        assert "Secure the returned item again" in english


@needs_chromium
def test_the_librarian_finds_a_reader_and_handles_a_case_in_chromium(
    library: Library,
    browser: Any,  # noqa: F811 - the fixture imported above
) -> None:
    from selenium.webdriver.common.by import By

    case = library.staff_case(
        "return_not_secured", "30000002", "Bật lại an ninh / Secure the returned item again"
    )
    browser.get(f"{library.url}/dashboard/login")
    browser.find_element(By.NAME, "token").send_keys(library.librarian)
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    _wait(browser, "#nav-readers", "Bạn đọc")
    browser.find_element(By.ID, "nav-readers").click()
    _wait(browser, "#find-reader h2", "Tìm bạn đọc")
    # a barcode scanner types the CCCD's QR into the field, then Enter
    browser.find_element(By.ID, "key").send_keys(CCCD_QR + "\n")
    _wait(browser, "#reader h2", "Nguyễn Thị Hoa")
    assert _wait(browser, "#card-number") == library.patron
    _wait(browser, ".consent-state", "Đồng ý")
    _shoot(browser, "librarian-reader-vi.png")
    browser.find_element(By.CSS_SELECTOR, "button.withdraw").click()
    _wait(browser, "#done", "Đã rút lại đồng ý")
    _wait(browser, ".consent-state", "Đã rút lại")
    browser.find_element(By.ID, "lang").click()  # English on a tap
    _wait(browser, ".consent-state", "Withdrawn")
    _wait(browser, "#nav-cases", "Staff cases")
    browser.find_element(By.ID, "nav-cases").click()
    _wait(browser, f"#case-{case}", "A returned item's security is not back on")
    browser.find_element(By.CSS_SELECTOR, f"#case-{case} button.mark-handled").click()
    _wait(browser, "#done", "Marked handled.")
    assert "thu-thu-lan at" in _wait(browser, f"#case-{case} .handled")
    _shoot(browser, "librarian-cases-en.png")
    os.environ.pop("SE_OFFLINE", None)

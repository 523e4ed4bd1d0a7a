"""Readers in the library system (issue 22): central pushes each reader to the library
system's patron API through a durable queue, exactly once, and hears back when the library
system blocks, expires or deletes one.

The library system here is the dummy (drivers/sip2/dummy.py + koha_api.py), served over real
loopback TCP: its patron API has the shape of Koha's REST API as Koha publishes it in
api/v1/swagger/definitions/patron.yaml and patron_extended_attribute.yaml (required surname,
library_id and category_id; additionalProperties false; string-or-null fields, dates as
YYYY-MM-DD, booleans; 409 on a taken cardnumber; extended attributes as {type, value}); its
SIP2 side is what a self-check asks.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi.testclient import TestClient

from biblioedge.demo.launch import free_port, wait_port
from biblioedge.drivers.sip2.client import Account
from biblioedge.drivers.sip2.dummy import Library, build
from biblioedge.drivers.sip2.koha_api import build_app
from biblioedge.drivers.sip2.library import Sip2Library
from biblioedge.fleet.api import create_app
from biblioedge.fleet.auth import Tokens
from biblioedge.fleet.authz import SECURITY_ATTENTION
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.config import CentralConfig, load_central_config
from biblioedge.fleet.dashboard import snapshot
from biblioedge.fleet.ils import enqueue
from biblioedge.fleet.ils.mapping import map_reader, split_name
from biblioedge.fleet.ils.queue import Queue, backoff_s
from biblioedge.fleet.ils.settings import IlsConfig
from biblioedge.fleet.ils.worker import IlsWorker, open_connector
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.registrations import REGISTRATION, Registrar
from biblioedge.fleet.repo import Incoming, Repo
from biblioedge.keys import load_or_create_key
from biblioedge.protocol import uuid7
from biblioedge.settings import ConfigError

SITE, OTHER, DESK = "tv-tinh", "tv-thieu-nhi", "desk-1"


class Ils:
    """The dummy library system in this process (the test sets its faults and reads its
    patrons), SIP2 and the Koha-shaped API on free loopback ports."""

    def __init__(self) -> None:
        self.lib = Library(open=False)
        self.book = self.lib.book
        self.sip_port, self.port = free_port(), free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                build_app(self.book),
                host="127.0.0.1",
                port=self.port,
                log_level="error",
                timeout_graceful_shutdown=1,
            )
        )
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        async with build(self.lib).start("127.0.0.1", self.sip_port):
            await self.server.serve()

    def start(self) -> None:
        self.thread.start()
        wait_port("127.0.0.1", self.port, 20)
        wait_port("127.0.0.1", self.sip_port, 20)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def url(self, user: str = "koha", password: str = "koha") -> str:
        return f"koha+http://{user}:{password}@127.0.0.1:{self.port}/"

    def patrons(self) -> list[dict[str, Any]]:
        return list(self.book.patrons.values())

    def sip_patron(self, card: str) -> Any:
        lib = Sip2Library(
            Account.from_url(f"sip2://kiosk:kiosk@127.0.0.1:{self.sip_port}?institution=TVTN")
        )
        try:
            return lib.patron(card)
        finally:
            lib.close()


@pytest.fixture
def ils() -> Iterator[Ils]:
    d = Ils()
    d.start()
    yield d
    d.stop()


class Central:
    """Central's database, registrar and ILS worker, as ``biblioedge central`` wires them."""

    def __init__(self, tmp: Path, url: str, db: str = "", **ils: Any) -> None:
        self.repo = Repo(db or f"sqlite:///{tmp / 'c.sqlite3'}")
        key = load_or_create_key(tmp / "t.key")
        self.repo.migrate(key)
        self.repo.register_device(DESK, SITE, "desk")
        self.readers = Readers(self.repo, key)
        self.cards = Cards(self.readers, load_or_create_key(tmp / "c.key"))
        settings = {"url": url, "timeout_s": 2.0, "backoff_s": 0.01, "backoff_max_s": 0.02}
        self.cfg = IlsConfig.model_validate({**settings, **ils})
        self.repo.effects[REGISTRATION] = Registrar(
            self.readers, self.cards, card_numbers=self.cfg.card_numbers
        )
        self.queue = Queue(self.repo.engine, 0.01, 0.02)
        self.worker = IlsWorker(
            self.cfg, self.repo, self.readers, open_connector(self.cfg), self.queue
        )
        self.seq = 0

    def register(self, name: str = "Nguyễn Văn An", ref: str = "a" * 64, **profile: str) -> str:
        return self.register_answer(name, ref, **profile)[0]

    def register_answer(
        self, name: str = "Nguyễn Văn An", ref: str = "a" * 64, **profile: str
    ) -> tuple[str, dict[str, Any]]:
        """(patron id, central's answer to the desk)."""
        self.seq += 1
        payload = {
            "registration_id": uuid7(),
            "citizen_ref": ref,
            "display_name": name,
            "profile": profile or {"date_of_birth": "1990-05-17", "gender": "Nam"},
            "consent": {
                "purpose": "face_gate",
                "granted": False,
                "text_version": "vi-2026-1",
                "librarian": "lan",
            },
            "check": {"method": "chip_face", "passive_auth": "ok", "face_score": 0.97},
            "card_valid_days": 365,
        }
        event = {
            "event_id": uuid7(),
            "device_id": DESK,
            "site": SITE,
            "type": REGISTRATION,
            "seq": self.seq,
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": payload,
        }
        body = {"batch_id": str(uuid.uuid4()), "device_id": DESK, "events": [event]}
        result = self.repo.ingest([Incoming(SITE, DESK, "events", orjson.dumps(body))], True)
        (ack,) = result.acks
        answer = dict(ack.results[event["event_id"]])
        return str(answer["patron_id"]), answer

    def drain(self, rounds: int = 20) -> None:
        """Send until nothing is due (backoffs here are milliseconds), releasing waits."""
        for _ in range(rounds):
            self.queue.release()
            if not self.worker.step(500) and not self.worker.pause_s:
                return

    def close(self) -> None:
        self.worker.connector.close()
        self.repo.close()


@pytest.fixture
def central(tmp_path: Path, ils: Ils) -> Iterator[Central]:
    c = Central(tmp_path, ils.url())
    yield c
    c.close()


# -- mapping -------------------------------------------------------------------------------


def test_names_split_family_name_first_and_come_out_clean() -> None:
    assert split_name("Nguyễn Văn An") == ("Nguyễn", "Văn An")
    assert split_name("  Lê   Thị\u200b Hồng Nhung ") == ("Lê", "Thị Hồng Nhung")
    nfd = "Nguye\u0302\u0303n Thi\u0323 Bi\u0300nh"
    assert split_name(nfd) == ("Nguyễn", "Thị Bình")  # NFC whatever the card sent
    assert split_name("Trần 🌸 Mai") == ("Trần", "🌸 Mai")
    surname, first = split_name("Phạm " + "Minh " * 60)
    assert surname == "Phạm" and len(first) <= 100
    assert split_name("Madonna") == ("Madonna", "")


def test_mapping_by_age_branch_and_minimum_data() -> None:
    cfg = IlsConfig.model_validate(
        {"url": "koha+https://api:pw@koha.example/", "libraries": {SITE: "TVT"}}
    )
    today = date(2026, 12, 6)
    adult = map_reader(
        cfg,
        cardnumber="BE0000001",
        site=SITE,
        full_name="Nguyễn Văn An",
        citizen_ref="a" * 64,
        expires_at="2027-12-06",
        profile={"date_of_birth": "17/05/1990", "gender": "Nam", "address": "Tây Ninh"},
        today=today,
    )
    assert (adult.library_id, adult.category_id, adult.gender) == ("TVT", "PT", "M")
    assert adult.date_of_birth == "1990-05-17" and adult.address is None  # address off
    child = map_reader(
        cfg.model_copy(update={"address": True}),
        cardnumber=None,
        site=OTHER,
        full_name="Trần Thị Bé",
        citizen_ref="b" * 64,
        expires_at="",
        profile={"date_of_birth": "2012-01-01", "gender": "Nữ", "address": "Tây Ninh"},
        today=today,
    )
    assert (child.library_id, child.category_id, child.gender) == (OTHER, "J", "F")
    assert child.address == "Tây Ninh"


# -- config ----------------------------------------------------------------------------------


def test_ils_config_is_checked_at_load(tmp_path: Path) -> None:
    secret = tmp_path / "koha.password"
    secret.write_text("s3cret\n")
    cfg = load_central_config(
        None,
        environ={},
        overrides={
            "data_dir": str(tmp_path),
            "ils": {"url": "koha+https://biblioedge@koha.example/", "password_file": str(secret)},
        },
    )
    assert cfg.ils is not None
    ep = cfg.ils.endpoint()
    assert (ep.base_url, ep.user, ep.secret) == ("https://koha.example", "biblioedge", "s3cret")
    assert "s3cret" not in repr(ep)
    bad = [
        {"url": "https://biblioedge@koha.example/", "password_file": str(secret)},
        {"url": "koha+https://koha.example/", "password_file": str(secret)},
        {"url": "koha+https://biblioedge@koha.example/", "password_file": str(tmp_path / "no")},
        {"url": "koha+https://biblioedge@koha.example/"},  # no password anywhere
        {"url": "koha+https://u@h/", "password_file": str(secret), "card_numbers": "kiosk"},
    ]
    (tmp_path / "empty").write_text("")
    bad.append({"url": "koha+https://u@h/", "password_file": str(tmp_path / "empty")})
    for section in bad:
        with pytest.raises(ConfigError):
            load_central_config(
                None, environ={}, overrides={"data_dir": str(tmp_path), "ils": section}
            )


# -- the push ----------------------------------------------------------------------------------


def test_a_desk_registration_reaches_the_library_system_and_its_sip2(
    central: Central, ils: Ils
) -> None:
    pid = central.register("Nguye\u0302\u0303n Văn An", date_of_birth="1990-05-17", gender="Nam")
    assert ils.patrons() == []  # the desk never waits for the library system
    central.drain()
    (patron,) = ils.patrons()
    assert patron["cardnumber"] == pid  # the number on the card is the one in Koha
    assert (patron["surname"], patron["firstname"]) == ("Nguyễn", "Văn An")
    assert (patron["category_id"], patron["library_id"], patron["gender"]) == ("PT", SITE, "M")
    assert patron["date_of_birth"] == "1990-05-17"
    assert patron["extended_attributes"] == [{"type": "CCCD_REF", "value": "a" * 64}]
    seen = ils.sip_patron(pid)  # the self-check's question, over SIP2
    assert seen.valid and seen.name == "Nguyễn Văn An" and not seen.blocks
    summary = central.queue.summary()
    assert summary["pending"] == summary["held"] == 0 and summary["linked"] == 1


def test_a_returning_reader_updates_her_patron(central: Central, ils: Ils) -> None:
    pid = central.register("Nguyễn Văn An")
    central.drain()
    again = central.register("Nguyễn Văn Ân")  # re-registers: same ID number, new card
    central.drain()
    assert again == pid
    (patron,) = ils.patrons()
    assert patron["firstname"] == "Văn Ân"


@pytest.mark.parametrize("fault", ["POST:stored_500", "POST:stored_timeout", "500", "html500"])
def test_a_lost_reply_never_makes_a_second_patron(central: Central, ils: Ils, fault: str) -> None:
    """The library system stored the patron (or not) and the answer was lost: the retry
    finds it by card number and updates it."""
    ils.book.slow_s = 3.0  # longer than the connector's 2 s timeout
    pid = central.register()
    ils.book.faults = [fault]
    central.worker.step()
    waiting = central.queue.summary()
    assert waiting["pending"] == 1 and waiting["waiting"][0]["reason"] in (
        "server_error",
        "timeout",
    )
    central.drain()
    assert [p["cardnumber"] for p in ils.patrons()] == [pid]


def test_a_killed_connector_resumes_from_the_queue(tmp_path: Path, ils: Ils) -> None:
    """Queued while the library system is down; central restarts; then it is up."""
    down = f"koha+http://koha:koha@127.0.0.1:{free_port()}/"  # nobody listens there
    first = Central(tmp_path, down)
    pids = [first.register(f"Nguyễn Văn {i}", ref=f"{i:064x}") for i in range(1, 6)]
    with first.repo.engine.begin() as conn:
        enqueue(conn, pids[0], "block")  # after her create, in order
    first.worker.step()
    assert first.worker.pause_s > 0 and first.queue.summary()["pending"] == 6
    first.close()
    again = Central(tmp_path, ils.url())  # central restarted: the queue is on disk
    again.drain()
    patrons = ils.patrons()
    assert sorted(p["cardnumber"] for p in patrons) == sorted(pids)
    assert [p["patron_card_lost"] for p in patrons if p["cardnumber"] == pids[0]] == [True]
    assert not ils.sip_patron(pids[0]).valid or ils.sip_patron(pids[0]).blocks
    again.close()


def test_a_card_number_taken_by_someone_else_waits_for_a_person(central: Central, ils: Ils) -> None:
    ils.book.patrons[99] = {
        "patron_id": 99,
        "cardnumber": "BE0000001",
        "surname": "Lê",
        "firstname": "Khác",
        "library_id": SITE,
        "category_id": "PT",
        "extended_attributes": [{"type": "CCCD_REF", "value": "f" * 64}],
    }
    pid = central.register()
    central.drain()
    summary = central.queue.summary()
    assert pid == "BE0000001" and summary["held"] == 1
    (held,) = summary["waiting"]
    assert held["state"] == "held" and held["reason"] == "card_taken"
    events, _ = central.repo.list_events(type_=SECURITY_ATTENTION)
    assert [e["payload"]["reason"] for e in events] == ["ils_card_taken"]
    assert len(ils.patrons()) == 1  # nothing written over the other person
    shown = snapshot(central.repo, None)["attention"]  # the dashboard's list
    assert ("att_ils_held", pid) in [(kind, subject) for kind, subject, _ in shown]
    del ils.book.patrons[99]  # the librarian sorted it out in Koha
    central.queue.resync(pid)
    central.drain()
    assert [p["cardnumber"] for p in ils.patrons()] == [pid]
    assert central.queue.summary()["held"] == 0


@pytest.mark.parametrize(
    ("fault", "reason", "state"),
    [
        ("400", "refused", "held"),
        ("401", "auth_refused", "pending"),
        ("POST:409", "card_taken", "held"),
        ("500", "server_error", "pending"),
        ("html", "not_json", "pending"),
        ("shape", "wrong_shape", "pending"),
        ("redirect", "redirected", "pending"),
    ],
)
def test_bad_answers_get_a_reason_and_lose_nothing(
    central: Central, ils: Ils, fault: str, reason: str, state: str
) -> None:
    pid = central.register()
    ils.book.faults = [fault] * 3  # whatever call it hits first
    central.worker.step()
    (item,) = central.queue.summary()["waiting"]
    assert (item["reason"], item["state"]) == (reason, state)
    assert item["detail"]
    ils.book.faults = []
    central.queue.resync(pid)
    central.drain()
    assert [p["cardnumber"] for p in ils.patrons()] == [pid]


def test_names_the_library_system_would_choke_on_arrive_clean(central: Central, ils: Ils) -> None:
    central.register("Nguye\u0302\u0303n 🌸 Thị " + "Hồng " * 36, ref="c" * 64)  # 200 max
    central.drain()
    (patron,) = ils.patrons()
    assert patron["surname"] == "Nguyễn"
    assert patron["firstname"].startswith("🌸 Thị Hồng") and len(patron["firstname"]) <= 100


def test_oauth2_client_credentials(tmp_path: Path, ils: Ils) -> None:
    c = Central(tmp_path, ils.url(), auth="oauth2")
    try:
        pid = c.register()
        c.drain()
        assert [p["cardnumber"] for p in ils.patrons()] == [pid]
    finally:
        c.close()


def test_card_numbers_issued_by_the_library_system(tmp_path: Path, ils: Ils) -> None:
    c = Central(tmp_path, ils.url(), card_numbers="ils")
    try:
        pid = c.register()
        c.drain()
        (patron,) = ils.patrons()
        assert patron["cardnumber"] != pid
        assert c.readers.get(pid)["barcode"] == patron["cardnumber"]  # what kiosks accept
        assert ils.sip_patron(patron["cardnumber"]).valid
    finally:
        c.close()


def test_the_queue_on_postgresql(tmp_path: Path, ils: Ils, postgres_url: str) -> None:
    c = Central(tmp_path, ils.url(), db=postgres_url)
    try:
        first = c.register("Nguyễn Văn An", ref="1" * 64)
        ils.book.faults = ["POST:400"]  # her push is held; the next reader's goes on
        c.worker.step()
        second = c.register("Trần Thị Bình", ref="2" * 64)
        c.worker.step()
        summary = c.queue.summary()
        assert (summary["held"], summary["waiting"][0]["patron_id"]) == (1, first)
        assert [p["cardnumber"] for p in ils.patrons()] == [second]
        c.queue.resync(first)
        c.drain()
        assert sorted(p["cardnumber"] for p in ils.patrons()) == [first, second]
    finally:
        with c.repo.engine.begin() as conn:  # the cluster is shared by the session
            conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        c.close()


# -- status back and the card's end ---------------------------------------------------------


def test_status_back_finds_what_the_library_system_changed_without_asking_everyone(
    central: Central, ils: Ils
) -> None:
    pids = [central.register(f"Nguyễn Văn {i}", ref=f"{i:064x}") for i in range(1, 6)]
    central.drain()
    last = {p["cardnumber"]: p["patron_id"] for p in ils.patrons()}[pids[-1]]
    ils.book.restrict(last)  # a librarian restricts the last reader in Koha
    assert central.worker.poll_status(batch=1) == [SITE]  # the sweep asked about the first
    assert central.readers.get(pids[-1])["status"] == "blocked"
    requests = ils.book.requests
    assert central.worker.poll_status(batch=1) == []
    assert ils.book.requests - requests <= 3  # the changes (one page) and one sweep step
    ils.book.restrict(last, on=False)
    assert central.worker.poll_status(batch=1) == [SITE]
    assert central.readers.get(pids[-1])["status"] == "active"


def test_blocked_expired_or_deleted_in_the_library_system_is_refused_at_kiosks(
    central: Central, ils: Ils
) -> None:
    pids = [central.register(f"Nguyễn Văn {i}", ref=f"{i:064x}") for i in range(1, 5)]
    central.drain()
    by_card = {p["cardnumber"]: p for p in ils.patrons()}
    version = central.readers.site_version(SITE)
    ils.book.restricted.add(by_card[pids[0]]["patron_id"])  # a librarian blocks her in Koha
    by_card[pids[1]]["expiry_date"] = (date.today() - timedelta(days=1)).isoformat()
    del ils.book.patrons[by_card[pids[2]]["patron_id"]]
    assert central.worker.poll_status() == [SITE]
    delta = central.readers.delta(SITE, version)
    assert delta is not None
    status = {r.patron_id: r.status for r in delta.upserts}
    assert status == {pids[0]: "blocked", pids[1]: "expired", pids[2]: "blocked"}
    assert central.readers.get(pids[3])["status"] == "active"
    assert central.worker.poll_status() == []  # nothing new: no gallery churn
    ils.book.restricted.clear()  # lifted in Koha: she may come in again
    assert central.worker.poll_status() == [SITE]
    assert central.readers.get(pids[0])["status"] == "active"
    central.queue.resync()  # central's state again: no block of Koha's becomes central's
    central.drain()
    assert ils.sip_patron(pids[0]).valid and not ils.sip_patron(pids[0]).blocks
    assert len(ils.patrons()) == 3  # the deleted one is not made again behind Koha's back
    (held,) = central.queue.summary()["waiting"]
    assert (held["patron_id"], held["reason"]) == (pids[2], "deleted_in_ils")
    central.queue.resync(pids[2])  # a person says: she is a reader, put her back
    central.drain()
    assert len(ils.patrons()) == 4 and central.queue.summary()["held"] == 0


@pytest.mark.parametrize("anonymise", [False, True])
def test_erasure_reaches_the_library_system(tmp_path: Path, ils: Ils, anonymise: bool) -> None:
    c = Central(tmp_path, ils.url(), anonymise=anonymise)
    try:
        pid = c.register()
        c.drain()
        c.readers.erase(pid)
        with c.repo.engine.begin() as conn:
            enqueue(conn, pid, "erase", {"cardnumber": pid, "citizen_ref": "a" * 64})
        c.drain()
        if anonymise:
            (patron,) = ils.patrons()
            assert patron["surname"] == "Ẩn danh" and patron["cardnumber"] is None
            assert patron["extended_attributes"] == [] and patron["date_of_birth"] is None
        else:
            assert ils.patrons() == []
        assert not ils.sip_patron(pid).valid
    finally:
        c.close()


def test_renew_and_expire_move_the_expiry(central: Central, ils: Ils) -> None:
    pid = central.register()
    with central.repo.engine.begin() as conn:
        enqueue(conn, pid, "expire")
    central.drain()
    (patron,) = ils.patrons()
    assert patron["expiry_date"] == date.today().isoformat()
    with central.repo.engine.begin() as conn:
        enqueue(conn, pid, "renew")
    central.drain()
    assert patron["expiry_date"] == central.readers.get(pid)["expires_at"]


def test_backoff_is_capped_and_jittered() -> None:
    delays = [backoff_s(n, 2.0, 300.0) for n in range(1, 30)]
    assert all(0 < d <= 300.0 for d in delays)
    assert max(delays) > 100 and len({round(d, 6) for d in delays}) > 20


def test_enqueue_refuses_an_unknown_change(central: Central) -> None:
    with pytest.raises(ValueError), central.repo.engine.begin() as conn:
        enqueue(conn, "BE0000001", "explode")  # type: ignore[arg-type]


# -- the command line --------------------------------------------------------------------------


def test_central_ils_check_and_status(tmp_path: Path) -> None:
    sip, rest = free_port(), free_port()
    dummy = subprocess.Popen(
        [sys.executable, "-m", "biblioedge", "sip", "serve", "--port", str(sip)]
        + ["--rest-port", str(rest)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port("127.0.0.1", rest, 30)
        secret = tmp_path / "koha.password"
        secret.write_text("koha\n")
        conf = tmp_path / "central.toml"
        conf.write_text(
            f'data_dir = "{tmp_path / "data"}"\n[ils]\n'
            f'url = "koha+http://koha@127.0.0.1:{rest}/"\npassword_file = "{secret}"\n'
        )
        cli = [sys.executable, "-m", "biblioedge", "central", "ils"]
        out = subprocess.run([*cli, "check", "--config", str(conf), "--json"], **RUN)
        assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True
        out = subprocess.run([*cli, "status", "--config", str(conf), "--json"], **RUN)
        assert out.returncode == 0 and json.loads(out.stdout)["pending"] == 0
        secret.write_text("wrong\n")
        out = subprocess.run([*cli, "check", "--config", str(conf), "--json"], **RUN)
        assert out.returncode == 1 and json.loads(out.stdout)["reason"] == "auth_refused"
    finally:
        dummy.kill()
        dummy.wait(10)


RUN: dict[str, Any] = {"capture_output": True, "text": True, "timeout": 120}


# -- the API -----------------------------------------------------------------------------------


def test_the_api_shows_the_queue_and_takes_the_library_systems_hook(
    tmp_path: Path, central: Central, ils: Ils
) -> None:
    api = TestClient(
        create_app(
            CentralConfig(data_dir=tmp_path),
            central.repo,
            None,
            CentralMetrics(),
            central.readers,
            central.cards,
            ils=central.worker,
        )
    )
    viewer = Tokens(central.repo.engine).create("wall", "viewer")[1]
    api.headers["Authorization"] = f"Bearer {viewer}"
    assert api.get("/api/v1/ils/status").status_code == 403  # patron ids: staff only
    librarian = Tokens(central.repo.engine).create("lan", "librarian")[1]
    api.headers["Authorization"] = f"Bearer {librarian}"
    pid = central.register()
    assert api.get("/api/v1/ils/status").json()["pending"] == 1
    assert api.post(f"/api/v1/ils/patrons/{pid}/changed").status_code == 404  # not linked yet
    central.drain()
    doc = api.get("/api/v1/ils/status").json()
    assert (doc["pending"], doc["linked"]) == (0, 1)
    (patron,) = ils.patrons()
    ils.book.restricted.add(patron["patron_id"])  # blocked in Koha; its plugin calls central
    r = api.post(f"/api/v1/ils/patrons/{pid}/changed")
    assert r.status_code == 200 and r.json()["ils_status"] == "blocked"
    assert central.readers.get(pid)["status"] == "blocked"
    ils.book.faults = ["html"]
    r = api.post(f"/api/v1/ils/patrons/{pid}/changed")
    assert r.status_code == 502 and "not_json" in r.json()["detail"]
    r = api.post("/api/v1/ils/resync", json={"patron_id": pid})
    assert r.status_code == 200 and r.json() == {"queued_updates": 1}
    assert api.post("/api/v1/ils/resync", json={"patron_id": "x\u0000"}).status_code == 422


@pytest.mark.parametrize(
    "args",
    [
        ["central", "ils"],
        ["central", "ils", "check"],
        ["central", "ils", "resync"],
        ["bench", "lifecycle"],
        ["demo"],
        ["sip", "serve"],
    ],
)
def test_the_commands_say_what_they_do(args: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "biblioedge", *args, "--help"], **RUN)
    assert out.returncode == 0, out.stderr
    assert "usage: biblioedge" in out.stdout
    assert any(w in out.stdout for w in ("library system", "--ils-url", "--rest-port"))


def test_the_dummy_refuses_what_koha_refuses(ils: Ils) -> None:
    """The double is only as good as its strictness: patron.yaml's required fields,
    additionalProperties false, types and date format, 409 on a taken cardnumber, 401."""
    api = f"http://127.0.0.1:{ils.port}/api/v1/patrons"
    good = {"surname": "Nguyễn", "library_id": SITE, "category_id": "PT", "cardnumber": "C1"}
    with httpx.Client(auth=("koha", "koha"), timeout=10) as http:
        assert http.post(api, json=good).status_code == 201
        assert http.post(api, json=good).status_code == 409
        for bad in (
            {k: v for k, v in good.items() if k != "surname"},
            {**good, "cardnumber": "C2", "restricted": True},  # read-only
            {**good, "cardnumber": "C3", "nickname": "An"},
            {**good, "cardnumber": "C4", "date_of_birth": "17/05/1990"},
            {**good, "cardnumber": "C5", "patron_card_lost": "yes"},
            {**good, "cardnumber": "C6", "extended_attributes": [{"type": "CCCD_REF"}]},
            {**good, "cardnumber": "C7", "library_id": None},
        ):
            r = http.post(api, json=bad)
            assert r.status_code == 400 and r.json()["errors"], bad
    assert httpx.get(api, timeout=10).status_code == 401
    assert httpx.get(api, auth=("koha", "wrong"), timeout=10).status_code == 401


def test_the_dummy_keeps_its_patrons_across_a_restart(tmp_path: Path) -> None:
    """The demo stops its library system for a while: the readers central pushed must still
    be there after, or status back would take them for deleted."""
    sip, rest = free_port(), free_port()
    serve = [sys.executable, "-m", "biblioedge", "sip", "serve", "--port", str(sip)]
    serve += ["--rest-port", str(rest), "--patrons-file", str(tmp_path / "patrons.json")]
    api = f"http://127.0.0.1:{rest}/api/v1/patrons"
    body = {"surname": "Nguyễn", "firstname": "Văn An", "library_id": SITE, "category_id": "PT"}
    for round_ in (1, 2):
        dummy = subprocess.Popen(serve, stdout=subprocess.DEVNULL)
        try:
            wait_port("127.0.0.1", rest, 30)
            wait_port("127.0.0.1", sip, 30)
            if round_ == 1:
                r = httpx.post(api, json={**body, "cardnumber": "BE0000001"}, auth=AUTH)
                assert r.status_code == 201
            else:
                (patron,) = httpx.get(api, auth=AUTH, timeout=10).json()
                assert (patron["cardnumber"], patron["surname"]) == ("BE0000001", "Nguyễn")
                lib = Sip2Library(
                    Account.from_url(f"sip2://kiosk:kiosk@127.0.0.1:{sip}?institution=TVTN")
                )
                try:
                    seen = lib.patron("BE0000001")
                finally:
                    lib.close()
                assert seen.valid and seen.name == "Nguyễn Văn An"
        finally:
            dummy.kill()
            dummy.wait(10)


AUTH = ("koha", "koha")

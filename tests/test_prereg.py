"""Register from home, finish at the desk, keep the card on the phone (issue 25, 1 and 3).

The public pages are central's real app (TestClient); the desk is the real flow on the real
chip stack and face engine, fed to central's real ingest and registrar (tests/desk_kit.py). The
reader's code is read off the page's own QR image with the desk's decoder, and the phone card
off its page's image: what a camera would read.
"""

from __future__ import annotations

import base64
import re
import shutil
import unicodedata
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import orjson
import pytest
from desk_kit import Desk, running_desk
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from biblioedge.cardtoken import CardTokenError, CardVerifier, load_public_key
from biblioedge.drivers.codes import ZxingDecoder
from biblioedge.fleet.api import create_app
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.db import events, preregistrations
from biblioedge.fleet.db import readers as readers_table
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.prereg import FormError, PreregForm, check_form
from biblioedge.fleet.prereg_text import catalogue, keys
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.repo import Repo
from biblioedge.keys import load_or_create_key
from biblioedge.protocol import utc_now

FORM = {
    "name": unicodedata.normalize("NFD", "Nguyễn Thị Bình"),  # as some phones send it
    "phone": "0912 345 678",
    "email": "",
    "face": "yes",
    "notices": "no",
}


def png_code(html: str) -> str:
    """The text of the page's QR image (the data URI it offers to save)."""
    m = re.search(r'href="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert m, "no QR image on the page"
    img = cv2.imdecode(np.frombuffer(base64.b64decode(m.group(1)), np.uint8), cv2.IMREAD_COLOR)
    (code,) = ZxingDecoder().decode(img)
    return code.text


def public_api(tmp: Path, repo: Repo, readers: Readers, **prereg: object) -> TestClient:
    cfg = CentralConfig(data_dir=tmp, prereg=prereg)
    return TestClient(create_app(cfg, repo, None, CentralMetrics(), readers))


@pytest.fixture
def db(tmp_path: Path) -> tuple[Repo, Readers]:
    repo = Repo(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    repo.migrate()
    return repo, Readers(repo, load_or_create_key(tmp_path / "t.key"))


def test_the_page_is_vietnamese_first_and_gives_a_code_once(
    tmp_path: Path, db: tuple[Repo, Readers]
) -> None:
    repo, readers = db
    api = public_api(tmp_path, repo, readers)
    page = api.get("/register")
    assert page.status_code == 200 and 'lang="vi"' in page.text
    assert "Đăng ký thẻ bạn đọc từ xa" in page.text and 'charset="utf-8"' in page.text
    assert "Full name" in api.get("/register?lang=en").text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    done = api.post("/register", data=FORM)
    assert done.status_code == 201 and done.headers["cache-control"] == "no-store"
    code = png_code(done.text)
    assert code.startswith("BP1.")
    assert "Nguy" not in code and "0912" not in code  # nothing personal in the code
    with repo.engine.connect() as conn:
        (row,) = conn.execute(select(preregistrations)).all()
    assert row.used_at is None and row.expires_at - row.created_at == timedelta(days=30)
    # sealed at rest: neither the name (either form) nor the phone is in the database file
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("c.sqlite3*"))
    for secret in ("Nguyễn", FORM["name"], "Bình", "0912345678"):
        assert secret.encode() not in raw, secret
    # nothing readable afterwards: no route answers for a code or its id
    prereg_id = code.split(".")[1]
    for path in (f"/register/{prereg_id}", f"/register?code={code}", f"/api/v1/prereg/{prereg_id}"):
        r = api.get(path)
        assert prereg_id not in r.text and "0912" not in r.text


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"name": "Bình 😀"}, "name_chars"),
        ({"name": "A" * 300}, "name_long"),
        ({"name": "001190012345"}, "name_chars"),  # an ID number typed as the name
        ({"name": "  "}, "name_missing"),
        ({"phone": "", "email": ""}, "contact_missing"),
        ({"phone": "12345"}, "phone_invalid"),
        ({"email": "a@b"}, "email_invalid"),
        ({"face": "maybe"}, "face_choice"),
        ({"cccd": "001190012345"}, "form_fields"),
    ],
)
def test_a_bad_form_gets_its_reason_and_nothing_is_kept(
    tmp_path: Path, db: tuple[Repo, Readers], change: dict[str, str], reason: str
) -> None:
    repo, readers = db
    api = public_api(tmp_path, repo, readers)
    r = api.post("/register", data={**FORM, **change})
    assert r.status_code == 422
    assert catalogue("vi")[reason] in r.text  # in her language, Vietnamese first
    with repo.engine.connect() as conn:
        assert conn.execute(select(preregistrations)).all() == []


def test_oversized_and_foreign_bodies_are_refused_unread(
    tmp_path: Path, db: tuple[Repo, Readers]
) -> None:
    repo, readers = db
    api = public_api(tmp_path, repo, readers, per_address=100)
    big = api.post("/register", data={**FORM, "email": "x" * 5000 + "@example.vn"})
    assert big.status_code == 413 and catalogue("vi")["form_size"] in big.text
    as_json = api.post("/register", json=FORM)
    assert as_json.status_code == 422
    bad_utf8 = api.post(
        "/register",
        content=b"name=\xff\xfe&face=yes",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert bad_utf8.status_code == 422
    with repo.engine.connect() as conn:
        assert conn.execute(select(preregistrations)).all() == []


def test_a_flood_from_one_address_is_held_and_many_addresses_meet_the_cap(
    tmp_path: Path, db: tuple[Repo, Readers]
) -> None:
    repo, readers = db
    cfg = CentralConfig(data_dir=tmp_path, prereg={"per_address": 3, "max_waiting": 7})
    app = create_app(cfg, repo, None, CentralMetrics(), readers)
    one = TestClient(app, client=("203.0.113.7", 5000))
    assert [one.post("/register", data=FORM).status_code for _ in range(3)] == [201] * 3
    held = one.post("/register", data=FORM)
    assert held.status_code == 429 and int(held.headers["retry-after"]) > 0
    assert "thử lại sau" in held.text
    # the same /64 is the same client; another address is not held
    v6 = [TestClient(app, client=(f"2001:db8::{i}", 5000)) for i in range(1, 5)]
    assert [c.post("/register", data=FORM).status_code for c in v6[:3]] == [201, 201, 201]
    assert v6[3].post("/register", data=FORM).status_code == 429
    other = TestClient(app, client=("198.51.100.9", 5000))
    assert other.post("/register", data=FORM).status_code == 201  # the 7th waiting one
    full = TestClient(app, client=("198.51.100.10", 5000)).post("/register", data=FORM)
    assert full.status_code == 503 and catalogue("vi")["full"] in full.text
    with repo.engine.connect() as conn:
        assert len(conn.execute(select(preregistrations)).all()) == 7  # none pushed out


def test_unconfirmed_preregistrations_expire_and_are_deleted(
    tmp_path: Path, db: tuple[Repo, Readers]
) -> None:
    from biblioedge.fleet.prereg import Preregistrations

    repo, readers = db
    pre = Preregistrations(readers.begin, readers.aead, b"k" * 32, expire_days=7)
    form = check_form({k: [v] for k, v in FORM.items()})
    issued = pre.create(form, max_waiting=10)
    assert issued.expires_at - utc_now() > timedelta(days=6)
    assert pre.purge(utc_now() + timedelta(days=6)) == 0 and pre.count() == 1
    assert pre.purge(utc_now() + timedelta(days=7, minutes=1)) == 1 and pre.count() == 0


def test_names_are_normalized_and_contacts_cleaned() -> None:
    form = check_form({k: [v] for k, v in {**FORM, "email": "Binh@Example.VN"}.items()})
    assert form == PreregForm("Nguyễn Thị Bình", "0912345678", "Binh@example.vn", True, False)
    assert unicodedata.is_normalized("NFC", form.name)
    for lang in ("vi", "en"):
        words = catalogue(lang)
        assert set(words) == set(keys())
        assert all(unicodedata.is_normalized("NFC", w) for w in words.values())


# -- at the desk ------------------------------------------------------------------------------


async def _from_home(desk: Desk, api: TestClient, form: dict[str, str] | None = None) -> str:
    done = api.post("/register", data=form or FORM)
    assert done.status_code == 201
    return png_code(done.text)


async def _confirm(desk: Desk, code: str) -> str:
    desk.flow.scanned(code)
    view = await desk.until("prereg")
    assert view.message == "prereg_scan_cccd" and view.actions == ("cancel",)
    desk.flow.scanned(desk.qr)
    confirm = await desk.until("prereg_confirm")
    assert confirm.message == "prereg_confirm_face" and confirm.actions == ("confirm", "cancel")
    assert confirm.score is not None and confirm.threshold is not None
    assert confirm.score >= confirm.threshold  # the chip was read and the face matched
    desk.flow.tap("confirm")
    issued = await desk.until("issued")
    return issued.patron_id


def readers_at(desk: Desk) -> int:
    with desk.central.repo.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(readers_table)) or 0)


def _desk_api(tmp_path: Path, desk: Desk) -> TestClient:
    """Central's public pages on the same database and keys the desk's central uses."""
    cfg = CentralConfig(data_dir=tmp_path, security={"public_url": "https://central.test"})
    c = desk.central
    return TestClient(create_app(cfg, c.repo, None, CentralMetrics(), c.readers, c.cards))


async def test_registered_from_home_confirmed_at_the_desk_in_one_tap(
    tmp_path: Path, pcsc: int
) -> None:
    async with running_desk(tmp_path, pcsc) as desk:
        api = _desk_api(tmp_path, desk)
        form = {**FORM, "name": "Nguyen Thi Binh"}  # typed without the marks: the chip wins
        code = await _from_home(desk, api, form)
        pid = await _confirm(desk, code)
        desk.flow.tap("next")
        await desk.until("idle")
        assert desk.flow.taps == 2  # confirm, next
        reader = desk.central.readers.get(pid)
        assert reader["display_name"] == "Nguyễn Thị Bình"  # the chip's name, not the form's
        assert reader["templates"] == {"dlib-resnet@1": 3}  # she chose the face at home
        consents = {c["purpose"]: c for c in desk.central.cards.consents_of(pid)}
        assert consents["face_gate"]["granted"] and not consents["notices"]["granted"]
        assert consents["face_gate"]["text_version"].startswith("web-")
        assert consents["face_gate"]["librarian"] == "lan"
        with desk.central.repo.engine.connect() as conn:
            profile = desk.central.registrar.profile(conn, pid)
            (audit,) = conn.execute(select(events.c.payload)).scalars()
            (row,) = conn.execute(select(preregistrations)).all()
        assert profile is not None and profile["phone"] == "0912345678"
        assert profile["date_of_birth"] == "15/03/1990"  # the chip's fields stay
        assert audit["prereg"] == {"used": True, "name_matches_chip": False}
        assert "Nguyen" not in str(audit) and "0912" not in str(audit)
        assert row.used_at is not None and row.patron_id == pid and row.sealed is None

        # the same code again: refused with its reason, no second reader
        desk.flow.scanned(code)
        await desk.until("prereg")
        desk.flow.scanned(desk.qr)
        await desk.until("prereg_confirm")
        desk.flow.tap("confirm")
        await desk.seen("prereg_used")
        assert desk.flow.view.step == "refused"
        assert readers_at(desk) == 1


async def test_forged_and_expired_codes_are_refused_with_the_reason(
    tmp_path: Path, pcsc: int
) -> None:
    async with running_desk(tmp_path, pcsc) as desk:
        api = _desk_api(tmp_path, desk)
        code = await _from_home(desk, api)
        # a code for "no face" made from a real one: the MAC no longer matches
        head, _, mac = code.rpartition(".")
        forged = head[:-2] + "nn." + mac
        desk.flow.scanned(forged)
        await desk.until("prereg")
        assert desk.flow.view.detail == "notices_no"
        desk.flow.scanned(desk.qr)
        view = await desk.until("prereg_confirm")
        assert view.message == "prereg_confirm_noface"
        desk.flow.tap("confirm")
        await desk.seen("prereg_forged")
        assert readers_at(desk) == 0
        desk.flow.tap("next")
        await desk.until("idle")
        # an expired code is refused by the desk itself, before any chip read
        parts = code.split(".")
        expired = ".".join([parts[0], parts[1], "1700000000", parts[3], parts[4]])
        desk.views.clear()
        desk.flow.scanned(expired)
        await desk.seen("prereg_expired", 10)
        assert "place_card" not in [v.step for v in desk.views]
        desk.flow.scanned("BP1.not-a-code")
        await desk.seen("prereg_malformed", 10)
        assert desk.store.outbox_depth() == 0
        # the genuine code still works after all that
        pid = await _confirm(desk, code)
        assert desk.central.readers.get(pid)["display_name"] == "Nguyễn Thị Bình"


async def test_the_card_on_the_phone_is_the_printed_card_and_a_new_card_revokes_it(
    tmp_path: Path, pcsc: int
) -> None:
    async with running_desk(tmp_path, pcsc) as desk:
        api = _desk_api(tmp_path, desk)
        pid = await _confirm(desk, await _from_home(desk, api))
        link = desk.flow.view.link
        assert link.startswith("https://central.test/the/card/")
        path = link.removeprefix("https://central.test")
        page = api.get(path)
        assert page.status_code == 200 and 'lang="vi"' in page.text and pid in page.text
        assert page.headers["cache-control"] == "no-store"
        on_phone = png_code(page.text)
        printed = ZxingDecoder().decode(cv2.imread(str(desk.prints / f"{pid}.png")))[0].text
        assert on_phone == printed  # the same signed token as the printed card
        keys = {k: load_public_key(v) for k, v in desk.central.cards.public_keys().items()}
        old = CardVerifier(keys).verify(on_phone)
        assert old.pid == pid
        # central cannot read it back without her link; a wrong key is one answer
        *_, pickup, secret = path.split("/")
        wrong = secret[:-2] + ("AA" if not secret.endswith("AA") else "BB")
        assert api.get(f"/the/card/{pickup}/{wrong}").status_code == 404
        assert api.get(f"/the/card/{'x' * 16}/{secret}").status_code == 404
        raw = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("central.sqlite3*")))  # noqa: ASYNC240
        assert on_phone.encode() not in raw
        # a new card (she registers again at the desk): the old token is revoked everywhere
        desk.flow.tap("next")
        await desk.until("idle")
        desk.flow.scanned(desk.qr)
        await desk.until("consent")
        desk.flow.tap("consent_yes")
        again = await desk.until("issued")
        assert again.patron_id == pid and again.link and again.link != link
        assert api.get(path).status_code == 404  # the old phone link goes with the old card
        delta = desk.central.readers.delta("tv-tinh", 0)
        assert delta is not None and old.jti in delta.revoked_cards
        with pytest.raises(CardTokenError, match="revoked"):
            CardVerifier(keys, revoked=delta.revoked_cards).verify(on_phone)
        # she leaves: her phone link and the used pre-registration naming her go too
        from biblioedge.fleet.lifecycle import Lifecycle

        Lifecycle(desk.central.readers, desk.central.cards).leave(pid)
        assert api.get(again.link.removeprefix("https://central.test")).status_code == 404
        with desk.central.repo.engine.connect() as conn:
            assert conn.execute(select(preregistrations)).all() == []


# -- a real central, a desk's certificate over the real broker ---------------------------------


@pytest.mark.integration
def test_central_takes_a_code_from_its_page_and_answers_the_desk_with_the_phone_link(
    tmp_path: Path, central: object, broker: object
) -> None:
    """The product's own wiring: central's public page, its registrar and its phone card
    page, in the central process, with a desk speaking MQTT over mutual TLS."""
    import httpx
    from test_compromised_kiosk import Kiosk, _enrolled, registration_doc

    from biblioedge.demo.launch import CentralProcess
    from biblioedge.protocol import registration_context
    from biblioedge.provisioning.broker import BrokerProcess
    from biblioedge.provisioning.sealing import load_x25519_public, seal

    assert isinstance(central, CentralProcess) and isinstance(broker, BrokerProcess)
    import ssl

    trust = ssl.create_default_context(cafile=str(central.ca_file))
    web = httpx.Client(base_url=central.url, verify=trust)
    done = web.post("/register", data=FORM)
    assert done.status_code == 201
    code = png_code(done.text)
    bundle = _enrolled(central, tmp_path, "desk-07", "desk")
    desk = Kiosk(broker.port, tmp_path / "desk-07" / "identity", "desk-07", "tv-tinh")
    key = load_x25519_public(bundle["seal_key"])

    def register() -> dict[str, object]:
        doc = {**registration_doc(), "prereg": code}
        rid = doc["registration_id"]
        blob = seal(key, orjson.dumps(doc), registration_context("desk-07", rid))
        sealed = {"registration_id": rid, "sealed": base64.b64encode(blob).decode()}
        event = desk.event("desk.registration", sealed)
        ack = desk.send(event)
        return {**ack["results"], **ack["rejected"]}[event["event_id"]]  # type: ignore[no-any-return]

    try:
        answer = register()
        assert isinstance(answer, dict) and answer["display_name"] == "Trần Văn An"  # the chip's
        link = str(answer["phone_card"])
        assert link.startswith(central.url + "/the/card/")
        page = web.get(link.removeprefix(central.url))
        assert page.status_code == 200 and png_code(page.text) == answer["card"]["token"]
        assert register() == "prereg_used"  # the same code from the same desk, again
    finally:
        desk.close()
        web.close()


def test_the_desk_screen_shows_the_phone_link_as_a_code_a_phone_reads() -> None:
    from biblioedge.kiosk.desk_screen import phone_card_frame

    link = "https://central.test/the/card/AbCdEfGhIjKlMnOp/" + "k" * 43
    (code,) = ZxingDecoder().decode(phone_card_frame(link))
    assert code.text == link


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(["name", "phone", "email", "face", "notices", "lang", "x"]),
        st.lists(st.text(max_size=400), min_size=0, max_size=2),
        max_size=7,
    ),
    code=st.text(max_size=200) | st.from_regex(r"BP1\.[A-Za-z0-9_-]{16}\.\d{9,11}\.[yn]{2}\..{22}"),
)
def test_hostile_forms_and_codes_are_refused_with_a_reason_never_a_crash(
    fields: dict[str, list[str]], code: str
) -> None:
    from biblioedge.prereg_code import PreregCodeError, parse_code

    try:
        form = check_form(fields)
    except FormError as exc:
        assert exc.reason in keys()  # a message the page can show
    else:
        assert unicodedata.is_normalized("NFC", form.name) and len(form.name) <= 100
        assert form.phone or form.email
        assert not any(ch.isdigit() for ch in form.name)
    try:
        parse_code(code)
    except PreregCodeError as exc:
        assert exc.reason == "prereg_malformed"


def _pki(tmp: Path) -> dict[str, Path]:
    """A root, an intermediate (Apple's WWDR, in real life) and a pass-signing certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = utc_now()

    def make(name: str, issuer: tuple[x509.Name, object] | None, ca: bool) -> tuple[object, object]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name, issuer_key = issuer if issuer else (subject, key)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        return cert, key

    root, root_key = make("Test Root", None, True)
    wwdr, wwdr_key = make("Test WWDR", (root.subject, root_key), True)  # type: ignore[attr-defined]
    signer, signer_key = make("Pass Type ID: pass.vn.test", (wwdr.subject, wwdr_key), False)  # type: ignore[attr-defined]
    files = {}
    for name, cert in (("root", root), ("wwdr", wwdr), ("cert", signer)):
        files[name] = tmp / f"{name}.pem"
        files[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))  # type: ignore[attr-defined]
    files["key"] = tmp / "key.pem"
    files["key"].write_bytes(
        signer_key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def test_a_wallet_pass_only_with_a_certificate_and_signed_by_it(
    tmp_path: Path, db: tuple[Repo, Readers]
) -> None:
    import io
    import json
    import subprocess
    import zipfile

    from biblioedge.fleet.cards import Cards
    from biblioedge.fleet.phonecard import PhoneCards

    repo, readers = db
    cards = Cards(readers, load_or_create_key(tmp_path / "c.key"))
    readers.upsert("BE0000001", site="tv-tinh", display_name="Nguyễn Thị Bình")
    with readers.begin() as conn:
        card = cards.issue_in(conn, "BE0000001", 365)
        link = PhoneCards(readers.begin).offer_in(conn, "BE0000001", "Nguyễn Thị Bình", card)
    plain = public_api(tmp_path, repo, readers)
    assert 'id="wallet"' not in plain.get(link).text  # no certificate: no pass offered
    assert plain.get(link + "/card.pkpass").status_code == 404
    pki = _pki(tmp_path)
    with pytest.raises(ValueError, match="together"):
        CentralConfig(data_dir=tmp_path, prereg={"wallet_cert": str(pki["cert"])})
    wallet = {
        "wallet_pass_type": "pass.vn.test",
        "wallet_team": "ABCDE12345",
        "wallet_cert": str(pki["cert"]),
        "wallet_key": str(pki["key"]),
        "wallet_chain": str(pki["wwdr"]),
    }
    api = public_api(tmp_path, repo, readers, **wallet)
    assert 'id="wallet"' in api.get(link).text
    got = api.get(link + "/card.pkpass")
    assert got.status_code == 200 and got.headers["content-type"] == "application/vnd.apple.pkpass"
    z = zipfile.ZipFile(io.BytesIO(got.content))
    manifest = json.loads(z.read("manifest.json"))
    import hashlib

    for name, digest in manifest.items():
        assert hashlib.sha1(z.read(name)).hexdigest() == digest  # noqa: S324
    doc = json.loads(z.read("pass.json"))
    assert doc["barcodes"][0]["message"] == card["token"]  # the printed card's token
    assert doc["generic"]["primaryFields"][0]["value"] == "Nguyễn Thị Bình"
    (tmp_path / "manifest.json").write_bytes(z.read("manifest.json"))
    (tmp_path / "signature").write_bytes(z.read("signature"))
    # an outside implementation checks the signature and the chain: OpenSSL
    verify = subprocess.run(
        ["openssl", "smime", "-verify", "-binary", "-inform", "DER", "-purpose", "any"]
        + ["-in", str(tmp_path / "signature"), "-content", str(tmp_path / "manifest.json")]
        + ["-CAfile", str(pki["root"]), "-out", "/dev/null"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    assert api.get(link.rsplit("/", 1)[0] + "/" + "A" * 43 + "/card.pkpass").status_code == 404


# -- in a browser on a phone-sized screen ------------------------------------------------------

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium is not installed")
def test_registering_from_a_phone_in_chromium(tmp_path: Path, db: tuple[Repo, Readers]) -> None:
    import os
    import threading
    import time

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from biblioedge.procs import free_port

    repo, readers = db
    app = create_app(CentralConfig(data_dir=tmp_path), repo, None, CentralMetrics(), readers)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch a browser or a driver
    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=412,915")  # a phone
    browser = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    try:
        while not server.started:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}/register"
        browser.get(url)
        assert browser.find_element(By.TAG_NAME, "h1").text == "Đăng ký thẻ bạn đọc từ xa"
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= browser.execute_script("return window.innerWidth")  # no sideways scroll

        def fill(name: str) -> None:
            field = browser.find_element(By.ID, "name")
            field.clear()
            field.send_keys(name)
            phone = browser.find_element(By.ID, "phone")
            phone.clear()
            phone.send_keys("0912 345 678")
            browser.find_element(By.CSS_SELECTOR, "input[name=face][value=no]").click()
            browser.find_element(By.CSS_SELECTOR, "input[name=notices][value=yes]").click()
            browser.find_element(By.ID, "submit").click()

        fill("Bình 001190012345")  # an ID number in the name: refused, in Vietnamese
        refused = WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "refused"))
        assert catalogue("vi")["name_chars"] in refused.text
        assert browser.find_element(By.ID, "name").get_attribute("value") == "Bình 001190012345"
        fill("Nguyễn Thị Bình")
        WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.ID, "code"))
        assert "Mang mã này" in browser.find_element(By.ID, "done").text
        shot = browser.find_element(By.ID, "code").screenshot_as_png
        img = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
        (code,) = ZxingDecoder().decode(img)  # the QR as her screen shows it
        assert code.text.startswith("BP1.") and code.text.split(".")[3] == "ny"
        browser.get(url + "?lang=en")
        assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Register")
    finally:
        browser.quit()
        server.should_exit = True
        thread.join(5)


def test_the_desk_screenshots_show_the_confirm_step_and_the_phone_code(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "biblioedge", "kiosk", "screenshot", "desk", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "desk_prereg_confirm.png").exists()
    shot = cv2.imread(str(tmp_path / "desk_issued_phone.png"))
    codes = [c.text for c in ZxingDecoder().decode(shot)]
    assert codes == ["https://central.example.vn/the/card/AbCdEfGhIjKlMnOp/" + "k" * 43]


def test_staff_can_put_a_card_on_her_phone_later_and_it_revokes_the_printed_one(
    tmp_path: Path, db: tuple[Repo, Readers]
) -> None:
    from biblioedge.fleet.auth import Tokens
    from biblioedge.fleet.cards import Cards

    repo, readers = db
    cards = Cards(readers, load_or_create_key(tmp_path / "c.key"))
    readers.upsert("BE0000001", site="tv-tinh", display_name="Nguyễn Thị Bình")
    cfg = CentralConfig(data_dir=tmp_path)
    api = TestClient(create_app(cfg, repo, None, CentralMetrics(), readers, cards))
    tokens = Tokens(repo.engine)
    api.headers["Authorization"] = "Bearer " + tokens.create("lan", "librarian")[1]
    printed = api.post("/api/v1/readers/BE0000001/cards", json={}).json()
    got = api.post("/api/v1/readers/BE0000001/phone-card")
    assert got.status_code == 201
    doc = got.json()
    assert doc["revoked"] == [printed["jti"]] and doc["jti"] != printed["jti"]
    page = api.get(doc["link"].removeprefix(cfg.public_url))
    assert page.status_code == 200 and "Nguyễn Thị Bình" in page.text
    keys = {k: load_public_key(v) for k, v in cards.public_keys().items()}
    delta = readers.delta("tv-tinh", 0)
    assert delta is not None and printed["jti"] in delta.revoked_cards
    verifier = CardVerifier(keys, revoked=delta.revoked_cards)
    assert verifier.verify(png_code(page.text)).jti == doc["jti"]  # the new card opens
    with pytest.raises(CardTokenError, match="revoked"):
        verifier.verify(printed["token"])  # the printed one no longer does
    assert api.post("/api/v1/readers/BE0000404/phone-card").status_code == 404
    api.headers["Authorization"] = "Bearer " + tokens.create("xem", "viewer")[1]
    assert api.post("/api/v1/readers/BE0000001/phone-card").status_code == 403

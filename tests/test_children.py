"""Children at the card desk (issue 25 deliver 2): the age from the chip on the day at the desk,
the guardian's own CCCD read and checked, the child's consent from 7 and the guardian's, no
face enrollment for minors by default, and central checking and keeping it.

The desk runs on the real stacks (pcscd + vpcd + the chip simulator, dlib; tests/desk_kit.py);
the guardian's card is put on the reader after the child's, as at the desk. Central's checks
are exercised through its ingest (tests/test_registrations.py's Central)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from desk_kit import Desk, person, running_desk
from sqlalchemy import select
from test_registrations import Central, registration

from biblioedge.agent.citizen import citizen_ref
from biblioedge.agent.desk.flow import DeskSettings
from biblioedge.agent.desk.guardian import MinorPolicy, age_on, is_minor
from biblioedge.drivers.cccd.chipsim import CccdChip, VpcdCard
from biblioedge.drivers.cccd.simdata import Citizen, chip_files
from biblioedge.fleet.db import events, guardian_consents
from biblioedge.fleet.ils.mapping import map_reader
from biblioedge.fleet.ils.queue import Queue
from biblioedge.fleet.ils.settings import IlsConfig

PEPPER = b"b" * 32  # the simulated desk's (core/bench/desk.py)


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def child(born: date) -> tuple[Citizen, str]:
    """A child holding a CCCD (issued on request under 14 since 2024), the chip photo the
    live face at the desk matches; DG13 names "Nguyễn Văn Ba" as her father."""
    photo, _ = person(3)
    number = f"0013{born.year % 100:02d}009876"  # 3: a girl born in the 2000s
    expires = born.replace(year=born.year + 25) if (born.month, born.day) != (2, 29) else born
    c = Citizen(number, "Nguyễn Thị Mai", "NGUYEN<<THI<MAI", born, expires, "Nữ", photo)
    return c, c.qr(date.today() - timedelta(days=200))


def father(expired: bool = False) -> tuple[Citizen, str]:
    photo, _ = person(4)
    if expired:  # issued at 30: expired at 40, in January 2025
        c = Citizen(
            "001085011111", "Nguyễn Văn Ba", "NGUYEN<<VAN<BA", date(1985, 1, 10),
            date(2025, 1, 10), "Nam", photo,
        )  # fmt: skip
        return c, c.qr(date(2016, 1, 1))
    c = Citizen(  # issued at 40: valid to 60
        "001080067890", "Nguyễn Văn Ba", "NGUYEN<<VAN<BA", date(1980, 6, 1), date(2040, 6, 1),
        "Nam", photo,
    )  # fmt: skip
    return c, c.qr(date(2021, 1, 1))


def put_on_reader(desk: Desk, citizen: Citizen, port: int, **files_over: bytes) -> None:
    """The card in the librarian's hand goes on the reader (the previous one comes off)."""
    desk.card.remove()
    files = {**citizen.files(desk.pki), **files_over}
    desk.card = VpcdCard(
        CccdChip(citizen.mrz_information(), chip_files(files), can=citizen.can), port=port
    )
    desk.card.insert()  # waits for vpcd to listen again (chipsim.VpcdCard.insert)


async def showing(desk: Desk, message: str, within: float = 60.0) -> None:
    """Until the desk shows ``message`` now (``Desk.seen`` also counts earlier screens)."""
    deadline = time.monotonic() + within
    while desk.flow.view.message != message:
        assert time.monotonic() < deadline, f"never showed {message}; now {desk.flow.view}"
        await asyncio.sleep(0.05)


async def guardian_on_reader(desk: Desk, citizen: Citizen, qr: str, port: int) -> None:
    desk.flow.scanned(qr)
    await showing(desk, "guardian_swap_card")
    desk.card.remove()
    await asyncio.sleep(0.5)  # a hand between two cards; the desk waits for the card itself
    put_on_reader(desk, citizen, port)


def test_age_counts_on_the_day_at_the_desk() -> None:
    policy = MinorPolicy()
    day = date(2026, 12, 6)
    assert age_on(date(2010, 12, 6), day) == 16 and not is_minor(date(2010, 12, 6), day, policy)
    assert age_on(date(2010, 12, 7), day) == 15 and is_minor(date(2010, 12, 7), day, policy)
    assert age_on(date(2008, 2, 29), date(2026, 2, 28)) == 17  # a leap-day birthday: 1 March
    assert is_minor(date(2010, 12, 6), day, MinorPolicy(majority_age=18))


async def test_a_child_registers_with_her_father_and_no_face(tmp_path: Path, pcsc: int) -> None:
    today = MinorPolicy().today()
    kid, kid_qr = child(years_before(today, 12) - timedelta(days=30))
    dad, dad_qr = father()
    async with running_desk(tmp_path, pcsc) as desk:
        put_on_reader(desk, kid, pcsc)
        desk.flow.scanned(kid_qr)
        await desk.until("guardian_card")
        assert desk.flow.view.person["age"] == "12"
        await guardian_on_reader(desk, dad, dad_qr, pcsc)
        view = await desk.until("relationship")
        # the child's own chip names him as her father: recorded beside the librarian's answer
        assert view.message == "guardian_relationship_named"
        assert view.person["guardian"] == "Nguyễn Văn Ba"
        desk.flow.tap("rel_parent")
        await desk.until("child_consent")  # she is 12: her own consent first
        desk.flow.tap("child_yes")
        await desk.until("guardian_consent")
        desk.flow.tap("guardian_yes")
        issued = await desk.until("issued")  # no face consent screen for a minor
        assert "consent" not in [v.step for v in desk.views]
        pid = issued.patron_id
        reader = desk.central.readers.get(pid)
        assert reader["templates"] == {}  # face enrollment off for minors
        (consent,) = desk.central.cards.consents_of(pid)
        assert not consent["granted"]
        with desk.central.repo.engine.connect() as conn:
            (row,) = conn.execute(select(guardian_consents)).mappings()
            (audit,) = conn.execute(select(events.c.payload)).scalars()
        assert row["patron_id"] == pid and row["relationship"] == "parent"
        assert row["named_on_child_card"] and row["passive_auth"] == "ok"
        assert row["child_age"] == 12 and row["child_consent"] is True
        assert row["guardian_ref"] == citizen_ref(PEPPER, dad.id_number)
        assert row["adult_on"] == kid.born.replace(year=kid.born.year + 16).isoformat()
        # the audit trail says a guardian consented and how it was checked; not who
        assert audit["minor"] is True and audit["guardian"]["relationship"] == "parent"
        text = orjson.dumps(audit).decode()
        assert row["guardian_ref"] not in text and "Ba" not in text
        # the library system gets the child category
        snap = Queue(desk.central.repo).snapshot(desk.central.readers, pid)
        assert snap is not None
        cfg = IlsConfig.model_validate({"url": "koha+https://api:pw@koha.example/"})
        assert map_reader(
            cfg, cardnumber=pid, site=snap.site, full_name=snap.name,
            citizen_ref=snap.citizen_ref, expires_at=snap.expires_at, profile=snap.profile,
            minor_until=snap.minor_until,
        ).category_id == cfg.category_child  # fmt: skip
        # and so without a kept date of birth, from the guardian record
        assert map_reader(
            cfg, cardnumber=pid, site=snap.site, full_name=snap.name,
            citizen_ref=snap.citizen_ref, expires_at=snap.expires_at, profile={},
            minor_until=snap.minor_until,
        ).category_id == cfg.category_child  # fmt: skip
        assert desk.flow.taps == 3


async def test_bad_guardian_cards_each_get_a_reason_and_nothing_is_sent(
    tmp_path: Path, pcsc: int
) -> None:
    kid, kid_qr = child(years_before(MinorPolicy().today(), 10))
    old, old_qr = father(expired=True)
    dad, dad_qr = father()
    async with running_desk(tmp_path, pcsc) as desk:
        put_on_reader(desk, kid, pcsc)
        desk.flow.scanned(kid_qr)
        await desk.until("guardian_card")
        desk.flow.scanned(kid_qr)  # the child's own card offered as the guardian's
        view = await desk.until("guardian_refused")
        assert view.message == "guardian_is_child"
        desk.flow.tap("retry")
        await desk.until("guardian_card")
        await guardian_on_reader(desk, old, old_qr, pcsc)
        view = await desk.until("guardian_refused")
        assert view.message == "guardian_expired" and "2025" in view.detail
        desk.flow.tap("retry")
        await desk.until("guardian_card")
        # a chip whose personal data cannot be parsed: unreadable, and no QR-only way round
        desk.flow.scanned(dad_qr)
        await showing(desk, "guardian_swap_card")
        desk.card.remove()
        await asyncio.sleep(0.5)
        put_on_reader(desk, dad, pcsc, DG13=b"\x6d\x05\x30\x03\x02\x01")
        await desk.until("reader_problem")
        desk.flow.tap("qr_only")
        view = await desk.until("guardian_refused")
        assert view.message == "guardian_unreadable"
        desk.flow.tap("cancel")
        await desk.until("idle")
        assert desk.store.outbox_depth() == 0  # nothing about the child left the desk


async def test_a_reader_who_is_16_today_registers_as_an_adult(tmp_path: Path, pcsc: int) -> None:
    """She pre-registered at 15 (lane prereg's form); at the desk the chip says 16 today."""
    kid, kid_qr = child(years_before(MinorPolicy().today(), 16))
    async with running_desk(tmp_path, pcsc) as desk:
        put_on_reader(desk, kid, pcsc)
        desk.flow.scanned(kid_qr)
        await desk.until("consent")  # no guardian step: her own consent, face offered
        assert not any(v.step.startswith("guardian") for v in desk.views)
        desk.flow.tap("consent_yes")
        issued = await desk.until("issued")
        assert desk.central.readers.get(issued.patron_id)["templates"]


async def test_a_child_under_7_needs_only_the_guardian_and_a_refusal_sends_nothing(
    tmp_path: Path, pcsc: int
) -> None:
    kid, kid_qr = child(years_before(MinorPolicy().today(), 6))
    dad, dad_qr = father()
    settings = DeskSettings(librarian="lan", answer_wait_s=3.0)
    async with running_desk(tmp_path, pcsc, settings=settings) as desk:
        put_on_reader(desk, kid, pcsc)
        desk.flow.scanned(kid_qr)
        await desk.until("guardian_card")
        await guardian_on_reader(desk, dad, dad_qr, pcsc)
        await desk.until("relationship")
        desk.flow.tap("rel_guardian")
        await desk.until("guardian_consent")  # 6: no consent of her own is asked
        desk.flow.tap("guardian_no")
        view = await desk.until("refused")
        assert view.message == "guardian_declined"
        desk.flow.tap("next")
        await desk.until("idle")
        assert desk.store.outbox_depth() == 0


def test_every_guardian_screen_and_refusal_is_translated_vietnamese_first() -> None:
    import ast
    import typing
    import unicodedata

    from biblioedge.agent.desk import guardian, guardian_flow
    from biblioedge.kiosk.i18n import keys, subtitle, text

    tree = ast.parse(Path(guardian_flow.__file__).read_text())
    shown = {
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") in ("_view", "_declined")
        and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant)
    }
    actions = {
        elt.value
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "actions"
        for elt in getattr(node.value, "elts", [])
        if isinstance(elt, ast.Constant)
    }
    reasons = set(typing.get_args(guardian.GuardianReason))
    for node in ast.walk(tree):  # messages chosen through a variable or a condition
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "message":
            shown.add(getattr(node.value, "value", ""))
        choice = node.args[1] if isinstance(node, ast.Call) and len(node.args) > 1 else None
        if getattr(node, "func", None) is not None and isinstance(choice, ast.IfExp):
            shown |= {getattr(n, "value", "") for n in (choice.body, choice.orelse)}
    shown = {m for m in shown if isinstance(m, str) and m}
    assert {"guardian_needed", "child_consent_text", "guardian_declined"} <= shown
    assert {"rel_parent", "child_yes", "guardian_yes"} <= actions
    needed = shown | reasons | {f"action_{a}" for a in actions}
    assert needed <= keys()
    for key in needed:
        for lang in ("vi", "en"):
            t = text(key, lang)  # type: ignore[arg-type]
            assert t and unicodedata.is_normalized("NFC", t)
    consent = subtitle("guardian_consent_text", "vi")
    for words in ("Mục đích", "Lưu", "Rút lại"):  # purpose, retention, withdrawal
        assert words in consent


def test_the_guardian_screens_render_in_both_languages(tmp_path: Path) -> None:
    import subprocess
    import sys

    import cv2

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "biblioedge",
            "kiosk",
            "screenshot",
            "desk",
            "--out",
            str(tmp_path),
            "--size",
            "1280x800",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    needed = cv2.imread(str(tmp_path / "desk_guardian_needed.png"))
    consent = cv2.imread(str(tmp_path / "desk_guardian_consent.png"))
    expired = cv2.imread(str(tmp_path / "desk_guardian_expired.png"))
    assert needed is not None and consent is not None and expired is not None
    title = (slice(70, 150), slice(560, 1250))
    assert abs(needed[title].astype(int) - consent[title].astype(int)).max() > 100


# -- central -------------------------------------------------------------------------------


def guardian(**over: Any) -> dict[str, Any]:
    return {
        "citizen_ref": "d" * 64,
        "relationship": "parent",
        "passive_auth": "ok",
        "consent": True,
        "child_consent": True,
        "child_age": 12,
        "majority_age": 16,
        **over,
    }


def child_registration(born: date, **over: Any) -> dict[str, Any]:
    reg = registration(granted=False)
    reg["profile"] = {"date_of_birth": born.isoformat(), "gender": "Nữ"}
    reg.update(over)
    return reg


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, "guardian_required"),
        ({"guardian": guardian(citizen_ref="a" * 64)}, "guardian_is_child"),
        ({"guardian": guardian(consent=False)}, "no_guardian_consent"),
        ({"guardian": guardian(child_consent=None)}, "no_child_consent"),
        ({"guardian": guardian(relationship="neighbour")}, "invalid_registration"),
        (
            {"profile": {"date_of_birth": "9999-12-31"}, "guardian": guardian()},
            "invalid_registration",
        ),
    ],
)
def test_central_refuses_a_minor_without_a_valid_guardian(
    tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    central = Central(tmp_path)
    ev = central.event(child_registration(years_before(date.today(), 12), **change))
    ack, _ = central.send(ev)
    assert ack.rejected == {ev["event_id"]: reason} and not ack.results
    with central.repo.engine.connect() as conn:
        assert conn.execute(select(guardian_consents)).all() == []


def test_age_counts_on_the_desks_day_not_when_central_hears_of_it(tmp_path: Path) -> None:
    """Registered offline the day before her 16th birthday, delivered days later: a child's
    registration, with her guardian; the same without a guardian is refused."""
    central = Central(tmp_path)
    now = datetime.now(UTC)
    desk_time = now - timedelta(days=3)
    born = years_before(desk_time.date(), 16) + timedelta(days=3)
    ev = central.event(child_registration(born, guardian=guardian(child_age=15)))
    ev["occurred_at"] = desk_time.isoformat()
    ack, _ = central.send(ev)
    pid = ack.results[ev["event_id"]]["patron_id"]
    with central.repo.engine.connect() as conn:
        (row,) = conn.execute(select(guardian_consents)).mappings()
    assert row["patron_id"] == pid and row["adult_on"] == years_before(born, -16).isoformat()
    late = central.event(child_registration(born, citizen_ref="e" * 64))
    late["occurred_at"] = desk_time.isoformat()
    ack, _ = central.send(late)
    assert ack.rejected == {late["event_id"]: "guardian_required"}
    adult = central.event(child_registration(born, citizen_ref="f" * 64))  # at the desk today
    ack, _ = central.send(adult)
    assert ack.results[adult["event_id"]]["patron_id"]


def test_leaving_erases_the_guardian_record(tmp_path: Path) -> None:
    central = Central(tmp_path)
    ev = central.event(child_registration(years_before(date.today(), 9), guardian=guardian()))
    ack, _ = central.send(ev)
    pid = ack.results[ev["event_id"]]["patron_id"]
    central.readers.erase(pid)
    with central.repo.engine.connect() as conn:
        assert conn.execute(select(guardian_consents)).all() == []


def test_the_library_system_gets_the_child_category_also_without_a_kept_birth_date(
    tmp_path: Path,
) -> None:
    """Through central's ILS worker to the Koha-shaped dummy (tests/ils.py): a child whose desk
    keeps no date of birth is still category_child, from her guardian record."""
    import uuid

    from test_ils import DESK, SITE, Ils
    from test_ils import Central as IlsCentral

    from biblioedge.fleet.repo import Incoming
    from biblioedge.protocol import uuid7

    ils = Ils()
    ils.start()
    central = IlsCentral(tmp_path, ils.url())
    try:
        payloads = [
            {**child_registration(years_before(date.today(), 11), guardian=guardian(child_age=11))},
            {**registration(granted=False, ref="e" * 64), "profile": {}},  # an adult, no date
            {**registration(granted=False, ref="f" * 64), "profile": {}, "guardian": guardian()},
        ]
        payloads[0]["profile"] = {}  # the desk keeps no date of birth
        evs = [
            {
                "event_id": uuid7(),
                "device_id": DESK,
                "site": SITE,
                "type": "desk.registration",
                "seq": i + 1,
                "occurred_at": datetime.now(UTC).isoformat(),
                "payload": p,
            }  # fmt: skip
            for i, p in enumerate(payloads)
        ]
        body = {"batch_id": str(uuid.uuid4()), "device_id": DESK, "events": evs}
        result = central.repo.ingest([Incoming(SITE, DESK, "events", orjson.dumps(body))], True)
        (ack,) = result.acks
        pids = [ack.results[e["event_id"]]["patron_id"] for e in evs]
        central.drain()
        category = {p["cardnumber"]: p["category_id"] for p in ils.patrons()}
        cfg = central.cfg
        assert category == {
            pids[0]: cfg.category_child,
            pids[1]: cfg.category_adult,
            pids[2]: cfg.category_child,
        }
    finally:
        central.close()
        ils.stop()

"""The whole PC/SC stack: pyscard -> pcscd -> vpcd -> the product's chip simulator."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from biblioedge.drivers.cccd.chip import ChipReader, WrongKeys, list_readers
from biblioedge.drivers.cccd.chipsim import CccdChip, VpcdCard
from biblioedge.drivers.cccd.mrz import bac_mrz_information
from biblioedge.drivers.cccd.simdata import chip_files as sim_files
from biblioedge.drivers.cccd.simdata import demo_citizen, make_pki
from biblioedge.drivers.cccd.sm import tlv

MRZ_INFO = bac_mrz_information("090012345", "900315", "300315")


def chip_files() -> dict[int, bytes]:
    mrz = b"".join(
        [
            b"IDVNM0900123451001090012345<<<",
            b"9003151M3003150VNM<<<<<<<<<<<6",
            b"NGUYEN<<VAN<AN<<<<<<<<<<<<<<<<",
        ]
    )
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 58 + b"\xff\xd9"  # ~15 KB image payload
    return {
        # EF.COM: LDS version 0107, Unicode 040000, tags of DG1, DG2 and DG13
        0x011E: tlv(0x60, b"\x5f\x01\x040107\x5f\x36\x06040000" + tlv(0x5C, b"\x61\x75\x6d")),
        0x0101: tlv(0x61, b"\x5f\x1f" + bytes([len(mrz)]) + mrz),
        0x0102: tlv(0x75, tlv(0x5F, jpeg)),
    }


@pytest.fixture
def card(pcsc: int) -> Iterator[VpcdCard]:
    vc = VpcdCard(CccdChip(MRZ_INFO, chip_files()), port=pcsc)
    vc.insert()
    time.sleep(1.0)  # pcscd notices the card
    yield vc
    vc.remove()


def test_bac_and_files_through_pcscd(card: VpcdCard) -> None:
    assert any("Virtual PCD" in r for r in list_readers())
    seen: list[tuple[str, int, int]] = []
    result = ChipReader(progress=lambda n, done, total: seen.append((n, done, total))).read(
        MRZ_INFO, ("COM", "DG1", "DG2", "DG13")
    )
    files = chip_files()
    assert result.files["DG1"] == files[0x0101] and result.files["DG2"] == files[0x0102]
    assert result.missing == ["DG13"]
    assert seen and seen[-1][0] == "DG2" and seen[-1][1] == seen[-1][2] == len(files[0x0102])
    assert result.seconds < 30 and result.extended and result.apdus < 35  # 1 KB reads


def test_a_chip_without_extended_length_is_read_in_short_chunks(pcsc: int) -> None:
    vc = VpcdCard(CccdChip(MRZ_INFO, chip_files(), extended_length=False), port=pcsc)
    vc.insert()
    time.sleep(1.0)
    try:
        result = ChipReader().read(MRZ_INFO, ("DG1", "DG2"))
        assert not result.extended and result.apdus > 60
        assert result.files["DG2"] == chip_files()[0x0102]
    finally:
        vc.remove()


def test_wrong_keys_are_reported_once_and_not_retried(card: VpcdCard) -> None:
    before = card.apdus
    wrong = bac_mrz_information("090012346", "900315", "300315")
    with pytest.raises(WrongKeys, match="check the card"):
        ChipReader().read(wrong, ("DG1",))
    assert card.apdus - before == 3  # select, challenge, one authenticate: no retries


def test_plain_reads_are_refused_by_the_chip(card: VpcdCard) -> None:
    reader = ChipReader()
    reader.connect()
    try:
        reader.select_application()
        _, sw = reader.transmit(bytes.fromhex("00A4020C020101"))
        assert sw == bytes.fromhex("6982")
        _, sw = reader.transmit(bytes.fromhex("00B0000004"))
        assert sw == bytes.fromhex("6982")
    finally:
        reader.close()


def test_cccd_read_command_with_the_simulated_citizen(pcsc: int, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    csca = tmp_path / "csca.pem"
    sim = subprocess.Popen(
        [sys.executable, "-m", "biblioedge", "cccd", "simulate", "--csca-out", str(csca)]
        + ["--port", str(pcsc)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()
        assert "card on the reader" in line, line
        qr = sim.stdout.readline().split("--qr ", 1)[1].strip().strip("'")
        time.sleep(1.0)

        def read(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "biblioedge", "cccd", "read", *args],
                capture_output=True,
                text=True,
                timeout=120,
            )

        out = read("--qr", qr, "--csca", str(csca), "--json")
        assert out.returncode == 0, out.stderr[-2000:]
        doc = json.loads(out.stdout)
        assert (
            doc["id_number"] == "001190012345" and doc["personal"]["full_name"] == "Nguyễn Thị Bình"
        )
        assert doc["personal"]["father_name"] == "Nguyễn Văn Ba"
        assert doc["photo"]["format"] == "jpeg" and doc["photo"]["bytes"] > 1000
        assert doc["passive_authentication"]["verified"] is True
        assert "reading DG2" in out.stderr  # progress
        assert doc["seconds"] < 30 and doc["access"] == "PACE"
        # a wrong birth date in the QR: PACE needs only the CAN, so the card still opens
        assert json.loads(read("--qr", qr.replace("15031990", "16031990"), "--json").stdout)
        untrusted = json.loads(read("--qr", qr, "--json").stdout)
        assert untrusted["passive_authentication"]["chain"] == "unknown_csca"
        wrong = read("--qr", qr.replace("001190012345", "001190012399"))  # another card's QR
        assert wrong.returncode == 2 and "check the card" in wrong.stderr
        bac = read("--mrz-info", MRZ_INFO.replace("90031", "90041"))
        assert bac.returncode == 2 and "check the card" in bac.stderr
    finally:
        sim.terminate()
        sim.wait(10)


def test_card_pulled_out_mid_read_then_read_again(pcsc: int) -> None:
    from biblioedge.drivers.cccd.chip import CardRemoved

    vc = VpcdCard(CccdChip(MRZ_INFO, chip_files()), port=pcsc)
    vc.insert()
    time.sleep(1.0)
    pulled: list[bool] = []

    def progress(name: str, done: int, total: int) -> None:
        if name == "DG2" and done > 2000 and not pulled:
            pulled.append(True)
            vc.remove()  # the reader's hand takes the card away

    try:
        with pytest.raises(CardRemoved):
            ChipReader(progress=progress).read(MRZ_INFO, ("DG1", "DG2"))
        time.sleep(2.0)  # the card is put back a moment later
        vc = VpcdCard(CccdChip(MRZ_INFO, chip_files()), port=pcsc)
        vc.insert()  # a plain retry reads everything, once pcscd sees the card
        deadline = time.monotonic() + 15
        while True:
            try:
                again = ChipReader().read(MRZ_INFO, ("DG1", "DG2"))
                break
            except CardRemoved:
                assert time.monotonic() < deadline, "card never seen again"
                time.sleep(0.3)
        assert again.files["DG2"] == chip_files()[0x0102]
    finally:
        vc.remove()


def test_pace_with_the_can_through_pcscd_and_bac_fallbacks(pcsc: int) -> None:
    from biblioedge.drivers.cccd.card import read_card
    from biblioedge.drivers.cccd.chip import PaceRefused

    chip = CccdChip(MRZ_INFO, chip_files(), can="012345")
    vc = VpcdCard(chip, port=pcsc)
    vc.insert()
    time.sleep(1.0)
    try:
        result = ChipReader().read(None, ("DG1", "DG2"), can="012345")
        assert result.access == "PACE" and chip.pace_runs == 1
        assert result.files["DG2"] == chip_files()[0x0102]
        with pytest.raises(PaceRefused, match="check the card"):
            ChipReader().read(None, ("DG1",), can="999999")
        assert chip.pace_runs == 2  # refused once, not retried
        # a refused CAN falls back to BAC with the MRZ data (its own try counter)
        card_result = ChipReader().read(MRZ_INFO, ("DG1",), can=None)
        assert card_result.access == "BAC"
    finally:
        vc.remove()
    # a whole card: a refused CAN costs one PACE try, then BAC with the MRZ data opens it
    import cv2
    import numpy as np

    _, jpeg = cv2.imencode(".jpg", np.full((160, 120, 3), 128, np.uint8))
    citizen, _ = demo_citizen(jpeg.tobytes())
    whole = CccdChip(citizen.mrz_information(), sim_files(citizen.files(make_pki())), can="000000")
    vc = VpcdCard(whole, port=pcsc)
    vc.insert()
    time.sleep(1.0)
    try:
        card = read_card([citizen.mrz_information()], can=citizen.can)
        assert card.read.access == "BAC" and whole.pace_runs == 1
        assert card.personal["full_name"] == "Nguyễn Thị Bình"
    finally:
        vc.remove()
    plain = VpcdCard(CccdChip(MRZ_INFO, chip_files()), port=pcsc)  # an older chip without PACE
    plain.insert()
    time.sleep(1.0)
    try:
        assert ChipReader().read(MRZ_INFO, ("DG1",), can="012345").access == "BAC"
    finally:
        plain.remove()


def test_our_own_vpcd_port_is_outside_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any outgoing connection may hold a port of the ephemeral range, and vpcd would fail to
    listen there: the pcscd the demo and the tests start uses ports below it."""
    from biblioedge.provisioning import pcsc

    for low, high in ((32768, 60999), (15000, 60999), (1024, 30000)):
        monkeypatch.setattr(pcsc, "ephemeral_range", lambda r=(low, high): r)
        ports = pcsc.own_ports()
        assert ports and all(not low <= p <= high and 1024 <= p <= 65535 for p in ports), ports
    monkeypatch.setattr(pcsc, "ephemeral_range", lambda: (40000, 60999))
    assert pcsc.own_ports()[0] == pcsc.VPCD_PORT  # Debian's default where nothing takes it


def test_a_vpcd_port_that_accepts_but_never_talks_is_not_a_reader(pcsc: int) -> None:
    """A pcscd the demo did not start may hold its vpcd port without serving cards (a stuck
    one, another session's): the demo then says so instead of timing out mid-story."""
    import socket

    from biblioedge.provisioning.pcsc import vpcd_answers

    assert vpcd_answers(pcsc)  # the session's pcscd: vpcd speaks first to a card
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks
        assert not vpcd_answers(silent.getsockname()[1], within=3.0)

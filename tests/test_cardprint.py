"""The printed library card: the gate must be able to read what the desk printed."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from biblioedge.cardtoken import CardVerifier, issue, load_public_key, public_key_b64
from biblioedge.drivers.cardprint import (
    CARD_PX,
    CardFace,
    CardPrinter,
    escpos_raster,
    parse_escpos_raster,
    render_card,
    render_receipt,
)
from biblioedge.drivers.codes import ZxingDecoder
from biblioedge.drivers.errors import DriverError


@pytest.fixture(scope="module")
def card() -> tuple[CardFace, CardVerifier]:
    key = Ed25519PrivateKey.generate()
    token = issue(key, "k1", "c-1", "BE0000042", valid_days=30)
    verifier = CardVerifier({"k1": load_public_key(public_key_b64(key))})
    face = CardFace("Thư viện tỉnh", "Nguyễn Thị Bình", "BE0000042", "2030-03-15", token)
    return face, verifier


def gray(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"))


def test_card_png_pdf_carry_a_token_the_gate_verifies(
    tmp_path: Path, card: tuple[CardFace, CardVerifier]
) -> None:
    face, verifier = card
    printer = CardPrinter(f"dir:{tmp_path}")
    written = printer.print_card(face)
    assert [Path(p).name for p in written] == ["BE0000042.png", "BE0000042.pdf"]
    png = cv2.imread(str(tmp_path / "BE0000042.png"))
    assert png.shape[:2] == (CARD_PX[1], CARD_PX[0])  # ID-1 at 300 dpi
    (code,) = ZxingDecoder().decode(png)
    assert verifier.verify(code.text).pid == "BE0000042"
    assert (tmp_path / "BE0000042.pdf").read_bytes().startswith(b"%PDF")


def test_receipt_printer_gets_an_escpos_raster_with_the_same_qr(
    tmp_path: Path, card: tuple[CardFace, CardVerifier]
) -> None:
    face, verifier = card
    device = tmp_path / "lp0"  # a receipt printer's device node is written the same way
    assert CardPrinter(f"escpos:{device}").print_card(face) == [str(device)]
    data = device.read_bytes()
    assert data.startswith(b"\x1b\x40") and data.endswith(b"\x1d\x56\x42\x00")  # init, cut
    img = parse_escpos_raster(data)
    assert img.width == 576
    (code,) = ZxingDecoder().decode(cv2.cvtColor(np.asarray(img), cv2.COLOR_GRAY2BGR))
    assert verifier.verify(code.text).pid == "BE0000042"
    with pytest.raises(DriverError, match="truncated"):
        parse_escpos_raster(data[:200])
    with pytest.raises(DriverError, match="unavailable|receipt printer"):
        CardPrinter(f"escpos:{tmp_path}/missing/lp0").print_card(face)


def test_chip_photo_only_when_configured_and_jpeg2000_works(
    card: tuple[CardFace, CardVerifier],
) -> None:
    face, _ = card
    photo = np.zeros((320, 240, 3), np.uint8)
    photo[:, :, 2] = 200  # a red portrait, easy to find on the card
    ok, jp2 = cv2.imencode(".jp2", photo)
    assert ok
    plain = np.asarray(render_card(face))
    with_photo = np.asarray(render_card(CardFace(**{**face.__dict__, "photo": jp2.tobytes()})))
    red = (with_photo[:, :, 0] > 150) & (with_photo[:, :, 1] < 60)
    assert (
        red[130:400, 36:246].mean() > 0.5
        and not ((plain[:, :, 0] > 150) & (plain[:, :, 1] < 60))[130:400, 36:246].any()
    )
    broken = CardFace(**{**face.__dict__, "photo": b"not an image"})
    assert render_card(broken).size == CARD_PX  # printed without the photo, not a crash


def test_bad_printer_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="printer"):
        CardPrinter("lpt1")
    assert CardPrinter("none").print_card(CardFace("a", "b", "c", "2030-01-01", "t")) == []


def test_receipt_raster_round_trip() -> None:
    img = Image.new("L", (16, 2), 255)
    img.putpixel((0, 0), 0)
    img.putpixel((15, 1), 0)
    back = parse_escpos_raster(escpos_raster(img))
    assert back.size == (16, 2) and back.getpixel((0, 0)) == 0 and back.getpixel((15, 1)) == 0
    assert back.getpixel((1, 0)) == 255
    assert render_receipt(CardFace("TV", "An", "BE1", "2030-01-01", "BE1.x.y")).width == 576


def test_a_loan_receipt_prints_as_escpos_raster_and_carries_no_name(tmp_path: Path) -> None:
    from biblioedge.drivers.receipt import Receipt, ReceiptPrinter, render

    slip = Receipt(
        "Thư viện tỉnh",
        "0102",
        "02/12/2026 10:15",
        [("Truyện Kiều — Nguyễn Du", "16/12/2026"), ("Số đỏ", "16/12/2026")],
        offline=True,
    )
    device = tmp_path / "lp0"
    printer = ReceiptPrinter(f"escpos:{device}")
    assert printer.print(slip) == str(device)
    img = parse_escpos_raster(device.read_bytes())
    assert img.width == 576 and img.height == render(slip).height
    assert (np.asarray(img) < 128).mean() > 0.01  # text was printed
    assert "…0102" in slip.text() and "Mượn khi mất kết nối" in slip.text()
    assert ReceiptPrinter("screen").print(slip) is None
    with pytest.raises(ValueError, match="receipt"):
        ReceiptPrinter("lpt:1")


def test_a_card_printed_before_the_library_system_assigned_the_number(
    tmp_path: Path, card: tuple[CardFace, CardVerifier]
) -> None:
    """``[ils] card_numbers = "ils"``: the card says the number is pending (never central's
    number, which the library system will not know), its QR works, its files keep the
    patron number's name."""
    face, verifier = card
    pending = CardFace(**{**face.__dict__, "card_number": ""})
    assigned = CardFace(**{**face.__dict__, "card_number": "00000042"})
    assert (pending.number, assigned.number, face.number) == ("", "00000042", "BE0000042")
    written = CardPrinter(f"dir:{tmp_path}").print_card(pending)
    assert [Path(p).name for p in written] == ["BE0000042.png", "BE0000042.pdf"]
    (code,) = ZxingDecoder().decode(cv2.imread(str(tmp_path / "BE0000042.png")))
    assert verifier.verify(code.text).pid == "BE0000042"
    # the three cards differ where the number goes, and only there
    a, b, c = (gray(render_card(f)) for f in (pending, assigned, face))
    assert not np.array_equal(a, b) and not np.array_equal(b, c)
    assert np.array_equal(a[:280], b[:280])

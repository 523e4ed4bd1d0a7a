"""The library card on paper: a PNG or PDF for a card printer, a raster for a receipt printer.

The card is ID-1 (85.6 x 54 mm) at 300 dpi: library name, "THẺ BẠN ĐỌC", the reader's name,
patron number, expiry and the signed QR token the gates verify; the chip photo only when the
desk is configured to print it (it is used in memory and never written anywhere else).
Receipt printers get ESC/POS ``GS v 0`` raster images rather than text, so Vietnamese
diacritics print right on any printer, whatever code pages it has.

Printers are named by a spec: ``none``, ``dir:/path`` (PNG + PDF files, e.g. a folder a card
printer's spooler watches), ``escpos:/dev/usb/lp0`` (raw bytes to a receipt printer, also a
serial port or a file) or ``cups:QUEUE`` (``lp -d QUEUE`` with the PDF).
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import segno
from PIL import Image, ImageDraw, ImageFont

from biblioedge.drivers.errors import DeviceUnavailable, DriverError

DPI = 300
CARD_PX = (1011, 638)  # 85.6 x 54 mm at 300 dpi
RECEIPT_DOTS = 576  # 80 mm paper at 203 dpi (58 mm printers: 384)


#: printed where the number goes while the library system has not assigned it yet
PENDING_NUMBER = "Chờ cấp số / No. pending"


@dataclass(frozen=True)
class CardFace:
    library: str
    name: str
    patron_id: str
    expires: str  # YYYY-MM-DD
    token: str
    photo: bytes | None = None  # JPEG/JPEG 2000 from the chip, when configured
    #: the number printed: the one the library system holds (None: the patron number; "":
    #: not assigned yet, the card says so and is printed again once it is)
    card_number: str | None = None

    @property
    def number(self) -> str:
        return self.patron_id if self.card_number is None else self.card_number


def font_path() -> Path:
    """A TrueType font with Vietnamese glyphs: Kivy's DejaVu Sans, else the system's."""
    spec = importlib.util.find_spec("kivy")
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / "data" / "fonts" / "DejaVuSans.ttf")
    candidates += [
        Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
        Path("/usr/share/fonts/TTF/DejaVuSans.ttf"),
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise DeviceUnavailable("no DejaVuSans.ttf (install kivy or fonts-dejavu-core)")


def _font(size: int) -> Any:
    return ImageFont.truetype(str(font_path()), size)


def qr_image(token: str, box: int) -> Image.Image:
    """The token as a QR of ``box`` pixels, error correction M, quiet zone kept."""
    qr = segno.make(token, error="m", micro=False)
    rows = [[bool(v) for v in row] for row in qr.matrix]
    n = len(rows) + 8  # 4-module quiet zone each side
    scale = max(1, box // n)
    img = Image.new("L", (n, n), 255)
    px = img.load()
    assert px is not None
    for y, row in enumerate(rows):
        for x, dark in enumerate(row):
            if dark:
                px[x + 4, y + 4] = 0
    return img.resize((n * scale, n * scale), Image.Resampling.NEAREST)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def fit_font(draw: ImageDraw.ImageDraw, text: str, size: int, width: int) -> Any:
    """The largest font up to ``size`` that fits ``text`` in ``width`` pixels."""
    while size > 14:
        font = _font(size)
        if draw.textlength(text, font=font) <= width:
            return font
        size -= 2
    return _font(size)


def render_card(card: CardFace) -> Image.Image:
    w, h = CARD_PX
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, w, 96), fill=(18, 82, 140))
    draw.text(
        (36, 48),
        _nfc(card.library).upper(),
        font=fit_font(draw, _nfc(card.library).upper(), 36, w - 72),
        fill="white",
        anchor="lm",
    )
    qr = qr_image(card.token, 360)
    img.paste(qr.convert("RGB"), (w - qr.width - 24, h - qr.height - 24))
    left = 36
    if card.photo:
        photo = _photo(card.photo, (210, 270))
        if photo is not None:
            img.paste(photo, (36, 130))
            left = 36 + 210 + 28
    text_w = w - qr.width - 24 - left - 12
    draw.text((left, 140), "THẺ BẠN ĐỌC · LIBRARY CARD", font=_font(26), fill=(18, 82, 140))
    name = _nfc(card.name).upper()
    draw.text((left, 200), name, font=fit_font(draw, name, 44, text_w), fill="black")
    draw.text((left, 290), "Số thẻ / No.", font=_font(22), fill=(90, 90, 90))
    if card.number:
        draw.text((left, 318), card.number, font=_font(48), fill="black")
    else:  # the library system assigns the number later: this card is reprinted then
        draw.text((left, 326), PENDING_NUMBER, font=_font(30), fill="black")
    draw.text((left, 410), "Hạn dùng / Valid until", font=_font(22), fill=(90, 90, 90))
    draw.text((left, 438), _vn_date(card.expires), font=_font(36), fill="black")
    return img


def _vn_date(iso: str) -> str:
    y, _, rest = iso.partition("-")
    m, _, d = rest.partition("-")
    return f"{d[:2]}/{m}/{y}" if d else iso


def _photo(data: bytes, size: tuple[int, int]) -> Image.Image | None:
    try:
        photo = Image.open(io.BytesIO(data)).convert("RGB")
    except Exception:  # JPEG 2000 without OpenJPEG, or a damaged image: print without it
        return None
    photo.thumbnail(size)
    return photo


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", dpi=(DPI, DPI))
    return buf.getvalue()


def pdf_bytes(img: Image.Image) -> bytes:
    """A one-page PDF the exact size of the card (the page is the image at 300 dpi)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PDF", resolution=DPI)
    return buf.getvalue()


def render_receipt(card: CardFace, width: int = RECEIPT_DOTS) -> Image.Image:
    lines = [
        (_nfc(card.library).upper(), 28),
        ("THẺ BẠN ĐỌC", 34),
        (_nfc(card.name).upper(), 30),
        (f"Số thẻ: {card.number or PENDING_NUMBER}", 30),
        (f"Hạn dùng: {_vn_date(card.expires)}", 26),
    ]
    qr = qr_image(card.token, min(width - 40, 400))
    height = 30 + sum(size + 18 for _, size in lines) + qr.height + 110
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    y = 20
    for text, size in lines:
        font = fit_font(draw, text, size, width - 24)
        draw.text((width // 2, y), text, font=font, fill=0, anchor="mt")
        y += size + 18
    img.paste(qr, ((width - qr.width) // 2, y))
    y += qr.height + 10
    note = "Quét mã tại cổng để vào thư viện"
    draw.text((width // 2, y), note, font=fit_font(draw, note, 22, width - 24), fill=0, anchor="mt")
    return img


def escpos_raster(img: Image.Image) -> bytes:
    """ESC @, the image as ``GS v 0`` raster (1 = black dot), feed and partial cut."""
    mono = img.convert("L").point(lambda v: 0 if v < 128 else 255, "1")
    w, h = mono.size
    width_bytes = (w + 7) // 8
    data = bytearray()
    px = mono.load()
    assert px is not None
    for y in range(h):
        for xb in range(width_bytes):
            byte = 0
            for bit in range(8):
                x = xb * 8 + bit
                if x < w and px[x, y] == 0:
                    byte |= 0x80 >> bit
            data.append(byte)
    header = b"\x1d\x76\x30\x00" + bytes([width_bytes & 0xFF, width_bytes >> 8, h & 0xFF, h >> 8])
    return b"\x1b\x40" + header + bytes(data) + b"\n\n\n\n" + b"\x1d\x56\x42\x00"


def parse_escpos_raster(data: bytes) -> Image.Image:
    """The image back from :func:`escpos_raster` output (tests and the printer simulator)."""
    start = data.find(b"\x1d\x76\x30")
    if start < 0:
        raise DriverError("no GS v 0 raster in the data")
    hdr = data[start + 4 : start + 8]
    if len(hdr) < 4:
        raise DriverError("truncated raster header")
    width_bytes, h = hdr[0] | hdr[1] << 8, hdr[2] | hdr[3] << 8
    body = data[start + 8 : start + 8 + width_bytes * h]
    if len(body) < width_bytes * h:
        raise DriverError("truncated raster data")
    img = Image.frombytes("1", (width_bytes * 8, h), bytes(b ^ 0xFF for b in body))
    return img.convert("L")


class CardPrinter:
    """Sends a card to the configured printer; ``printed`` lists what went where."""

    def __init__(self, spec: str) -> None:
        kind, _, target = spec.partition(":")
        if spec != "none" and (kind not in ("dir", "escpos", "cups") or not target):
            raise ValueError(f"printer {spec!r} is not none, dir:PATH, escpos:DEVICE or cups:QUEUE")
        self.kind = "none" if spec == "none" else kind
        self.target = target
        self.printed: list[str] = []

    def print_card(self, card: CardFace) -> list[str]:
        """Blocking I/O: call from a worker thread. Returns what was written (paths/queues)."""
        if self.kind == "none":
            return []
        if self.kind == "escpos":
            data = escpos_raster(render_receipt(card))
            try:
                with open(self.target, "wb") as dev:
                    dev.write(data)
            except OSError as exc:
                raise DeviceUnavailable(f"receipt printer {self.target}: {exc}") from exc
            out = [self.target]
        else:
            img = render_card(card)
            if self.kind == "dir":
                folder = Path(self.target)
                folder.mkdir(parents=True, exist_ok=True)
                png, pdf = folder / f"{card.patron_id}.png", folder / f"{card.patron_id}.pdf"
                png.write_bytes(png_bytes(img))
                pdf.write_bytes(pdf_bytes(img))
                out = [str(png), str(pdf)]
            else:
                lp = shutil.which("lp")
                if lp is None:
                    raise DeviceUnavailable("cups printing needs the lp command (cups-client)")
                proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
                    [lp, "-d", self.target, "-o", "media=Custom.85.6x54mm", "-"],
                    input=pdf_bytes(img),
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
                if proc.returncode != 0:
                    raise DeviceUnavailable(f"lp: {proc.stderr.decode(errors='replace')[:200]}")
                out = [f"cups:{self.target}"]
        self.printed += out
        return out

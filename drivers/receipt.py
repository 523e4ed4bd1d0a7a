"""The loan receipt: printed on the kiosk's ESC/POS printer (or saved as PNG), or shown on the
screen as a QR the reader photographs. Titles and due dates only: no name, no card number
beyond its last four characters."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from biblioedge.drivers.cardprint import RECEIPT_DOTS, escpos_raster, fit_font, png_bytes
from biblioedge.drivers.errors import DeviceUnavailable


@dataclass(frozen=True)
class Receipt:
    library: str
    patron_tail: str
    when: str  # dd/mm/yyyy hh:mm
    loans: list[tuple[str, str]]  # (title, due dd/mm/yyyy)
    offline: bool = False

    def text(self) -> str:
        """Plain text (the on-screen QR carries it)."""
        lines = [self.library, f"Phiếu mượn {self.when}", f"Bạn đọc …{self.patron_tail}"]
        lines += [f"- {title} — hạn trả {due}" for title, due in self.loans]
        if self.offline:
            lines.append("Mượn khi mất kết nối: hệ thống sẽ ghi nhận sau")
        return unicodedata.normalize("NFC", "\n".join(lines))


def render(receipt: Receipt, width: int = RECEIPT_DOTS) -> Image.Image:
    rows = [(receipt.library.upper(), 28), ("PHIẾU MƯỢN SÁCH", 32), (receipt.when, 24)]
    rows.append((f"Bạn đọc …{receipt.patron_tail}", 24))
    for title, due in receipt.loans:
        rows += [(title, 24), (f"   Hạn trả: {due}", 24)]
    if receipt.offline:
        rows.append(("Mượn ngoại tuyến: sẽ đồng bộ sau", 22))
    height = 30 + sum(size + 14 for _, size in rows) + 40
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    y = 20
    for text, size in rows:
        font = fit_font(draw, unicodedata.normalize("NFC", text), size, width - 24)
        draw.text((12, y), unicodedata.normalize("NFC", text), font=font, fill=0)
        y += size + 14
    return img


class ReceiptPrinter:
    """``none``, ``screen`` (nothing printed: the screen shows a QR), ``dir:<folder>`` or
    ``escpos:<device>``."""

    def __init__(self, spec: str) -> None:
        kind, _, target = spec.partition(":")
        if spec not in ("none", "screen") and (kind not in ("dir", "escpos") or not target):
            raise ValueError(f"receipt {spec!r} is not none, screen, dir:PATH or escpos:DEVICE")
        self.kind = spec if spec in ("none", "screen") else kind
        self.target = target
        self.printed = 0

    @property
    def prints(self) -> bool:
        return self.kind in ("dir", "escpos")

    def print(self, receipt: Receipt) -> str | None:
        """Blocking I/O (a worker thread). Where it went, or None when nothing is printed."""
        if not self.prints:
            return None
        img = render(receipt)
        self.printed += 1
        if self.kind == "dir":
            folder = Path(self.target)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"receipt-{self.printed:05d}.png"
            path.write_bytes(png_bytes(img))
            return str(path)
        try:
            with open(self.target, "wb") as dev:
                dev.write(escpos_raster(img))
        except OSError as exc:
            raise DeviceUnavailable(f"receipt printer {self.target}: {exc}") from exc
        return self.target

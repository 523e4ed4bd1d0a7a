"""The self-check's section of the agent configuration (``[selfcheck]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from biblioedge.settings import StrictModel


class SelfcheckConfig(StrictModel):
    enabled: bool = Field(default=False, description="Run the self-check flow (role selfcheck)")
    ils: str = Field(
        default="",
        max_length=500,
        description="The library system: sip2://USER@HOST:PORT?institution=I&location=L&"
        "encoding=E (sip2s:// for TLS; also error_detection, terminator, timeout, cafile)",
    )
    password_file: Path | None = Field(
        default=None, description="File holding the SIP2 account's password (kept out of here)"
    )
    rfid: str = Field(
        default="none",
        pattern=r"^(none|m810:/.+|sim)$",
        description="none, m810:<serial port> (3M/Bibliotheca 810) or sim (a simulated pad)",
    )
    afi_secured: int = Field(default=0x07, ge=0, le=255, description="AFI on the shelf")
    afi_loaned: int = Field(default=0xC2, ge=0, le=255, description="AFI when lent")
    scanner: str = Field(
        default="none",
        pattern=r"^(none|serial:/.+)$",
        description="none or serial:<port>: the scanner for card QR, CCCD QR and barcodes",
    )
    pepper_file: Path | None = Field(
        default=None,
        description="The desks' secret for the keyed hash of ID numbers (finds a reader by the "
        "CCCD QR); without it the CCCD QR is not accepted",
    )
    offline_max_items: int = Field(
        default=5, ge=0, le=50, description="Items a reader may borrow while the system is away"
    )
    offline_loan_days: int = Field(default=14, ge=1, le=120, description="Offline due date")
    probe_s: float = Field(
        default=15.0, gt=0, le=3600, description="How often to ask whether the system is back"
    )
    session_timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="A session with no activity ends by itself"
    )
    library_name: str = Field(
        default="Thư viện tỉnh", min_length=1, max_length=80, description="On the receipt"
    )
    receipt: str = Field(
        default="screen",
        pattern=r"^(none|screen|dir:.+|escpos:.+)$",
        description="screen (a QR), dir:<folder> (PNG) or escpos:<device> (receipt printer)",
    )
    camera: str = Field(
        default="none",
        description="Face identification: none, or the camera facing the reader (as "
        "gate.camera, sim:<folder> too); only readers who consented to face_selfcheck",
    )
    camera_fps: float = Field(default=5.0, gt=0, le=30, description="Frames per second")
    face_threshold: float | None = Field(
        default=None, gt=0, lt=1, description="1:N threshold (the engine's if unset)"
    )
    liveness: Literal["off", "motion"] = Field(
        default="motion", description="Presentation-attack check before a face is accepted"
    )
    demo_reader: bool = Field(
        default=False,
        description="Demo only: a simulated reader borrows and returns books on the sim pad",
    )

    @model_validator(mode="after")
    def _library_system(self) -> SelfcheckConfig:
        if not self.enabled:
            return self
        if not self.ils:
            raise ValueError("selfcheck.ils: the library system's sip2:// URL is required")
        from biblioedge.drivers.sip2.client import Account

        try:
            Account.from_url(self.ils)
        except ValueError as exc:
            raise ValueError(f"selfcheck.ils: {exc}") from None
        if self.rfid == "none":
            raise ValueError("selfcheck.rfid: the pad's reader, m810:<serial port> or sim")
        if self.pepper_file is not None and not self.pepper_file.is_file():
            raise ValueError(f"selfcheck.pepper_file {self.pepper_file} does not exist")
        if self.password_file is not None:
            try:
                self.password_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"selfcheck.password_file {self.password_file}: cannot be read ({exc})"
                ) from None
        return self

    def account(self) -> Any:
        """The SIP2 account, with the password from its file."""
        from dataclasses import replace

        from biblioedge.drivers.sip2.client import Account

        account = Account.from_url(self.ils)
        if self.password_file is not None:
            secret = self.password_file.read_text(encoding="utf-8").strip()
            account = replace(account, password=secret)
        return account

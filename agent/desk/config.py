"""The card desk's section of the agent configuration (``[desk]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from biblioedge.settings import StrictModel

KeptField = Literal["date_of_birth", "gender", "address", "nationality", "ethnicity"]


class DeskConfig(StrictModel):
    enabled: bool = Field(default=False, description="Run the card desk flow (role desk)")
    camera: str = Field(
        default="0", description="Camera facing the reader: as gate.camera (sim:<folder> too)"
    )
    camera_fps: float = Field(default=15.0, gt=0, le=60, description="Frames per second")
    qr_from_camera: bool = Field(
        default=True, description="Read the CCCD's QR when it is held up to the camera"
    )
    scanner: str = Field(
        default="none",
        pattern=r"^(none|serial:/.+)$",
        description="none or serial:<port>: a hand scanner for the CCCD's QR",
    )
    chip: bool = Field(default=True, description="Read the CCCD chip (PC/SC); off: QR only")
    reader: str | None = Field(default=None, description="PC/SC reader name (substring)")
    csca_dir: Path | None = Field(
        default=None, description="Trusted CSCA certificates (PEM or DER files) for the chip"
    )
    printer: str = Field(
        default="none",
        pattern=r"^(none|dir:.+|escpos:.+|cups:.+)$",
        description="none, dir:<folder> (PNG+PDF), escpos:<device> (receipt) or cups:<queue>",
    )
    librarian: str = Field(
        default="librarian", min_length=1, max_length=64, description="Who staffs the desk"
    )
    library_name: str = Field(default="Thư viện tỉnh", description="Printed on the card")
    consent_version: str = Field(
        default="vi-2026-1", min_length=1, max_length=32, description="Consent text version"
    )
    keep_fields: list[KeptField] = Field(
        default_factory=lambda: list[KeptField](["date_of_birth", "gender"]),
        description="Citizen-ID fields sent to central besides the name (data minimization)",
    )
    card_photo: bool = Field(
        default=False, description="Print the chip photo on the card (never stored or sent)"
    )
    card_valid_days: int = Field(default=1460, ge=1, le=3650, description="Card validity")
    templates: int = Field(default=3, ge=1, le=8, description="Live face templates enrolled")
    face_threshold: float | None = Field(
        default=None, gt=0, lt=1, description="1:1 threshold vs the chip photo (engine's if unset)"
    )
    demo_librarian: bool = Field(
        default=False,
        description="Demo only: a simulated librarian answers the screens (consent, next)",
    )
    majority_age: int = Field(
        default=16,
        ge=1,
        le=30,
        description="Readers younger than this on the day at the desk need a guardian's CCCD and "
        "consent (VN: a child is under 16, Law on Children 2016 art. 1; Decree 13/2023 art. 20)",
    )
    own_consent_from: int = Field(
        default=7,
        ge=0,
        le=30,
        description="From this age a minor's own consent is asked too (Decree 13/2023 art. 20)",
    )
    face_for_minors: bool = Field(
        default=False,
        description="Offer face enrollment to minors (the child's and the guardian's consent)",
    )
    timezone: str = Field(
        default="Asia/Ho_Chi_Minh",
        description="The library's time zone: a reader's age counts on its day at the desk "
        "(central's [reports] timezone must be the same)",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        """An unknown zone is refused at load, not at the first child's registration."""
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    pepper_file: Path | None = Field(
        default=None,
        description="Secret for the keyed hash of ID numbers; the same file on every desk of "
        "the library lets central recognise a returning reader (default: a per-desk key)",
    )

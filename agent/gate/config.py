"""The entry gate's section of the agent configuration (``[gate]``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from biblioedge.settings import StrictModel


class GateConfig(StrictModel):
    enabled: bool = Field(default=False, description="Run the gate flow (role gate)")
    camera: str = Field(
        default="0",
        description="V4L2 index or path (0, /dev/video0), rtsp:// or http:// URL, a video "
        "file, or sim:<folder> for the simulated camera",
    )
    camera_width: int | None = Field(default=1280, description="Requested frame width")
    camera_height: int | None = Field(default=720, description="Requested frame height")
    camera_fps: float = Field(default=15.0, gt=0, le=60, description="Frames per second")
    decoder: Literal["zxing", "pyzbar"] = Field(default="zxing", description="QR decoder")
    relay: str = Field(
        default="none",
        pattern=r"^(none|sim|line:/.+|ch340:/.+)$",
        description="none, line:<port> (turnstile line protocol), ch340:<port> (USB relay), "
        "or sim (a simulated turnstile on a pseudo-terminal)",
    )
    pulse_ms: int = Field(default=1500, ge=50, le=60_000, description="Unlock time per grant")
    passback_s: float = Field(default=300.0, ge=0, description="Anti-passback window")
    cooldown_s: float = Field(default=4.0, ge=0, description="One decision per approach")
    liveness: Literal["off", "motion"] = Field(default="off", description="Liveness check")
    min_eye_distance_px: float = Field(default=36.0, gt=0, description="Smallest face tried")
    idle_after_s: float = Field(
        default=2.0,
        ge=0,
        le=600,
        description="Nothing moved and no face this long: the gate idles (no face detector, "
        "no code reader) until something moves; 0 looks at every frame",
    )
    card_keys: dict[str, str] = Field(
        default_factory=dict, description="Central's card-signing public keys, kid -> base64url"
    )
    allow_unknown_patrons: bool = Field(
        default=False, description="Let in valid cards of readers missing from the local cache"
    )

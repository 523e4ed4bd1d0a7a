"""The kiosk's screen and sound settings (``[screen]`` and ``[sound]`` in the agent's TOML).

They live apart from the role sections because every role with a screen shares them: the
library's name and logo at the top of each screen, and the short sounds and spoken prompts
that tell a reader what happened without reading (issue 26). Volume and on/off are tunable
from central (a noisy lobby, a quiet reading room), the engine and output only locally.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from biblioedge.settings import StrictModel


class ScreenConfig(StrictModel):
    library_name: str = Field(
        default="Thư viện tỉnh",
        min_length=1,
        max_length=60,
        description="The library's name, shown at the top of every kiosk screen",
    )
    logo: Path | None = Field(
        default=None,
        description="The library's logo (PNG or JPEG), shown beside its name; none: the name only",
    )


class SoundConfig(StrictModel):
    enabled: bool = Field(default=True, description="Short sounds for grant, refusal and alarm")
    speech: bool = Field(default=True, description="Spoken prompts (Vietnamese first)")
    volume: int = Field(default=70, ge=0, le=100, description="Loudness, 0 (silent) to 100")
    engine: str = Field(
        default="espeak-ng",
        min_length=1,
        description="The offline speech engine (espeak-ng, from Debian); missing: prompts off",
    )
    voice: str = Field(
        default="vi", min_length=1, max_length=40, description="The engine's voice (vi: Northern)"
    )
    rate_wpm: int = Field(default=150, ge=80, le=300, description="Speaking rate, words a minute")
    say_names: bool = Field(
        default=False,
        description="Speak the reader's name in greetings (the screen shows it either way); "
        "off by default: a lobby hears what only the reader sees",
    )
    output: str = Field(
        default="aplay",
        description="Where sound goes: aplay (ALSA), none, or dir:<folder> (WAV files, for tests)",
    )

    @field_validator("output")
    @classmethod
    def _output(cls, value: str) -> str:
        if value in ("aplay", "none") or (value.startswith("dir:") and len(value) > 4):
            return value
        raise ValueError("output is aplay, none or dir:<folder>")

"""The exit gate's section of the agent configuration (``[exitgate]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from biblioedge.settings import StrictModel


class ExitgateConfig(StrictModel):
    enabled: bool = Field(default=False, description="Run the exit security gate (role exitgate)")
    rfid: str = Field(
        default="none",
        pattern=r"^(none|m810:/.+|sim)$",
        description="The reader at the exit in continuous inventory: m810:<serial port> "
        "(3M/Bibliotheca 810 protocol) or sim (a simulated reader, demo and tests)",
    )
    afi_secured: int = Field(
        default=0x07,
        ge=0,
        le=255,
        description="AFI the self-checks write on the shelf (as selfcheck.afi_secured); every "
        "known secured variant (0x07 ISO, 0xD7 3M) alarms too",
    )
    afi_loaned: int = Field(
        default=0xC2, ge=0, le=255, description="AFI the self-checks write on loan"
    )
    mode: Literal["afi", "smart"] = Field(
        default="afi",
        description="afi: alarm on a secured AFI; smart: also alarm when the library system "
        "says the item is not on loan (SIP2 17, cached; the AFI alone decides while it is away)",
    )
    ils: str = Field(
        default="",
        max_length=500,
        description="The library system (as selfcheck.ils): smart mode, and titles on the "
        "alarm screen; empty: none",
    )
    password_file: Path | None = Field(
        default=None, description="File holding the SIP2 account's password"
    )
    loan_cache_s: float = Field(
        default=60.0, ge=0, le=3600, description="How long an item's loan status is trusted"
    )
    probe_s: float = Field(
        default=15.0, gt=0, le=3600, description="How often to ask whether the system is back"
    )
    relay: str = Field(
        default="none",
        pattern=r"^(none|sim|line:/.+|ch340:/.+)$",
        description="The light and buzzer: none, ch340:<port> (USB relay board), "
        "line:<port> (gate line protocol: ALARM ON/OFF) or sim",
    )
    relay_channel: int = Field(default=1, ge=1, le=8, description="Relay board channel")
    pulse_ms: int = Field(default=3000, ge=50, le=60_000, description="Light and buzzer time")
    sound: str = Field(
        default="none",
        pattern=r"^(none|cmd:.+)$",
        description="none, or cmd:<command line> run on each alarm (e.g. cmd:aplay alarm.wav)",
    )
    realarm_s: float = Field(
        default=10.0,
        ge=0.5,
        le=3600,
        description="A tag that stays in the field alarms again only after this long",
    )
    forget_s: float = Field(
        default=2.0, gt=0, le=60, description="A tag not seen for this long has left the field"
    )
    alarm_show_s: float = Field(
        default=8.0, gt=0, le=600, description="How long the alarm screen stays up"
    )
    max_new_tags: int = Field(
        default=32,
        ge=1,
        le=256,
        description="New tags looked at per inventory; more (a flood) wait for the next ones",
    )
    counter: str = Field(
        default="none",
        pattern=r"^(none|sim|serial:/.+)$",
        description="Passage counter (beams, IN/OUT/HB lines): none, serial:<port> or sim",
    )
    counter_silence_s: float = Field(
        default=10.0, gt=0, le=600, description="A counter silent this long is reported down"
    )

    @model_validator(mode="after")
    def _parts(self) -> ExitgateConfig:
        if not self.enabled:
            return self
        if self.rfid == "none":
            raise ValueError("exitgate.rfid: the exit's reader, m810:<serial port> or sim")
        if self.afi_secured == self.afi_loaned:
            raise ValueError("exitgate.afi_secured and afi_loaned must differ")
        if self.mode == "smart" and not self.ils:
            raise ValueError("exitgate.mode smart asks the library system: set exitgate.ils")
        if self.ils:
            from biblioedge.drivers.sip2.client import Account

            try:
                Account.from_url(self.ils)
            except ValueError as exc:
                raise ValueError(f"exitgate.ils: {exc}") from None
        if self.password_file is not None:
            try:
                self.password_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"exitgate.password_file {self.password_file}: cannot be read ({exc})"
                ) from None
        if self.sound.startswith("cmd:"):
            import shlex

            try:
                if not shlex.split(self.sound[4:]):
                    raise ValueError("empty")
            except ValueError as exc:
                raise ValueError(f"exitgate.sound: not a command line ({exc})") from None
        return self

    def account(self) -> Any:
        """The SIP2 account with the password from its file, or None without one."""
        if not self.ils:
            return None
        from dataclasses import replace

        from biblioedge.drivers.sip2.client import Account

        account = Account.from_url(self.ils)
        if self.password_file is not None:
            secret = self.password_file.read_text(encoding="utf-8").strip()
            account = replace(account, password=secret)
        return account

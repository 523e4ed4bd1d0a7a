"""``[alerts]`` in central's config: which conditions, and who hears of them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from biblioedge.settings import StrictModel

#: Condition kinds IT can choose; each maps to what central watches (``rules.py``).
Kind = Literal[
    "offline",
    "never_seen",
    "degraded",
    "update_failed",
    "rollout_halted",
    "security",
    "backup_stale",
    "exit_reader_down",
    "ils_held",
]
DEFAULT_KINDS: list[Kind] = [
    "offline",
    "degraded",
    "update_failed",
    "rollout_halted",
    "security",
    "backup_stale",
]
WebhookFormat = Literal["generic", "slack", "mattermost", "google_chat", "teams", "telegram"]


class EmailTarget(StrictModel):
    host: str = Field(description="SMTP server")
    port: int = Field(default=587, ge=1, le=65535, description="587 (STARTTLS) or 465 (TLS)")
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="none only for a relay on the same network"
    )
    user: str | None = Field(default=None, description="SMTP user, if the server wants one")
    password_file: Path | None = Field(default=None, description="A file holding the password")
    sender: str = Field(description="From: address")
    to: list[str] = Field(min_length=1, description="Who receives the alerts")
    cafile: Path | None = Field(default=None, description="CA for the server's certificate")


class WebhookTarget(StrictModel):
    url: str | None = Field(default=None, description="Where the JSON is POSTed")
    url_file: Path | None = Field(
        default=None,
        description="A file holding the URL instead (a Telegram bot URL carries its token)",
    )
    format: WebhookFormat = Field(
        default="generic",
        description="The payload: generic JSON, or ready for Slack, Mattermost, Google Chat, "
        "Microsoft Teams or Telegram",
    )
    chat_id: str | None = Field(default=None, description="Telegram: the chat to post to")

    @model_validator(mode="after")
    def _one_url(self) -> WebhookTarget:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("a webhook needs exactly one of url and url_file")
        if self.url is not None:
            check_url_shape(self.url)
        if self.format == "telegram" and not self.chat_id:
            raise ValueError("a telegram webhook needs chat_id")
        return self

    def resolve_url(self) -> str:
        if self.url is not None:
            return self.url
        assert self.url_file is not None
        url = self.url_file.read_text().strip()
        check_url_shape(url)
        return url


def check_url_shape(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a webhook URL is http(s)://host/...: {url[:80]!r}")
    if parts.username or parts.password:
        raise ValueError("a webhook URL carries no user or password (use the path or a file)")


class AlertsConfig(StrictModel):
    kinds: list[Kind] = Field(
        default_factory=lambda: list(DEFAULT_KINDS), description="Which conditions alert"
    )
    offline_after_min: float = Field(
        default=30, gt=0, le=7 * 24 * 60, description="A kiosk silent this long is offline"
    )
    check_s: float = Field(default=60, ge=1, le=3600, description="How often the rules run")
    lang: Literal["vi", "en"] = Field(
        default="vi", description="The first language of each message (the other follows)"
    )
    timeout_s: float = Field(default=10, gt=0, le=120, description="Per delivery attempt")
    give_up_h: float = Field(
        default=48, gt=0, le=24 * 30, description="A message not delivered by then is dropped"
    )
    allow_private: list[str] = Field(
        default_factory=list,
        description="Private or loopback addresses a webhook may reach (an in-house chat "
        "server); any other private address, and central itself, are refused",
    )
    email: EmailTarget | None = Field(default=None, description="Alerts by e-mail")
    webhooks: list[WebhookTarget] = Field(default_factory=list, description="Alerts to chats")
    dashboard_url: str | None = Field(
        default=None, description="Linked from each message (default: central's public URL)"
    )

    def targets(self) -> list[str]:
        """Stable names of the targets: what the queue stores with each message."""
        names = ["email"] if self.email is not None else []
        return names + [f"webhook{i}" for i in range(len(self.webhooks))]

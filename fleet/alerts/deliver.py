"""Sending one message: a webhook POST or an e-mail, each bounded by a timeout.

A webhook's address is checked each time it is used, after resolving its name: central
itself, and any private, loopback or link-local address that ``[alerts] allow_private``
does not name, are refused (a webhook is a way to make central send requests; it must not
become a way to reach the machines behind it). Redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx

from biblioedge.fleet.alerts.messages import lines, webhook_payload
from biblioedge.fleet.alerts.settings import AlertsConfig, EmailTarget, WebhookTarget


class DeliveryError(Exception):
    """Why a message did not go (kept with it, shown on the dashboard and in the log)."""


class Refused(DeliveryError):
    """The target is not allowed: retrying will not help."""


def _addresses(host: str, port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DeliveryError(f"cannot resolve {host}: {exc}") from None
    return {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}


def check_target(url: str, cfg: AlertsConfig, own: tuple[str, int]) -> None:
    """Refuse a URL that leads to central itself or to a private address not allowed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    own_host, own_port = own
    allowed = {ipaddress.ip_address(a) for a in cfg.allow_private}
    own_addrs = _addresses(own_host, own_port) if own_host not in ("", "0.0.0.0", "::") else set()  # noqa: S104
    for addr in _addresses(host, port):
        if port == own_port and (addr.is_loopback or addr in own_addrs or addr.is_unspecified):
            raise Refused(f"{host}:{port} is central itself")
        if addr in allowed:
            continue
        if not addr.is_global or addr.is_multicast:
            raise Refused(
                f"{host} is {addr}, a private address ([alerts] allow_private may name it)"
            )


def send_webhook(
    target: WebhookTarget, body: dict[str, Any], cfg: AlertsConfig, own: tuple[str, int]
) -> None:
    try:
        url = target.resolve_url()
    except (OSError, ValueError) as exc:
        raise Refused(f"webhook URL: {exc}") from None
    check_target(url, cfg, own)
    try:
        resp = httpx.post(
            url,
            json=webhook_payload(target, body, cfg.lang),
            timeout=cfg.timeout_s,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}"[:300]) from None
    if resp.is_redirect:
        raise DeliveryError(
            f"redirected to {resp.headers.get('location', '?')[:120]} (not followed)"
        )
    if resp.status_code >= 300:
        raise DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}")


def send_email(target: EmailTarget, body: dict[str, Any], cfg: AlertsConfig) -> None:
    subject, text = lines(body, cfg.lang)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = target.sender
    msg["To"] = ", ".join(target.to)
    msg.set_content(text)
    context = ssl.create_default_context(cafile=str(target.cafile) if target.cafile else None)
    try:
        password = target.password_file.read_text().strip() if target.password_file else None
        smtp: smtplib.SMTP
        if target.security == "tls":
            smtp = smtplib.SMTP_SSL(
                target.host, target.port, timeout=cfg.timeout_s, context=context
            )
        else:
            smtp = smtplib.SMTP(target.host, target.port, timeout=cfg.timeout_s)
        with smtp:
            if target.security == "starttls":
                smtp.starttls(context=context)
            if target.user and password is not None:
                smtp.login(target.user, password)
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"SMTP {target.host}:{target.port}: {exc}"[:300]) from None

"""What an alert says, in the library's language first and the other after it, and the JSON
each chat app takes: the messages are ready to post, so IT sets a URL and nothing else.

Payload shapes follow each app's published incoming-webhook format: Slack and Mattermost
``{"text"}``, Google Chat ``{"text"}``, Microsoft Teams a MessageCard (``@type``,
``summary``, ``text``), Telegram's Bot API ``sendMessage`` (``chat_id``, ``text``).
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

from biblioedge.fleet.alerts.settings import WebhookTarget

#: (Vietnamese, English) for each kind, fired and ended
WORDS: dict[str, tuple[str, str]] = {
    "offline": ("Thiết bị mất kết nối", "Kiosk offline"),
    "never_seen": ("Thiết bị đã đăng ký nhưng chưa từng kết nối", "Kiosk enrolled, never seen"),
    "degraded": ("Thiết bị hoạt động hạn chế", "Kiosk degraded"),
    "update_failed": ("Cập nhật phần mềm lỗi", "Software update failed"),
    "rollout_halted": ("Triển khai phần mềm bị dừng", "Rollout halted"),
    "security": ("Thiết bị gửi điều không được phép", "A kiosk sent what it may not"),
    "backup_stale": ("Sao lưu đã cũ", "Backup is stale"),
    "exit_reader_down": ("Cổng an ninh ngưng đọc", "Exit gate reader down"),
    "ils_held": ("Hệ thống thư viện cần người xử lý", "Library system push needs a person"),
    "test": ("Thử cảnh báo", "Alert test"),
}
FIRED = ("CẢNH BÁO", "ALERT")
ENDED = ("ĐÃ HẾT", "RESOLVED")


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def lines(body: dict[str, Any], lang: str) -> tuple[str, str]:
    """(subject, text) for one message; ``body`` is what the queue stored."""
    vi_first = lang == "vi"
    kind = str(body["kind"])
    vi, en = WORDS.get(kind, (kind, kind))
    state_vi, state_en = ENDED if body["event"] == "resolved" else FIRED
    subject_of = str(body["subject"])
    head_vi = f"[{state_vi}] {vi}: {subject_of}"
    head_en = f"[{state_en}] {en}: {subject_of}"
    subject = head_vi if vi_first else head_en
    detail = str(body.get("detail") or "")
    since = str(body.get("since") or "")
    rows = [head_vi, head_en] if vi_first else [head_en, head_vi]
    if detail:
        rows.append(detail)
    if since:
        rows.append(("Từ / since " if vi_first else "Since / từ ") + since)
    if body.get("dashboard"):
        rows.append(str(body["dashboard"]))
    return _nfc(subject)[:200], _nfc("\n".join(rows))[:3000]


def webhook_payload(target: WebhookTarget, body: dict[str, Any], lang: str) -> dict[str, Any]:
    subject, text = lines(body, lang)
    if target.format in ("slack", "mattermost", "google_chat"):
        return {"text": text}
    if target.format == "teams":
        ended = body["event"] == "resolved"
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": subject,
            "themeColor": "2E7D32" if ended else "C62828",
            "title": subject,
            "text": text.replace("\n", "<br>"),
        }
    if target.format == "telegram":
        return {"chat_id": target.chat_id, "text": text, "disable_web_page_preview": True}
    return {
        "source": "biblioedge",
        "event": body["event"],
        "kind": body["kind"],
        "subject": body["subject"],
        "detail": body.get("detail") or "",
        "since": body.get("since"),
        "title": subject,
        "text": text,
        "dashboard": body.get("dashboard"),
    }


def body_of(
    event: str, kind: str, subject: str, detail: str, since: datetime, dashboard: str | None
) -> dict[str, Any]:
    """What the queue keeps for a message (every target renders it its own way)."""
    return {
        "event": event,
        "kind": kind,
        "subject": subject,
        "detail": detail,
        "since": since.isoformat(timespec="seconds"),
        "dashboard": dashboard,
    }

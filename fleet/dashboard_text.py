"""The dashboard's words, Vietnamese first (IT at the library reads Vietnamese), English on a
toggle. Every string is NFC; a test checks both languages have every key."""

from __future__ import annotations

import unicodedata
from typing import Literal

from biblioedge.fleet.itdash_text import TEXT as _ITDASH

Lang = Literal["vi", "en"]

_TEXT: dict[str, tuple[str, str]] = {
    "title": ("Quản lý thiết bị thư viện", "Library fleet"),
    "sign_in": ("Đăng nhập", "Sign in"),
    "sign_out": ("Đăng xuất", "Sign out"),
    "readers_page": ("Bạn đọc", "Readers"),
    "cases_page": ("Việc từ kiosk", "Staff cases"),
    "token": ("Mã truy cập API", "API token"),
    "token_hint": (
        "Dán mã truy cập API của bạn (bất kỳ vai trò nào).",
        "Paste your API token (any role).",
    ),
    "bad_token": ("Mã truy cập không đúng hoặc đã bị thu hồi.", "Wrong or revoked token."),
    "locked": (
        "Quá nhiều lần đăng nhập sai từ địa chỉ này. Thử lại sau {s} giây.",
        "Too many wrong sign-ins from this address. Try again in {s} s.",
    ),
    "signed_in_as": ("Đăng nhập với tên", "Signed in as"),
    "language": ("English", "Tiếng Việt"),
    "kiosks": ("Thiết bị", "Kiosks"),
    "device": ("Thiết bị", "Kiosk"),
    "site": ("Cơ sở", "Site"),
    "role": ("Vai trò", "Role"),
    "status": ("Trạng thái", "Status"),
    "software": ("Phần mềm", "Software"),
    "models": ("Mô hình", "Models"),
    "last_seen": ("Lần cuối", "Last seen"),
    "outbox": ("Hàng đợi", "Outbox"),
    "health": ("Sức khỏe", "Health"),
    "alarms": ("Cảnh báo", "Alarms"),
    "online": ("Trực tuyến", "Online"),
    "offline": ("Ngoại tuyến", "Offline"),
    "revoked": ("Đã thu hồi", "Revoked"),
    "never": ("chưa bao giờ", "never"),
    "ok": ("Tốt", "OK"),
    "role_gate": ("Cổng vào", "Gate"),
    "role_selfcheck": ("Tự mượn trả", "Self-check"),
    "role_desk": ("Quầy làm thẻ", "Card desk"),
    "rollouts": ("Triển khai cập nhật", "Rollouts"),
    "release": ("Phiên bản", "Release"),
    "kind_software": ("Phần mềm", "Software"),
    "kind_model": ("Mô hình khuôn mặt", "Face model"),
    "kind_config": ("Cấu hình", "Configuration"),
    "wave": ("Đợt", "Wave"),
    "progress": ("Tiến độ", "Progress"),
    "halt_reason": ("Lý do dừng", "Halt reason"),
    "actions": ("Thao tác", "Actions"),
    "no_rollouts": ("Chưa có đợt triển khai nào.", "No rollouts yet."),
    "state_running": ("Đang chạy", "Running"),
    "state_paused": ("Tạm dừng", "Paused"),
    "state_halted": ("Đã dừng do lỗi", "Halted"),
    "state_aborted": ("Đã hủy", "Aborted"),
    "state_done": ("Hoàn tất", "Done"),
    "pause": ("Tạm dừng", "Pause"),
    "resume": ("Tiếp tục", "Resume"),
    "abort": ("Hủy", "Abort"),
    "new_rollout": ("Triển khai mới", "New rollout"),
    "waves_hint": ("Các đợt, ví dụ 1,10%,100%", "Waves, e.g. 1,10%,100%"),
    "sites_hint": ("Cơ sở (không chọn: tất cả)", "Sites (none chosen: all)"),
    "start": ("Bắt đầu", "Start"),
    "committed": ("đã cập nhật", "committed"),
    "failed": ("lỗi", "failed"),
    "updating": ("đang cập nhật", "updating"),
    "pending": ("đang chờ", "pending"),
    "events": ("Sự kiện gần đây", "Recent events"),
    "time": ("Thời gian", "Time"),
    "type": ("Loại", "Type"),
    "detail": ("Chi tiết", "Detail"),
    "attention": ("Cần nhân viên xử lý", "Needs staff attention"),
    "nothing_needed": ("Không có việc gì cần xử lý.", "Nothing needs attention."),
    "att_security": ("Thiết bị gửi điều không được phép", "Device sent what it may not"),
    "att_rekey": ("Thiết bị xin đổi khóa, chờ IT duyệt", "Asks for a new key, awaiting IT"),
    "att_offline": ("Ngoại tuyến từ", "Offline since"),
    "att_degraded": ("Hoạt động hạn chế", "Degraded"),
    "att_update": ("Cập nhật lỗi", "Update failed"),
    "att_rollout": ("Triển khai bị dừng", "Rollout halted"),
    "att_circ": ("Mượn trả cần kiểm tra", "Loan to check"),
    "att_exit": ("Cổng an ninh báo động", "Exit gate alarm"),
    "att_exit_down": ("Cổng an ninh ngưng đọc", "Exit gate reader down"),
    "att_desired": ("Cấu hình bị từ chối", "Configuration refused"),
    "att_quarantine": ("Sự kiện bị cách ly", "Quarantined events"),
    "att_ils_held": (
        "Bạn đọc chưa vào được hệ thống thư viện, cần người xử lý",
        "Reader held back from the library system: a person must act",
    ),
    "att_ils_waiting": ("Đang chờ hệ thống thư viện", "Waiting for the library system"),
    "viewer_note": ("Bạn chỉ có quyền xem.", "You can view only."),
    "live": ("Tự cập nhật", "Live"),
    "refused": ("Không thực hiện được", "Refused"),
    "fleet_page": ("Thiết bị", "Fleet"),
    "reports": ("Báo cáo thống kê", "Reports"),
}
_TEXT.update(_ITDASH)  # the IT pages' words (fleet/itdash_text.py)


def text(key: str, lang: Lang = "vi") -> str:
    vi, en = _TEXT[key]
    return unicodedata.normalize("NFC", vi if lang == "vi" else en)


def catalogue(lang: Lang) -> dict[str, str]:
    return {k: text(k, lang) for k in _TEXT}

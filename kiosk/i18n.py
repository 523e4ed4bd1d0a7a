"""What the kiosks say, Vietnamese first, English on a tap. Every string NFC-normalized.

Keys are what the agent's views carry (``GateView.message``); a key missing here is a test
failure, not a blank screen.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

Lang = Literal["vi", "en"]

_GATE: dict[str, tuple[str, str]] = {
    "welcome_idle": ("Chào mừng bạn đến thư viện", "Welcome to the library"),
    "welcome_idle_sub": (
        "Nhìn vào camera hoặc quét thẻ thư viện",
        "Look at the camera or scan your library card",
    ),
    "welcome_name": ("Xin chào, {name}!", "Hello, {name}!"),
    "welcome_name_sub": ("Mời bạn vào", "Please come in"),
    "scan_card": ("Chưa nhận ra bạn", "We could not recognize you"),
    "scan_card_sub": (
        "Vui lòng quét mã QR trên thẻ thư viện",
        "Please scan the QR code on your library card",
    ),
    "hint_too_small": ("Xin lại gần hơn một chút", "Please come a little closer"),
    "hint_too_dark": ("Chỗ này hơi tối", "It is too dark here"),
    "hint_too_bright": ("Ánh sáng quá mạnh", "The light is too bright"),
    "hint_blurry": ("Xin đứng yên một chút", "Please hold still"),
    "hint_pose": ("Xin nhìn thẳng vào camera", "Please look straight at the camera"),
    "hint_out_of_frame": (
        "Xin đứng vào giữa khung hình",
        "Please step into the middle of the frame",
    ),
    "hint_hold_still": ("Đang kiểm tra…", "Checking…"),
    "denied_blocked": ("Thẻ của bạn đang bị khóa", "Your card is blocked"),
    "denied_expired": ("Thẻ của bạn đã hết hạn", "Your card has expired"),
    "denied_passback": ("Thẻ này vừa được dùng để vào", "This card was just used to enter"),
    "denied_revoked": ("Thẻ này đã bị thu hồi", "This card has been revoked"),
    "denied_bad_signature": ("Thẻ không hợp lệ", "This card is not valid"),
    "denied_unknown_key": ("Thẻ không hợp lệ", "This card is not valid"),
    "denied_malformed": ("Không đọc được mã thẻ", "The card code could not be read"),
    "denied_not_a_card": ("Đây không phải thẻ thư viện", "This is not a library card"),
    "denied_not_yet_valid": ("Thẻ chưa có hiệu lực", "This card is not valid yet"),
    "denied_unknown_barcode": ("Không tìm thấy mã vạch này", "This barcode is not known"),
    "denied_unknown_patron": ("Không tìm thấy bạn đọc", "Reader not found"),
    "denied_liveness": ("Không xác minh được khuôn mặt", "The face could not be verified"),
    "denied_sub": ("Vui lòng liên hệ quầy thủ thư", "Please ask at the librarian's desk"),
    "out_of_service": ("Cổng tạm ngưng hoạt động", "This gate is out of service"),
    "out_of_service_sub": (
        "Vui lòng dùng cổng bên cạnh hoặc hỏi thủ thư",
        "Please use the next gate or ask a librarian",
    ),
    "offline": ("Ngoại tuyến", "Offline"),
    "language": ("English", "Tiếng Việt"),
}


def text(key: str, lang: Lang = "vi", **fields: str) -> str:
    vi, en = _GATE[key]
    out = (vi if lang == "vi" else en).format(
        **{k: unicodedata.normalize("NFC", v) for k, v in fields.items()}
    )
    return unicodedata.normalize("NFC", out)


def subtitle(key: str, lang: Lang = "vi") -> str:
    """The second line under a message: its own ``_sub`` key, or the group's."""
    for candidate in (f"{key}_sub", "denied_sub" if key.startswith("denied_") else ""):
        if candidate in _GATE:
            return text(candidate, lang)
    return ""


def keys() -> set[str]:
    return set(_GATE)

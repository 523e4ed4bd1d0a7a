"""The librarian's pages' words, Vietnamese first, English on a tap (NFC; a test checks both
languages have every key)."""

from __future__ import annotations

import unicodedata

from biblioedge.fleet.dashboard_text import Lang

_TEXT: dict[str, tuple[str, str]] = {
    "readers": ("Bạn đọc", "Readers"),
    "cases": ("Việc cần xử lý từ kiosk", "Staff cases from kiosks"),
    "find": ("Tìm bạn đọc", "Find a reader"),
    "find_hint": (
        "Quét thẻ thư viện hoặc CCCD, hoặc gõ số thẻ. Chỉ tìm đúng một bạn đọc; không liệt kê "
        "danh sách.",
        "Scan the library card or the CCCD, or type the card number. Finds exactly one "
        "reader; never lists readers.",
    ),
    "key": ("Số thẻ hoặc mã QR của CCCD", "Card number or the CCCD's QR"),
    "search": ("Tìm", "Find"),
    "no_reader": ("Không tìm thấy bạn đọc nào.", "No reader found."),
    "bad_key": (
        "Đây không phải số thẻ hay mã QR của CCCD.",
        "That is neither a card number nor a CCCD QR.",
    ),
    "no_pepper": (
        "Máy chủ chưa được cấu hình để tìm theo CCCD; hãy dùng số thẻ.",
        "Central is not set up to find readers by CCCD; use the card number.",
    ),
    "to_reprint": ("Thẻ cần in lại với số thẻ mới", "Cards to print again with their new number"),
    "none_to_reprint": ("Không có thẻ nào cần in lại.", "No card needs printing again."),
    "printed_number": ("Số đã in", "Number printed"),
    "pending_number": ("chờ cấp số", "number pending"),
    "patron_id": ("Mã bạn đọc", "Patron number"),
    "name": ("Họ và tên", "Name"),
    "home_site": ("Cơ sở đăng ký", "Home branch"),
    "status": ("Trạng thái", "Status"),
    "status_active": ("Đang hoạt động", "Active"),
    "status_blocked": ("Bị khóa", "Blocked"),
    "status_expired": ("Hết hạn", "Expired"),
    "expires": ("Hạn thẻ", "Card valid until"),
    "card_number": ("Số thẻ", "Card number"),
    "ils_status": ("Hệ thống thư viện", "Library system"),
    "ils_none": ("chưa có", "not yet"),
    "ils_active": ("đã có, đang hoạt động", "linked, active"),
    "ils_blocked": ("đã có, bị khóa", "linked, blocked"),
    "ils_expired": ("đã có, hết hạn", "linked, expired"),
    "ils_deleted": ("đã bị xóa ở đó", "deleted there"),
    "live_cards": ("Thẻ còn hiệu lực", "Cards in use"),
    "consents": ("Đồng ý sử dụng khuôn mặt", "Consent to face use"),
    "purpose": ("Mục đích", "Purpose"),
    "purpose_face_gate": ("Vào cổng bằng khuôn mặt", "Entering by face"),
    "purpose_face_selfcheck": ("Mượn trả bằng khuôn mặt", "Self-check by face"),
    "granted": ("Đồng ý", "Agreed"),
    "refused": ("Không đồng ý", "Declined"),
    "withdrawn": ("Đã rút lại", "Withdrawn"),
    "recorded": ("Ngày ghi nhận", "Recorded"),
    "where": ("Cơ sở", "Branches"),
    "everywhere": ("mọi cơ sở", "every branch"),
    "withdraw": ("Rút lại đồng ý", "Withdraw consent"),
    "no_consents": ("Chưa có bản ghi đồng ý.", "No consent recorded."),
    "card_actions": ("Thẻ thư viện", "Library card"),
    "reprint": ("In lại thẻ", "Print the card again"),
    "reprint_hint": (
        "Thẻ mới cùng số; thẻ cũ vẫn dùng được.",
        "A new card with the same number; the old one still works.",
    ),
    "replace": ("Báo mất thẻ và cấp thẻ mới", "Lost card: issue a new one"),
    "replace_hint": (
        "Mọi thẻ cũ bị từ chối ở mọi kiosk từ lần đồng bộ tới.",
        "Every old card is refused at every kiosk from the next sync.",
    ),
    "done_withdrawn": (
        "Đã rút lại đồng ý. Mẫu khuôn mặt bị xóa ở mọi kiosk trong lần đồng bộ tới.",
        "Consent withdrawn. Her face templates leave every kiosk at the next sync.",
    ),
    "done_handled": ("Đã đánh dấu là đã xử lý.", "Marked handled."),
    "done_already": ("Việc này đã được xử lý trước đó.", "This was already handled."),
    "card_title": ("Thẻ bạn đọc", "Library card"),
    "print": ("In thẻ", "Print"),
    "revoked_n": ("Đã thu hồi {n} thẻ cũ.", "{n} old card(s) revoked."),
    "back": ("Quay lại", "Back"),
    "no_cases": ("Không có việc nào trong 30 ngày qua.", "Nothing in the last 30 days."),
    "when": ("Thời gian", "When"),
    "kiosk": ("Kiosk", "Kiosk"),
    "what": ("Việc", "What"),
    "todo": ("Cần làm", "To do"),
    "handled": ("Đã xử lý", "Handled"),
    "handled_by": ("{who} lúc {at}", "{who} at {at}"),
    "mark_handled": ("Đánh dấu đã xử lý", "Mark handled"),
    "case_offline_refused": (
        "Hệ thống thư viện từ chối một lượt mượn lúc mất kết nối",
        "A loan made offline was refused by the library system",
    ),
    "case_return_not_secured": (
        "Tài liệu đã trả nhưng chưa bật lại an ninh",
        "A returned item's security is not back on",
    ),
    "case_loan_not_undone": (
        "Lượt mượn không hủy được, an ninh chưa tắt",
        "A loan could not be undone, its security still on",
    ),
    "case_other": ("Việc khác", "Other"),
    "item": ("Tài liệu", "Item"),
    "librarians_only": (
        "Trang này dành cho thủ thư và quản trị viên.",
        "This page is for librarians and admins.",
    ),
}


def catalogue(lang: Lang) -> dict[str, str]:
    i = 0 if lang == "vi" else 1
    return {k: unicodedata.normalize("NFC", v[i]) for k, v in _TEXT.items()}


def keys() -> set[str]:
    return set(_TEXT)

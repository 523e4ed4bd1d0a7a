"""What the kiosks say, Vietnamese first, English on a tap. Every string NFC-normalized.

Keys are what the agent's views carry (``GateView.message``); a key missing here is a test
failure, not a blank screen.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

from biblioedge.kiosk.i18n_guardian import GUARDIAN_TEXT

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
    "out_of_service_storage": (
        "Cổng tạm ngưng: bộ nhớ của thiết bị đã đầy",
        "This gate is out of service: its storage is full",
    ),
    "out_of_service_storage_sub": (
        "Vui lòng dùng cổng bên cạnh; bộ phận CNTT đã được báo",
        "Please use the next gate; IT has been alerted",
    ),
    "out_of_service_face": (
        "Tạm thời chưa nhận diện khuôn mặt",
        "Face recognition is paused for a moment",
    ),
    "out_of_service_face_sub": (
        "Vui lòng quét mã QR trên thẻ thư viện",
        "Please scan the QR code on your library card",
    ),
    "storage_full": (
        "Bộ nhớ của máy đã đầy: tạm thời chưa cấp thẻ được",
        "This desk's storage is full: no cards can be issued for now",
    ),
    "storage_full_sub": (
        "Không có dữ liệu nào bị mất. Vui lòng báo bộ phận CNTT",
        "Nothing was lost. Please tell IT",
    ),
    "offline": ("Ngoại tuyến", "Offline"),
    "language": ("English", "Tiếng Việt"),
    # -- card desk (the librarian's screen, read by the reader too) --
    "desk_idle": ("Cấp thẻ bạn đọc", "Library card registration"),
    "desk_idle_sub": (
        "Quét mã QR trên CCCD, rồi đặt thẻ lên đầu đọc",
        "Scan the QR code on the citizen ID card, then place the card on the reader",
    ),
    "not_cccd": ("Đây không phải mã QR của CCCD", "This is not a citizen ID QR code"),
    "not_cccd_sub": ("Vui lòng quét mã QR ở mặt trước CCCD", "Scan the QR code on the front"),
    "place_card": ("Đặt CCCD lên đầu đọc", "Place the ID card on the reader"),
    "card_removed": ("Thẻ bị nhấc ra khi đang đọc", "The card was lifted during the read"),
    "card_removed_sub": ("Đặt lại thẻ, máy sẽ đọc lại", "Put it back: it will be read again"),
    "reading_chip": ("Đang đọc chip…", "Reading the chip…"),
    "reading_chip_sub": ("Giữ yên thẻ trên đầu đọc", "Keep the card still on the reader"),
    "check_card": ("Kiểm tra lại thẻ", "Check the card"),
    "check_card_sub": (
        "Chip không nhận khóa từ mã QR: mã QR và thẻ không khớp",
        "The chip refused the keys from the QR: the QR and the card do not match",
    ),
    "reader_problem": ("Không đọc được chip", "The chip could not be read"),
    "reader_problem_sub": (
        "Thử lại, hoặc đăng ký chỉ với mã QR (thủ thư đối chiếu ảnh)",
        "Retry, or register from the QR only (the librarian checks the photo)",
    ),
    "forgery_suspected": ("Cảnh báo: dữ liệu chip không toàn vẹn", "Warning: chip data altered"),
    "forgery_suspected_sub": (
        "Có thể là thẻ giả. Chỉ tiếp tục khi đã kiểm tra thẻ bằng mắt; việc này được ghi lại",
        "Possibly forged. Continue only after checking the card by eye; this is logged",
    ),
    "look_at_camera": ("Mời bạn nhìn vào camera", "Please look at the camera"),
    "face_matched": ("Khuôn mặt khớp với ảnh trong chip", "The face matches the chip photo"),
    "face_captured": ("Đã chụp khuôn mặt", "Face captured"),
    "face_mismatch": ("Khuôn mặt không khớp với ảnh trong chip", "The face does not match"),
    "face_mismatch_sub": (
        "Người đăng ký phải là chủ thẻ CCCD",
        "The person registering must be the card holder",
    ),
    "face_timeout": ("Chưa chụp được khuôn mặt", "No usable face yet"),
    "face_timeout_sub": ("Nhìn thẳng vào camera rồi thử lại", "Look straight at it and retry"),
    "confirm_identity": ("Thủ thư đối chiếu ảnh trên thẻ", "Librarian: check the card photo"),
    "confirm_identity_sub": (
        "Chip không có ảnh dùng được: xác nhận người này là chủ thẻ",
        "No usable chip photo: confirm this person holds the card",
    ),
    "consent_text": ("Đồng ý dùng khuôn mặt để vào thư viện?", "Use your face to enter?"),
    "consent_text_sub": (
        "Mục đích: nhận diện khuôn mặt tại cổng thư viện. Lưu: mẫu khuôn mặt mã hóa, không lưu "
        "ảnh, đến khi thẻ hết hạn hoặc bạn rút lại. Rút lại: tại quầy thủ thư bất cứ lúc nào, "
        "mẫu khuôn mặt bị xóa khỏi mọi cổng. Không đồng ý vẫn được cấp thẻ (vào bằng mã QR).",
        "Purpose: face recognition at the library gates. Kept: an encrypted face template, no "
        "photo, until the card expires or you withdraw. Withdraw: at the desk at any time; the "
        "template is erased from every gate. Without consent you still get a card (QR entry).",
    ),
    "registering": ("Đang đăng ký…", "Registering…"),
    "card_pending": ("Đã ghi nhận, thẻ sẽ in khi có kết nối", "Saved: the card prints when online"),
    "card_pending_sub": (
        "Máy trạm đang ngoại tuyến; đăng ký không bị mất",
        "The desk is offline; the registration is kept",
    ),
    "card_issued": ("Đã cấp thẻ {patron}", "Card {patron} issued"),
    "card_issued_sub": ("Thẻ đang được in", "The card is printing"),
    "registration_refused": ("Máy chủ từ chối đăng ký", "Central refused the registration"),
    "card_reissue": (
        "Thẻ đã được cấp nhưng không nhận được: hãy đăng ký lại để cấp thẻ mới",
        "The card was issued but its answer was lost: register again for a new card",
    ),
    "pending_cards": ("{n} thẻ chờ in", "{n} cards waiting"),
    "score": ("Độ khớp {score} (ngưỡng {threshold})", "Match {score} (threshold {threshold})"),
    "action_retry": ("Thử lại", "Retry"),
    "action_cancel": ("Hủy", "Cancel"),
    "action_override": ("Vẫn tiếp tục", "Continue anyway"),
    "action_consent_yes": ("Đồng ý", "I agree"),
    "action_consent_no": ("Không đồng ý", "I do not agree"),
    "action_qr_only": ("Chỉ dùng mã QR", "QR only"),
    "action_print": ("In lại", "Print again"),
    "action_next": ("Người tiếp theo", "Next reader"),
    "action_confirm_identity": ("Đúng chủ thẻ", "Holder confirmed"),
    # -- register from home (agent/desk/prereg.py) --
    "prereg_scan_cccd": ("Đã nhận mã đăng ký từ xa", "Pre-registration code received"),
    "prereg_scan_cccd_sub": (
        "Quét mã QR trên CCCD, rồi đặt thẻ lên đầu đọc",
        "Scan the QR code on the citizen ID card, then place the card on the reader",
    ),
    "prereg_confirm_face": (
        "Xác nhận đăng ký: bạn đọc chọn vào cổng bằng khuôn mặt",
        "Confirm: the reader chose to enter by face",
    ),
    "prereg_confirm_face_sub": (
        "Bạn đọc đã đồng ý khi đăng ký từ xa. Muốn đổi lựa chọn: Hủy, rồi đăng ký tại quầy",
        "She agreed when registering from home. To change it: Cancel, then register here",
    ),
    "prereg_confirm_noface": (
        "Xác nhận đăng ký: bạn đọc vào cổng bằng mã QR",
        "Confirm: the reader enters with the QR code",
    ),
    "prereg_confirm_noface_sub": (
        "Không lưu mẫu khuôn mặt. Muốn đổi lựa chọn: Hủy, rồi đăng ký tại quầy",
        "No face template is kept. To change it: Cancel, then register here",
    ),
    "prereg_malformed": (
        "Mã đăng ký từ xa không đọc được",
        "The pre-registration code is unreadable",
    ),
    "prereg_expired": ("Mã đăng ký từ xa đã hết hạn", "The pre-registration code has expired"),
    "prereg_expired_sub": (
        "Đăng ký tại quầy như bình thường",
        "Register at the desk as usual",
    ),
    "prereg_forged": (
        "Mã đăng ký từ xa không do thư viện cấp",
        "The pre-registration code was not issued by the library",
    ),
    "prereg_used": ("Mã đăng ký từ xa đã được dùng", "The pre-registration code was already used"),
    "phone_card": ("Quét để lưu thẻ trên điện thoại", "Scan to keep the card on your phone"),
    "action_confirm": ("Xác nhận", "Confirm"),
}


_SELFCHECK: dict[str, tuple[str, str]] = {
    "selfcheck_starting": ("Đang khởi động…", "Starting…"),
    "selfcheck_idle": ("Mượn sách tự động", "Self-service borrowing"),
    "selfcheck_idle_sub": (
        "Quét thẻ thư viện hoặc mã QR trên CCCD. Trả sách: chạm «Trả sách»",
        "Scan your library card or the QR on your citizen ID. To return: tap «Return»",
    ),
    "selfcheck_pin": ("Nhập mã PIN", "Enter your PIN"),
    "selfcheck_pin_sub": ("Mã PIN của thẻ bạn đọc", "The PIN of your reader card"),
    "selfcheck_identifying": ("Đang kiểm tra thẻ…", "Checking your card…"),
    "selfcheck_place_books": ("Xin chào, {name}!", "Hello, {name}!"),
    "selfcheck_place_books_sub": (
        "Đặt sách lên khay đọc, có thể đặt cả chồng",
        "Put your books on the pad, a whole stack at once",
    ),
    "selfcheck_return_place": ("Trả sách", "Return books"),
    "selfcheck_return_place_sub": (
        "Đặt sách cần trả lên khay đọc",
        "Put the books you return on the pad",
    ),
    "selfcheck_working": ("Đang xử lý…", "Working…"),
    "selfcheck_working_sub": ("Xin đừng nhấc sách lên", "Please do not lift the books"),
    "selfcheck_returning": ("Đang nhận sách trả…", "Taking the books back…"),
    "selfcheck_returning_sub": ("Xin đừng nhấc sách lên", "Please do not lift the books"),
    "selfcheck_results": ("Sách bạn mượn", "Your loans"),
    "selfcheck_results_sub": (
        "Đặt thêm sách, hoặc chạm «Xong»",
        "Add more books, or tap «Done»",
    ),
    "selfcheck_returned": ("Đã nhận sách trả", "Books returned"),
    "selfcheck_returned_sub": (
        "Đặt sách vào đúng khay như hướng dẫn",
        "Put each book in the bin shown",
    ),
    "selfcheck_receipt_printed": ("Mời bạn lấy phiếu mượn", "Please take your receipt"),
    "selfcheck_receipt_qr": (
        "Chụp mã QR để lưu phiếu mượn",
        "Photograph the QR to keep your receipt",
    ),
    "selfcheck_card_invalid": ("Thẻ không hợp lệ", "This card is not valid"),
    "selfcheck_card_invalid_sub": (
        "Thẻ hết hạn, bị thu hồi hoặc không phải thẻ của thư viện: mời bạn đến quầy",
        "Expired, revoked or not the library's card: please see the desk",
    ),
    "selfcheck_cccd_unknown": ("Chưa có thẻ bạn đọc", "No reader card yet"),
    "selfcheck_cccd_unknown_sub": (
        "CCCD này chưa đăng ký: mời bạn đến quầy làm thẻ",
        "This citizen ID is not registered: please see the desk for a card",
    ),
    "selfcheck_code_unknown": ("Không đọc được mã", "Code not recognized"),
    "selfcheck_reader_problem": ("Khay đọc sách đang gặp sự cố", "The book reader has a problem"),
    "selfcheck_reader_problem_sub": (
        "Xin mượn tại quầy; nhân viên đã được báo",
        "Please borrow at the desk; staff have been told",
    ),
    "selfcheck_refused_unknown_reader": ("Không tìm thấy bạn đọc", "Reader not found"),
    "selfcheck_refused_wrong_pin": ("Mã PIN không đúng", "Wrong PIN"),
    "selfcheck_refused_reader_blocked": ("Thẻ của bạn đang bị khóa", "Your card is blocked"),
    "selfcheck_refused_reader_blocked_sub": (
        "Mời bạn đến quầy thủ thư",
        "Please see the librarian at the desk",
    ),
    "selfcheck_refused_pin_offline": (
        "Tạm thời không dùng được mã PIN",
        "PIN login is unavailable for now",
    ),
    "selfcheck_refused_pin_offline_sub": (
        "Mất kết nối với hệ thống thư viện: xin quét thẻ thư viện hoặc CCCD",
        "The library system is unreachable: please scan your library card or citizen ID",
    ),
    "selfcheck_refused_storage_full": ("Máy tạm ngừng phục vụ", "Out of service"),
    "selfcheck_refused_storage_full_sub": (
        "Xin mượn tại quầy; nhân viên đã được báo",
        "Please borrow at the desk; staff have been told",
    ),
    "problem_unreadable_tag": ("Không đọc được nhãn sách", "The book's tag cannot be read"),
    "problem_incomplete_set": (
        "Thiếu phần của bộ sách ({message}): đặt đủ các phần",
        "Part of the set is missing ({message}): put all parts on the pad",
    ),
    "problem_not_for_loan": ("Tài liệu chỉ đọc tại chỗ", "For use in the library only"),
    "problem_refused": ("Không mượn được: {message}", "Not lent: {message}"),
    "problem_fee_required": ("Mượn mất phí {fee} đ", "A charge of {fee} VND applies"),
    "problem_tag_lifted": (
        "Sách bị nhấc lên quá sớm: đặt lại lên khay",
        "The book was lifted too soon: put it back on the pad",
    ),
    "problem_security_failed": (
        "Không tắt được từ tính: mời bạn mang sách đến quầy",
        "Security could not be switched: please take the book to the desk",
    ),
    "problem_not_while_offline": (
        "Tài liệu này không mượn/trả được khi mất kết nối",
        "This item cannot be lent or returned while offline",
    ),
    "problem_offline_limit": (
        "Đã đủ số sách được mượn khi mất kết nối",
        "The offline loan limit is reached",
    ),
    "problem_reader_blocked": ("Thẻ bạn đọc đang bị khóa", "Your card is blocked"),
    "problem_storage_full": ("Máy tạm ngừng ghi nhận", "The kiosk cannot record now"),
    "due": ("Hạn trả {due}", "Due {due}"),
    "sort_bin": ("Khay {bin}", "Bin {bin}"),
    "hold": ("Sách có người đặt: để vào khay giữ chỗ", "On hold: put it in the holds bin"),
    "fees": ("Phí chưa trả: {fees} đ", "Unpaid fees: {fees} VND"),
    "pending_offline": ("{n} giao dịch chờ đồng bộ", "{n} transactions to sync"),
    "action_return": ("Trả sách", "Return"),
    "action_return_more": ("Trả thêm", "Return more"),
    "action_finish": ("Xong", "Done"),
    "action_new_session": ("Kết thúc", "Finish"),
    "action_fee_yes": ("Đồng ý trả phí", "Accept the charge"),
    "action_ok": ("Đồng ý", "OK"),
    "key_delete": ("Xóa", "Delete"),
    # -- "my account" at the self-check --
    "selfcheck_account": ("Tài khoản của tôi", "My account"),
    "selfcheck_account_sub": (
        "Sách đang mượn và hạn trả, sách đặt trước đã về, phí",
        "Your loans and due dates, holds ready, fees",
    ),
    "selfcheck_account_offline": ("Tài khoản của tôi (ngoại tuyến)", "My account (offline)"),
    "selfcheck_account_offline_sub": (
        "Mất kết nối với hệ thống thư viện: chưa xem được sách đang mượn, sách đặt trước và "
        "phí. Dưới đây chỉ là sách bạn vừa mượn tại máy này.",
        "The library system is unreachable: your loans, holds and fees cannot be seen now. "
        "Below are only the books you just borrowed here.",
    ),
    "selfcheck_account_reading": ("Đang mở tài khoản…", "Opening your account…"),
    "selfcheck_renewing": ("Đang gia hạn…", "Renewing…"),
    "account_no_loans": ("Bạn không mượn tài liệu nào", "You have nothing on loan"),
    "account_not_listed": (
        "Hệ thống thư viện không gửi danh sách tài liệu đang mượn",
        "The library system did not list your loans",
    ),
    "account_not_listed_count": (
        "Hệ thống thư viện không gửi danh sách: bạn đang mượn {n} tài liệu",
        "The library system did not list them: you have {n} items on loan",
    ),
    "account_holds": ("Sách đặt trước đã về (nhận tại quầy): {titles}", "Holds ready: {titles}"),
    "account_no_fees": ("Không có phí chưa trả", "No unpaid fees"),
    "account_overdue": ("Quá hạn {due}", "Overdue since {due}"),
    "account_renewed": ("Đã gia hạn", "Renewed"),
    "account_renew_all_unavailable": (
        "Hệ thống thư viện không cho gia hạn tại máy này: mời bạn đến quầy",
        "The library system does not allow renewing here: please see the desk",
    ),
    "account_not_renewed": ("Không gia hạn được", "Not renewed"),
    "action_account": ("Tài khoản", "My account"),
    "action_renew_all": ("Gia hạn tất cả", "Renew all"),
    "action_renew": ("Gia hạn", "Renew"),
    "action_back": ("Mượn tiếp", "Borrow more"),
}
_GATE.update(_SELFCHECK)

_EXIT: dict[str, tuple[str, str]] = {
    "exit_starting": ("Cổng an ninh đang khởi động…", "The security gate is starting…"),
    "exit_idle": ("Cảm ơn bạn, hẹn gặp lại!", "Thank you, see you again!"),
    "exit_idle_sub": (
        "Sách chưa mượn xin để lại trên giá hoặc mượn tại máy tự phục vụ",
        "Books not borrowed stay here: please borrow them at a self-check",
    ),
    "exit_alarm": (
        "Xin dừng lại: tài liệu chưa được mượn",
        "Please stop: an item has not been borrowed",
    ),
    "exit_alarm_sub": (
        "Mời bạn mang tài liệu đến quầy thủ thư; nhân viên sẽ giúp bạn",
        "Please bring it to the librarian's desk; staff will help you",
    ),
    "exit_out_of_service": (
        "Cổng an ninh tạm ngưng hoạt động",
        "The security gate is out of service",
    ),
    "exit_out_of_service_sub": (
        "Nhân viên đã được báo. Xin cảm ơn bạn",
        "Staff have been told. Thank you",
    ),
    "exit_more_items": ("và {n} tài liệu khác", "and {n} more items"),
    "exit_passages": ("Hôm nay: {n_in} lượt vào, {n_out} lượt ra", "Today: {n_in} in, {n_out} out"),
    "exit_counter_down": ("Bộ đếm lượt không phản hồi", "Passage counter not answering"),
}
_GATE.update(_EXIT)
_GATE.update(GUARDIAN_TEXT)


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""  # a field the caller did not have is left out, never a crash on screen


def text(key: str, lang: Lang = "vi", **fields: str) -> str:
    vi, en = _GATE[key]
    out = (vi if lang == "vi" else en).format_map(
        _Fields({k: unicodedata.normalize("NFC", v) for k, v in fields.items()})
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

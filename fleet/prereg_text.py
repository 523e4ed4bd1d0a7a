"""The words of the public register-from-home page and the phone card page: Vietnamese first,
English on a tap. Every string is NFC; a test checks both languages have every key."""

from __future__ import annotations

import unicodedata
from typing import Literal

Lang = Literal["vi", "en"]

_TEXT: dict[str, tuple[str, str]] = {
    "title": ("Đăng ký thẻ bạn đọc từ xa", "Register for a library card from home"),
    "language": ("English", "Tiếng Việt"),
    "intro": (
        "Điền vài thông tin dưới đây để nhận mã QR. Mang mã này và thẻ căn cước (CCCD gắn chip) "
        "đến quầy thủ thư: thủ thư đọc chip, đối chiếu khuôn mặt và cấp thẻ ngay. "
        "Không cần tài khoản, không nhập số CCCD.",
        "Fill in a few details to get a QR code. Bring it with your chip citizen ID card (CCCD) "
        "to the library desk: the librarian reads the chip, checks your face and issues your "
        "card at once. No account needed; never type your ID number.",
    ),
    "name": ("Họ và tên", "Full name"),
    "name_hint": (
        "Như trên CCCD. Ở quầy, tên trong chip được dùng.",
        "As on your ID card. At the desk, the name in the chip is used.",
    ),
    "phone": ("Số điện thoại di động", "Mobile phone number"),
    "email": ("Thư điện tử (e-mail)", "E-mail"),
    "contact_hint": ("Điền ít nhất một trong hai.", "Fill in at least one of the two."),
    "face_q": (
        "Bạn có muốn vào thư viện bằng khuôn mặt không?",
        "Would you like to enter the library by your face?",
    ),
    "face_explain": (
        "Nếu đồng ý: ở quầy, máy lưu một mẫu khuôn mặt đã mã hóa (không lưu ảnh) để cổng nhận ra "
        "bạn, đến khi thẻ hết hạn hoặc bạn rút lại tại quầy bất cứ lúc nào. Không đồng ý vẫn "
        "được cấp thẻ và vào bằng mã QR.",
        "If you agree: at the desk an encrypted face template (no photo) is kept so the gates "
        "know you, until your card expires or you withdraw at the desk at any time. Without it "
        "you still get a card and enter with its QR code.",
    ),
    "notices_q": (
        "Thư viện có được nhắn tin cho bạn (sách đến hạn, sách đặt đã có) không?",
        "May the library message you (books due, holds ready)?",
    ),
    "yes": ("Có, tôi đồng ý", "Yes, I agree"),
    "no": ("Không", "No"),
    "submit": ("Nhận mã QR", "Get my QR code"),
    "privacy": (
        "Thông tin này chỉ dùng để cấp thẻ; nếu bạn không đến quầy trong {days} ngày, nó bị xóa.",
        "These details are used only to issue your card; if you do not come to the desk within "
        "{days} days, they are deleted.",
    ),
    "done_title": ("Mã đăng ký của bạn", "Your registration code"),
    "done_text": (
        "Mang mã này (trên điện thoại hoặc in ra) cùng CCCD gắn chip đến quầy thủ thư trước "
        "ngày {date}. Hãy chụp màn hình ngay: trang này không mở lại được.",
        "Bring this code (on your phone or printed) with your chip ID card to the library desk "
        "before {date}. Take a screenshot now: this page cannot be opened again.",
    ),
    "save_qr": ("Lưu ảnh mã QR", "Save the QR code as an image"),
    "refused": ("Chưa gửi được", "Not sent"),
    "name_missing": ("Vui lòng nhập họ và tên.", "Please enter your full name."),
    "name_long": ("Họ và tên dài quá 100 ký tự.", "The name is longer than 100 characters."),
    "name_chars": (
        "Họ và tên chỉ gồm chữ cái, khoảng trắng và dấu gạch ngang (không số, không biểu tượng).",
        "A name has letters, spaces and hyphens only (no digits, no symbols or emoji).",
    ),
    "phone_invalid": (
        "Số điện thoại không đúng (ví dụ 0912 345 678).",
        "That phone number is not valid (e.g. 0912 345 678).",
    ),
    "email_invalid": ("Địa chỉ e-mail không đúng.", "That e-mail address is not valid."),
    "contact_missing": (
        "Vui lòng nhập số điện thoại hoặc e-mail.",
        "Please enter a phone number or an e-mail address.",
    ),
    "face_choice": (
        "Vui lòng chọn có hoặc không cho việc vào cổng bằng khuôn mặt.",
        "Please choose yes or no for entering by face.",
    ),
    "notices_choice": (
        "Vui lòng chọn có hoặc không cho việc nhận tin nhắn.",
        "Please choose yes or no for messages.",
    ),
    "form_fields": ("Biểu mẫu không hợp lệ.", "The form is not valid."),
    "form_size": ("Biểu mẫu quá lớn.", "The form is too large."),
    "too_many": (
        "Đã có quá nhiều lượt đăng ký từ mạng này. Vui lòng thử lại sau {wait} phút.",
        "Too many registrations from this network. Please try again in {wait} minutes.",
    ),
    "full": (
        "Hệ thống đang nhận quá nhiều đăng ký. Vui lòng thử lại sau hoặc đến thẳng quầy.",
        "The library is receiving too many registrations. Try later, or come to the desk.",
    ),
    "card_title": ("Thẻ bạn đọc", "Library card"),
    "card_number": ("Số thẻ", "Card number"),
    "card_expires": ("Hết hạn", "Expires"),
    "card_text": (
        "Đưa mã QR này vào máy quét ở cổng hoặc máy mượn sách. Lưu ảnh thẻ để dùng khi không có "
        "mạng. Khi thẻ mới được cấp, mã cũ hết hiệu lực ở mọi nơi.",
        "Show this QR code to the gate or self-check scanner. Save the card image to use it "
        "offline. When a new card is issued, this code stops working everywhere.",
    ),
    "save_card": ("Lưu ảnh thẻ", "Save the card image"),
    "add_wallet": ("Thêm vào Apple Wallet", "Add to Apple Wallet"),
    "card_gone": (
        "Liên kết không đúng hoặc đã hết hạn. Hỏi thủ thư để nhận lại.",
        "This link is wrong or has expired. Ask the librarian for a new one.",
    ),
}


def text(key: str, lang: Lang = "vi") -> str:
    vi, en = _TEXT[key]
    return unicodedata.normalize("NFC", vi if lang == "vi" else en)


def catalogue(lang: Lang) -> dict[str, str]:
    return {k: text(k, lang) for k in _TEXT}


def keys() -> list[str]:
    return list(_TEXT)

"""What the card desk says about minors and their guardians (agent/desk/guardian_flow.py),
Vietnamese first. Kept apart from kiosk/i18n.py, which merges it."""

from __future__ import annotations

GUARDIAN_TEXT: dict[str, tuple[str, str]] = {
    "guardian_needed": (
        "Bạn đọc dưới 16 tuổi: cần CCCD của cha, mẹ hoặc người giám hộ",
        "Reader under 16: a parent's or guardian's citizen ID card is needed",
    ),
    "guardian_needed_sub": (
        "Quét mã QR trên CCCD của người giám hộ",
        "Scan the QR code on the guardian's card",
    ),
    "guardian_not_cccd": ("Mã vừa quét không phải CCCD", "That code is not a citizen ID card"),
    "guardian_not_cccd_sub": (
        "Quét mã QR trên CCCD của người giám hộ",
        "Scan the QR code on the guardian's card",
    ),
    "guardian_swap_card": (
        "Nhấc thẻ của trẻ ra khỏi đầu đọc",
        "Take the child's card off the reader",
    ),
    "guardian_swap_card_sub": (
        "Rồi đặt CCCD của người giám hộ lên đầu đọc",
        "Then put the guardian's card on the reader",
    ),
    "guardian_is_child": (
        "Đây là thẻ của chính trẻ",
        "This is the child's own card",
    ),
    "guardian_is_child_sub": (
        "Cần CCCD của cha, mẹ hoặc người giám hộ",
        "The parent's or guardian's card is needed",
    ),
    "guardian_expired": ("CCCD của người giám hộ đã hết hạn", "The guardian's card has expired"),
    "guardian_expired_sub": (
        "Dùng thẻ còn hạn của cha, mẹ hoặc người giám hộ khác",
        "Use a valid card, or another parent or guardian's",
    ),
    "guardian_minor": (
        "Người giám hộ chưa đủ 16 tuổi",
        "The guardian is under 16",
    ),
    "guardian_minor_sub": (
        "Người giám hộ phải là người đã thành niên",
        "The guardian must be an adult",
    ),
    "guardian_unreadable": (
        "Không đọc được chip CCCD của người giám hộ",
        "The guardian's chip could not be read",
    ),
    "guardian_unreadable_sub": (
        "Đặt lại thẻ và thử lại; cần đọc được chip để xác nhận người giám hộ",
        "Put the card back and retry: the chip must be read to confirm the guardian",
    ),
    "guardian_forgery": (
        "Cảnh báo: dữ liệu chip của người giám hộ không toàn vẹn",
        "Warning: the guardian's chip data is altered",
    ),
    "guardian_forgery_sub": (
        "Không thể dùng thẻ này để đồng ý thay trẻ",
        "This card cannot be used to consent for the child",
    ),
    "guardian_mismatch": (
        "Mã QR và chip là của hai người khác nhau",
        "The QR and the chip belong to different people",
    ),
    "guardian_mismatch_sub": (
        "Quét lại mã QR của đúng thẻ đặt trên đầu đọc",
        "Scan the QR of the card that is on the reader",
    ),
    "guardian_relationship": ("Quan hệ với trẻ?", "Relationship to the child?"),
    "guardian_relationship_sub": (
        "Thủ thư chọn theo giấy tờ người giám hộ xuất trình",
        "The librarian chooses from the papers shown",
    ),
    "guardian_relationship_named": ("Quan hệ với trẻ?", "Relationship to the child?"),
    "guardian_relationship_named_sub": (
        "Chip của trẻ ghi người này là cha hoặc mẹ",
        "The child's chip names this person as father or mother",
    ),
    "child_consent_text": (
        "Em có đồng ý làm thẻ thư viện không?",
        "Do you agree to get a library card?",
    ),
    "child_consent_text_sub": (
        "Thư viện giữ tên, ngày sinh của em để cho mượn sách. Em có thể thôi bất cứ lúc nào.",
        "The library keeps your name and birth date to lend you books. You can stop at any time.",
    ),
    "guardian_consent_text": (
        "Cha, mẹ hoặc người giám hộ đồng ý cho trẻ làm thẻ?",
        "Does the parent or guardian consent to the child's card?",
    ),
    "guardian_consent_text_sub": (
        "Mục đích: thẻ bạn đọc của trẻ. Lưu: họ tên, ngày sinh của trẻ và việc đồng ý này; "
        "không lưu số CCCD của người giám hộ. Không dùng khuôn mặt của trẻ. Rút lại: tại quầy "
        "thủ thư bất cứ lúc nào, dữ liệu của trẻ bị xóa.",
        "Purpose: the child's library card. Kept: the child's name and birth date and this "
        "consent; not the guardian's ID number. The child's face is not used. Withdraw: at the "
        "desk at any time; the child's data is erased.",
    ),
    "child_declined": ("Trẻ không đồng ý: không làm thẻ", "The child did not agree: no card"),
    "guardian_declined": (
        "Người giám hộ không đồng ý: không làm thẻ",
        "The guardian did not consent: no card",
    ),
    "action_rel_parent": ("Cha hoặc mẹ", "Parent"),
    "action_rel_guardian": ("Người giám hộ", "Guardian"),
    "action_child_yes": ("Em đồng ý", "I agree"),
    "action_child_no": ("Em không đồng ý", "I do not agree"),
    "action_guardian_yes": ("Đồng ý", "I consent"),
    "action_guardian_no": ("Không đồng ý", "I do not consent"),
}

"""The reports' words, Vietnamese first, English on a tap; every string NFC (a test checks
both languages have every key, as for the dashboard's own words)."""

from __future__ import annotations

import unicodedata

from biblioedge.fleet.dashboard_text import Lang

_TEXT: dict[str, tuple[str, str]] = {
    # figures (the keys of reportdocs.model.FIGURES)
    "visits": ("Lượt bạn đọc đến thư viện", "Reader visits"),
    "unique_readers": ("Số bạn đọc", "Readers"),
    "adults": ("Người lớn", "Adults"),
    "children": ("Thiếu nhi", "Children"),
    "refusals": ("Lượt bị từ chối tại cổng", "Refused at the gate"),
    "loans": ("Lượt mượn", "Loans"),
    "returns": ("Lượt trả", "Returns"),
    "renewals": ("Lượt gia hạn", "Renewals"),
    "items_served": ("Lượt tài liệu phục vụ", "Items served"),
    "items_refused": ("Tài liệu bị từ chối", "Items refused"),
    "offline_loans": ("Mượn khi mất kết nối", "Offline loans"),
    "cards_new": ("Thẻ bạn đọc cấp mới", "New cards"),
    "cards_renewed": ("Thẻ gia hạn", "Cards renewed"),
    "cards_replaced": ("Thẻ cấp lại", "Cards replaced"),
    "erasures": ("Bạn đọc xóa dữ liệu", "Readers erased"),
    "preregistrations": ("Đăng ký trước hoàn tất", "Pre-registrations completed"),
    "exit_alarms": ("Báo động cổng an ninh", "Exit alarms"),
    # units
    "unit_visits": ("lượt", "visits"),
    "unit_people": ("người", "people"),
    "unit_cards": ("thẻ", "cards"),
    "unit_times": ("lượt", "times"),
    # the page
    "reports": ("Báo cáo thống kê", "Reports"),
    "fleet": ("Thiết bị", "Fleet"),
    "from": ("Từ ngày", "From"),
    "to": ("Đến ngày", "To"),
    "site": ("Cơ sở", "Site"),
    "all_sites": ("Tất cả cơ sở", "All sites"),
    "show": ("Xem", "Show"),
    "download_xlsx": ("Tải báo cáo Sở (XLSX)", "Department report (XLSX)"),
    "download_csv": ("Tải số liệu theo ngày (CSV)", "Daily figures (CSV)"),
    "summary": ("Tổng hợp kỳ báo cáo", "Period summary"),
    "figure": ("Chỉ tiêu", "Figure"),
    "this_period": ("Kỳ này", "This period"),
    "last_year": ("Cùng kỳ năm trước", "Same period last year"),
    "change": ("Tăng/giảm (%)", "Change (%)"),
    "week_hours": ("Lượt đến theo giờ trong tuần", "Visits per hour across the week"),
    "loans_per_day": ("Lượt mượn theo ngày", "Loans per day"),
    "year_vs_last": ("Lượt đến: năm nay so với năm trước", "Visits: this year against last"),
    "this_year": ("Năm nay", "This year"),
    "year_before": ("Năm trước", "Last year"),
    "hour": ("Giờ", "Hour"),
    "month": ("Tháng", "Month"),
    "day": ("Ngày", "Day"),
    "complete": ("Số liệu đã về đến", "Data complete up to"),
    "kiosk": ("Thiết bị", "Kiosk"),
    "no_data": ("chưa có", "none yet"),
    "may_grow": (
        "Một số thiết bị chưa gửi hết số liệu: các con số của kỳ này có thể còn tăng.",
        "Some kiosks have not sent everything yet: this period's figures may still grow.",
    ),
    "suppressed": (
        "—: ít hơn {n} người, không công bố để bảo vệ bạn đọc.",
        "—: fewer than {n} people, not shown to protect readers.",
    ),
    "monthly": ("Báo cáo tháng đã lưu", "Kept monthly reports"),
    "no_monthly": ("Chưa có báo cáo tháng nào.", "No monthly report yet."),
    "kept_may_grow": (
        "*: số liệu có thể còn tăng; báo cáo sẽ được lập lại khi đủ.",
        "*: figures may still grow; the report will be made again when complete.",
    ),
    "bad_range": ("Khoảng thời gian không hợp lệ", "Invalid period"),
    "no_charts": (
        "Biểu đồ cần JavaScript; các con số ở bảng dưới đây.",
        "Charts need JavaScript; the figures are in the table below.",
    ),
    "weekday_0": ("Thứ Hai", "Monday"),
    "weekday_1": ("Thứ Ba", "Tuesday"),
    "weekday_2": ("Thứ Tư", "Wednesday"),
    "weekday_3": ("Thứ Năm", "Thursday"),
    "weekday_4": ("Thứ Sáu", "Friday"),
    "weekday_5": ("Thứ Bảy", "Saturday"),
    "weekday_6": ("Chủ Nhật", "Sunday"),
    # the Department's spreadsheet
    "sheet_summary": ("Báo cáo", "Report"),
    "sheet_days": ("Số liệu theo ngày", "Daily figures"),
    "sheet_kiosks": ("Độ đầy đủ", "Completeness"),
    "library": ("THƯ VIỆN TỈNH", "PROVINCIAL LIBRARY"),
    "nation": ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "SOCIALIST REPUBLIC OF VIET NAM"),
    "motto": ("Độc lập - Tự do - Hạnh phúc", "Independence - Freedom - Happiness"),
    "title": (
        "BÁO CÁO THỐNG KÊ HOẠT ĐỘNG PHỤC VỤ BẠN ĐỌC",
        "REPORT ON READER SERVICES",
    ),
    "period": ("Kỳ báo cáo: từ ngày {start} đến ngày {end}", "Period: {start} to {end}"),
    "site_line": ("Cơ sở: {site}", "Site: {site}"),
    "no": ("STT", "No."),
    "unit": ("Đơn vị tính", "Unit"),
    "of_which": ("Trong đó: ", "Of which: "),
    "made_on": ("Ngày lập: {date}", "Made on: {date}"),
    "maker": ("Người lập biểu", "Prepared by"),
    "director": ("Giám đốc", "Director"),
    "sign": ("(Ký, ghi rõ họ tên)", "(Signature, full name)"),
    "items_note": (
        "Lượt tài liệu phục vụ = lượt mượn + lượt gia hạn tại các điểm tự mượn trả.",
        "Items served = loans + renewals at the self-check points.",
    ),
}


def text(key: str, lang: Lang = "vi", **args: object) -> str:
    vi, en = _TEXT[key]
    words = vi if lang == "vi" else en
    return unicodedata.normalize("NFC", words.format(**args) if args else words)


def catalogue(lang: Lang) -> dict[str, str]:
    return {k: text(k, lang) for k in _TEXT}


def keys() -> tuple[str, ...]:
    return tuple(_TEXT)


def unit(key: str, lang: Lang) -> str:
    if key.startswith("cards_"):
        return text("unit_cards", lang)
    if key in ("unique_readers", "erasures", "preregistrations"):
        return text("unit_people", lang)
    if key in ("visits", "adults", "children"):  # visits by adults, by children
        return text("unit_visits", lang)
    return text("unit_times", lang)

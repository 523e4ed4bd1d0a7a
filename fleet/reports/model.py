"""What a report is: the question (``ReportQuery``) and the answer (``Report``), typed.

Figures are a flat mapping from a metric name to a count, the names listed in ``METRICS``
(with their Vietnamese and English labels). Keys with a dot are breakdowns: ``refusals.blocked``,
``items_refused.hold``, ``visits.child``. A breakdown by a reader attribute (the age band) is
``None`` where small-cell suppression hid it. No figure names a reader or an item.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Granularity = Literal["hour", "day", "weekday", "month", "quarter", "year", "total"]
GRANULARITIES: tuple[str, ...] = ("hour", "day", "weekday", "month", "quarter", "year", "total")
Language = Literal["vi", "en"]
LANGUAGES: tuple[str, ...] = ("vi", "en")
#: Longest period one report may cover, in days (ten years and their leap days).
MAX_DAYS = 3653
#: Age bands kept at registration; ``unknown`` when the desk kept no date of birth.
BANDS: tuple[str, ...] = ("adult", "child", "unknown")
#: Figures also broken down by age band (``visits.child`` …).
BANDED_FAMILIES: tuple[str, ...] = ("visits", "cards_new")

#: metric -> (Vietnamese, English). Breakdown keys (``refusals.<reason>``) take the label of
#: their family and the reason as it was sent.
METRICS: dict[str, tuple[str, str]] = {
    "visits": ("Lượt bạn đọc đến thư viện", "Visits"),
    "gate_visits": ("Lượt vào qua cổng", "Visits through entry gates"),
    "exit_in": ("Lượt vào (bộ đếm cổng an ninh)", "Entries counted at exit gates"),
    "exit_out": ("Lượt ra (bộ đếm cổng an ninh)", "Exits counted at exit gates"),
    "unique_readers": ("Số bạn đọc khác nhau", "Unique readers"),
    "refusals": ("Lượt bị từ chối ở cổng", "Gate refusals"),
    "loans": ("Lượt mượn", "Loans"),
    "returns": ("Lượt trả", "Returns"),
    "renewals": ("Lượt gia hạn", "Renewals"),
    "items_refused": ("Tài liệu bị từ chối", "Items refused"),
    "offline_loans": ("Lượt mượn ngoại tuyến", "Offline loans"),
    "offline_settled": ("Giao dịch ngoại tuyến đã đối soát", "Offline loans settled"),
    "offline_refused": ("Giao dịch ngoại tuyến bị từ chối", "Offline loans refused at settlement"),
    "cards_new": ("Thẻ cấp mới", "New cards"),
    "cards_renewed": ("Thẻ gia hạn", "Cards renewed"),
    "cards_replaced": ("Thẻ cấp lại", "Cards replaced"),
    "erasures": ("Bạn đọc đã xoá dữ liệu", "Readers erased"),
    "preregistrations": ("Đăng ký trước đã hoàn tất", "Pre-registrations completed"),
    "exit_alarms": ("Báo động cổng an ninh", "Exit alarms"),
}

BAND_LABELS: dict[str, tuple[str, str]] = {
    "adult": ("người lớn", "adults"),
    "child": ("thiếu nhi", "children"),
    "unknown": ("không rõ", "unknown"),
}

Figures = dict[str, int | None]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReportQuery(_Frozen):
    """A report's question: local days ``start`` to ``end`` inclusive, in the library's time
    zone. ``sites`` empty means every site. Checked by ``fleet.reports.query.check``."""

    start: date
    end: date
    sites: tuple[str, ...] = ()
    by: Granularity = "day"
    per_site: bool = True
    per_kiosk: bool = False
    compare: bool = Field(default=True, description="Also the same period a year earlier")
    lang: Language = "vi"


class Row(_Frozen):
    """The figures of one period (of one site, or one kiosk)."""

    period: str = Field(
        description="2026-03-05T14 (hour), 2026-03-05 (day), 1-7 (weekday, 1 = Monday), "
        "2026-03 (month), 2026-Q1 (quarter), 2026 (year), total"
    )
    site: str | None = None
    device_id: str | None = None
    figures: Figures
    may_still_grow: bool = Field(
        description="A kiosk of this row has not reported everything up to the period's end"
    )


class KioskProgress(_Frozen):
    """Up to when a kiosk's events have arrived at central."""

    device_id: str
    site: str
    role: str | None
    complete_up_to: datetime | None = Field(
        description="Every event of this kiosk that happened before this time is counted; "
        "null when it has sent nothing yet"
    )


class Report(_Frozen):
    query: ReportQuery
    timezone: str
    generated_at: datetime
    min_cell: int = Field(description="Breakdowns by age band hide cells below this count")
    rows: list[Row]
    total: Figures = Field(description="The whole period (of the sites asked)")
    previous_year: Figures | None = Field(
        default=None, description="The same period a year earlier (compare=true)"
    )
    change_pct: dict[str, float | None] = Field(
        default_factory=dict, description="Change against a year earlier, in %; null from 0"
    )
    previous_rows: list[Row] = Field(
        default_factory=list, description="The rows of the same period a year earlier"
    )
    complete: list[KioskProgress]
    may_still_grow: bool = Field(description="Some figure of this report may still grow")
    labels: dict[str, str] = Field(description="Metric names in the report's language")


class ReportError(ValueError):
    """A question no report answers; ``field`` names the parameter at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def label(metric: str, lang: str) -> str:
    """A metric's name in ``lang``; a breakdown is its family's name and its key."""
    family, _, key = metric.partition(".")
    names = METRICS.get(family, (family, family))
    name = names[0] if lang == "vi" else names[1]
    if not key:
        return name
    band = BAND_LABELS.get(key)
    if band is not None:
        return f"{name}: {band[0] if lang == 'vi' else band[1]}"
    return f"{name}: {key}"

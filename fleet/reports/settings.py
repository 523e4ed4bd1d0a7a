"""The ``[reports]`` section of central's configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from biblioedge.settings import StrictModel


class ReportsConfig(StrictModel):
    timezone: str = Field(
        default="Asia/Ho_Chi_Minh",
        description="The library's time zone: days, hours and weekdays of the reports are its "
        "local ones. Its offsets from UTC must be whole hours (rollups are kept per UTC hour)",
    )
    passback_s: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="Visits: a reader granted again at the same site within this many seconds "
        "of an earlier grant is the same visit (the gates' anti-passback window)",
    )
    min_cell: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Breakdowns by a reader attribute (adults/children) hide every cell of a "
        "row when one of them counts fewer readers than this (and more than none)",
    )
    child_under: int = Field(
        default=16,
        ge=1,
        le=30,
        description="Age under which a reader counts as a child (age band kept at registration)",
    )

    @field_validator("timezone")
    @classmethod
    def _whole_hours(cls, value: str) -> str:
        try:
            zone = ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        start = datetime(2000, 1, 1, tzinfo=UTC)
        for week in range(0, 52 * 40, 2):  # DST rules of the years reports cover
            offset = (start + timedelta(weeks=week)).astimezone(zone).utcoffset()
            if offset is None or offset.total_seconds() % 3600:
                raise ValueError(f"{value} is not a whole number of hours from UTC")
        return value

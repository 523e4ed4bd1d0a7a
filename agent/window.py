"""Maintenance windows: when a kiosk may start installing (the site's quiet hours)."""

from __future__ import annotations

from datetime import datetime


def in_window(spec: str | None, now: datetime) -> bool:
    """``"22:00-06:00"`` (local time, may wrap midnight); no window means any time."""
    if not spec:
        return True
    start_s, _, end_s = spec.partition("-")
    sh, sm = (int(x) for x in start_s.split(":"))
    eh, em = (int(x) for x in end_s.split(":"))
    start, end, minute = sh * 60 + sm, eh * 60 + em, now.hour * 60 + now.minute
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end


def valid_window(spec: str) -> str:
    try:
        start_s, sep, end_s = spec.partition("-")
        parts = [int(x) for t in (start_s, end_s) for x in t.split(":")]
    except ValueError:
        parts = []
    if not sep or len(parts) != 4 or not (0 <= parts[0] < 24 and 0 <= parts[2] < 24):
        raise ValueError("a maintenance window is HH:MM-HH:MM")
    if not (0 <= parts[1] < 60 and 0 <= parts[3] < 60):
        raise ValueError("a maintenance window is HH:MM-HH:MM")
    return spec

import json
import logging

import pytest

from biblioedge.logs import HumanFormatter, JsonFormatter, fields


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("biblioedge.agent", logging.WARNING, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_structured_fields_and_vietnamese_text() -> None:
    line = JsonFormatter().format(record("Xin chào bạn đọc", **fields(device="gate-01", depth=3)))
    doc = json.loads(line)
    assert doc["level"] == "warning" and doc["logger"] == "biblioedge.agent"
    assert doc["device"] == "gate-01" and doc["depth"] == 3
    assert doc["ts"].endswith("+00:00")
    assert "\n" not in line


def test_json_lines_include_the_exception() -> None:
    try:
        raise ValueError("hỏng")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    doc = json.loads(JsonFormatter().format(rec))
    assert "ValueError: hỏng" in doc["exc"]


def test_human_format_appends_fields(caplog: pytest.LogCaptureFixture) -> None:
    text = HumanFormatter().format(record("outbox full", **fields(depth=200)))
    assert "WARNING" in text and text.endswith("outbox full depth=200")

"""The IT pages' words and the small rules behind them, without a browser: both languages
have every key (NFC), codes become words, a mistyped wave is caught, a crafted message code is
not shown; and kiosks that run the face engine say which models they run."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.models_report import reported_models
from biblioedge.fleet.dashboard_text import catalogue
from biblioedge.fleet.itdash import (
    HISTORY_DAYS,
    SERIES,
    View,
    activity,
    known_message,
    parse_waves,
    sayer,
)
from biblioedge.fleet.repo import Repo


def test_both_languages_have_every_word_in_nfc() -> None:
    vi, en = catalogue("vi"), catalogue("en")
    assert vi.keys() == en.keys()
    for words in (vi, en):
        assert all(w and unicodedata.is_normalized("NFC", w) for w in words.values())
    # every message a redirect may carry has words
    from biblioedge.fleet.itdash import MESSAGES

    assert all(f"msg_{m}" in vi for m in MESSAGES)


def test_codes_become_words_and_free_text_stays() -> None:
    say = sayer("vi")
    assert say("unknown_face") == "không nhận ra khuôn mặt"
    assert say("update 0.2.1: rolled_back") == "cập nhật 0.2.1: đã hoàn tác"
    assert say("grant") == "cho vào"
    assert say("no_such_code_here") == "no_such_code_here"
    # a sentence from a kiosk keeps its plain words (only a leading code word is mapped)
    assert say("the camera is down") == "the camera is down"
    assert sayer("en")("disk_full") == "disk full"


def test_waves_views_and_messages() -> None:
    assert parse_waves("1, 10%,100%") == [1, "10%", "100%"]
    for bad in ("", "1,abc%", "0", "101%", "1;2", ",".join(["1"] * 11), "1.5"):
        assert parse_waves(bad) is None, bad
    assert known_message("busy") == "msg_busy"
    assert known_message("Call 0900 now") is None and known_message(None) is None
    view = View.of({"state": "<b>", "sort": "drop", "role": "x", "q": " gate " + "x" * 100})
    assert (view.state, view.sort, view.role) == ("", "site", "")
    assert view.q.startswith("gate") and len(view.q) == 64


def test_kiosks_running_the_face_engine_report_their_models(tmp_path: Path) -> None:
    def cfg(role: str, **extra: object) -> AgentConfig:
        return AgentConfig.model_validate(
            {"role": role, "site": "tv-tinh", "device_id": f"{role}-1", "data_dir": tmp_path}
            | extra
        )

    builtin = {"detect": "dlib-hog@1", "embed": "dlib-resnet@1"}
    assert reported_models(cfg("gate"), {}) == builtin
    assert reported_models(cfg("desk"), {"embed": "arc@2"}) == {**builtin, "embed": "arc@2"}
    assert reported_models(cfg("exitgate"), {}) == {}
    assert reported_models(cfg("selfcheck"), {}) == {}  # no camera by default
    with_camera = cfg("selfcheck", selfcheck={"camera": "sim"})
    assert reported_models(with_camera, {}) == builtin


def test_a_halt_reason_in_words_with_waves_counted_from_one() -> None:
    say = sayer("vi")
    assert say.halt("wave 0: 2 of 3 failed (self-1: rolled_back)") == (
        "Đợt 1: 2/3 thiết bị lỗi (self-1: đã hoàn tác)"
    )
    assert say.halt("wave 1: 4 component crashes on the new release, 0 before") == (
        "Đợt 2: 4 lần thành phần bị lỗi với bản mới, trước đó 0"
    )
    assert sayer("en").halt("wave 2: gate false rejects 9.0% on the new release, 1.0% before") == (
        "Wave 3: gate false rejects 9.0% on the new release, 1.0% before"
    )
    assert say.halt("aborted by it") == "aborted by it"  # not a halt it knows: as it is


def test_a_kiosks_activity_is_counted_by_day_and_kind(repo: Repo) -> None:
    from test_itdash import send

    repo.register_device("gate-1", "tv-tinh", "gate")
    repo.register_device("gate-2", "tv-tinh", "gate")
    send(
        repo,
        "gate-1",
        "tv-tinh",
        [
            ("gate.decision", {"decision": "grant", "method": "face", "patron_id": "P1"}),
            ("gate.decision", {"decision": "deny", "method": "face", "reason": "unknown_face"}),
            ("device.storage_full", {}),
            ("device.started", {}),  # not trouble, not counted
        ],
    )
    send(repo, "gate-2", "tv-tinh", [("gate.decision", {"decision": "grant", "method": "face"})])
    got = activity(repo, "gate-1")
    assert len(got["days"]) == HISTORY_DAYS and not got["truncated"]
    # summed over the fortnight: the run may straddle midnight
    total = {s: sum(got["series"][s]) for s in SERIES}
    assert total == {"visits": 1, "refused": 1, "loans": 0, "returns": 0, "trouble": 1}

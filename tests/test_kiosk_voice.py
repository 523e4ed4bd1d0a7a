"""The kiosk's voice: tones and spoken prompts for what the screen shows, through the
product's own sound driver writing WAV files (what a reader would have heard, in order), with
Debian's espeak-ng as the speech engine (installed by scripts/setup.sh)."""

from __future__ import annotations

import io
import logging
import shutil
import time
import wave
from array import array
from pathlib import Path

import pytest

from biblioedge.agent.desk.flow import DeskView
from biblioedge.agent.exitgate.flow import AlarmItem, ExitView
from biblioedge.agent.gate.flow import GateView
from biblioedge.agent.selfcheck.flow import ItemResult
from biblioedge.agent.selfcheck.station import SelfcheckView
from biblioedge.agent.ui_config import SoundConfig
from biblioedge.agent.voice import Voice
from biblioedge.drivers.sound import DirOutput, tone
from biblioedge.kiosk.voice import kiosk_voice

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng (Debian) is installed by setup.sh"
)


def samples(path: Path) -> tuple[array[int], int]:
    with wave.open(str(path)) as w:
        return array("h", w.readframes(w.getnframes())), w.getframerate()


def rms(data: array[int]) -> float:
    return (sum(s * s for s in data) / max(1, len(data))) ** 0.5


def heard(folder: Path, n: int) -> list[Path]:
    """The first ``n`` sounds written, waiting for them (the voice plays on its own thread)."""
    deadline = time.monotonic() + 60
    while len(found := sorted(folder.glob("*.wav"))) < n:
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return found


def voice(tmp_path: Path, role: str, **settings: object) -> Voice:
    cfg = SoundConfig(output=f"dir:{tmp_path}", **settings)  # type: ignore[arg-type]
    return kiosk_voice(role, lambda: cfg)


@needs_espeak
def test_a_grant_chimes_and_greets_in_vietnamese_once(tmp_path: Path) -> None:
    v = voice(tmp_path, "gate")
    try:
        v.heard(GateView("idle", "welcome_idle"))
        granted = GateView("granted", "welcome_name", name="An")
        for _ in range(5):  # the screen's tick hands the same view ten times a second
            v.heard(granted)
        v.heard(GateView("denied", "scan_card"))
        files = heard(tmp_path, 4)
        v.heard(GateView("out_of_service", "out_of_service"))  # a marker: nothing between
        heard(tmp_path, 6)
    finally:
        v.close()
    names = [p.name.split("-", 1)[1] for p in sorted(tmp_path.glob("*.wav"))]
    assert names == ["grant.wav", "speech.wav", "refusal.wav", "speech.wav"] + [
        "refusal.wav",
        "speech.wav",
    ]
    speech, rate = samples(files[1])
    assert len(speech) / rate > 0.8 and rms(speech) > 300  # words, not silence
    chime, _ = samples(files[0])
    assert len(chime) / 22050 < 0.5  # short


@needs_espeak
def test_volume_scales_tones_and_speech(tmp_path: Path) -> None:
    loud = voice(tmp_path / "loud", "exitgate", volume=100)
    soft = voice(tmp_path / "soft", "exitgate", volume=25)
    alarm = ExitView("alarm", "exit_alarm", items=(AlarmItem("30000007", "Lịch sử Tây Ninh"),))
    try:
        for v in (loud, soft):
            v.heard(alarm)
        a = heard(tmp_path / "loud", 2)
        b = heard(tmp_path / "soft", 2)
    finally:
        loud.close()
        soft.close()
    assert a[0].name.endswith("alarm.wav") and a[1].name.endswith("speech.wav")
    for x, y in zip(a, b, strict=True):
        ratio = rms(samples(y)[0]) / rms(samples(x)[0])
        assert 0.2 < ratio < 0.3, (x.name, ratio)


def test_a_missing_speech_engine_leaves_tones_and_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "biblioedge.agent.voice")
    v = voice(tmp_path, "selfcheck", engine="/nonexistent/espeak-ng")
    try:
        v.heard(SelfcheckView("refused", "selfcheck_refused_reader_blocked"))
        v.heard(SelfcheckView("idle", "selfcheck_idle"))
        v.heard(SelfcheckView("returned", "selfcheck_returned", items=()))
        files = heard(tmp_path, 2)
    finally:
        v.close()
    assert [p.name for p in files] == ["0001-refusal.wav", "0002-grant.wav"]
    said = [r for r in caplog.records if "speech engine" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


def test_off_and_a_failing_output_cost_nothing_but_sound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    off = voice(tmp_path / "off", "desk", enabled=False)
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # the output folder cannot be made: every play fails
    failing = kiosk_voice("desk", lambda: SoundConfig(output=f"dir:{blocked}/x", speech=False))
    issued = DeskView("issued", "card_issued", patron_id="BE0000042")
    refused = DeskView("refused", "registration_refused")
    try:
        for v in (off, failing):
            v.heard(issued)
            v.heard(refused)
        deadline = time.monotonic() + 30
        while "kiosk sound failed" not in caplog.text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        off.close()
        failing.close()
    assert not (tmp_path / "off").exists()
    assert caplog.text.count("kiosk sound failed") == 1  # once, until it works again


def test_self_check_results_chime_per_loan_and_name_the_problem(tmp_path: Path) -> None:
    out = DirOutput(tmp_path)
    v = kiosk_voice("selfcheck", lambda: SoundConfig(speech=False), output=out)
    lent = ItemResult("30000001", True, "Truyện Kiều", due="2026-12-16")
    fee = ItemResult("30000007", False, "Lịch sử Tây Ninh", problem="fee_required", fee="5000")
    try:
        v.heard(SelfcheckView("results", "selfcheck_results", items=(lent,)))
        v.heard(SelfcheckView("results", "selfcheck_results", items=(lent,)))
        v.heard(SelfcheckView("results", "selfcheck_results", items=(lent, fee)))
        files = heard(tmp_path, 2)
    finally:
        v.close()
    assert [p.name for p in files] == ["0001-grant.wav", "0002-refusal.wav"]


def test_tones_are_distinct_and_click_free() -> None:
    grant, refusal, alarm = (samples_of(tone(k, 100)) for k in ("grant", "refusal", "alarm"))
    assert len(alarm) > 2 * len(grant)  # the alarm lasts; the others are short
    for s in (grant, refusal, alarm):
        assert abs(s[0]) < 500 and abs(s[-1]) < 500  # ramps in and out
    assert rms(samples_of(tone("grant", 0))) == 0


def samples_of(wav: bytes) -> array[int]:
    with wave.open(io.BytesIO(wav)) as w:
        return array("h", w.readframes(w.getnframes()))


def test_volume_and_on_off_are_tunable_from_central_the_engine_is_not(tmp_path: Path) -> None:
    from biblioedge.agent.config import apply_tunables, validate_config
    from biblioedge.settings import ConfigError

    base = validate_config(
        {"role": "gate", "site": "tv-tinh", "device_id": "gate-01", "data_dir": str(tmp_path)}
    )
    quiet = apply_tunables(base, {"sound": {"volume": 20, "speech": False}})
    assert quiet.sound.volume == 20 and not quiet.sound.speech
    named = apply_tunables(base, {"screen": {"library_name": "Thư viện huyện"}})
    assert named.screen.library_name == "Thư viện huyện"
    with pytest.raises(ConfigError):
        apply_tunables(base, {"sound": {"engine": "/bin/sh"}})
    with pytest.raises(ConfigError):
        apply_tunables(base, {"sound": {"volume": 101}})


def test_names_are_spoken_only_when_configured() -> None:
    from biblioedge.kiosk.voice import cue

    granted = GateView("granted", "welcome_name", name="An")
    quiet = cue("gate", granted)
    named = cue("gate", granted, say_names=True)
    assert quiet is not None and named is not None
    assert quiet.speech == "Xin chào! Mời bạn vào" and quiet.tone == "grant"
    assert named.speech == "Xin chào, An! Mời bạn vào"
    ready = cue("selfcheck", SelfcheckView("ready", "selfcheck_place_books", name="Trần Thị Bình"))
    assert ready is not None and "Bình" not in ready.speech and ready.speech.startswith("Xin chào!")


@needs_espeak
def test_kiosk_run_speaks_what_its_screen_shows(tmp_path: Path) -> None:
    """The agent with its screen, as a kiosk runs it: strangers at the gate (no one is
    enrolled) hear the refusal tone and the prompt to scan their card."""
    import signal
    import subprocess
    import sys

    import cv2
    from samples import insightface_images

    camera = tmp_path / "camera"
    camera.mkdir()
    cv2.imwrite(str(camera / "0.jpg"), cv2.imread(str(insightface_images() / "t1.jpg")))
    sounds = tmp_path / "sounds"
    conf = tmp_path / "agent.toml"
    conf.write_text(
        f'role = "gate"\nsite = "tv-tinh"\ndevice_id = "gate-78"\ndata_dir = "{tmp_path}"\n'
        '[broker]\nurl = "mqtt://127.0.0.1:1"\n[metrics]\nenabled = false\n'
        "[security]\nrequire = false\n"
        f'[gate]\nenabled = true\ncamera = "sim:{camera}"\nrelay = "sim"\n'
        f'[sound]\noutput = "dir:{sounds}"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "biblioedge", "kiosk", "run", "--config", str(conf), "--window"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180  # the screen, the agent and the face engine start
        while len(list(sounds.glob("*.wav"))) < 2:
            assert proc.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.2)
        names = sorted(p.name for p in sounds.glob("*.wav"))[:2]
        assert names == ["0001-refusal.wav", "0002-speech.wav"]
        speech, rate = samples(sounds / names[1])
        assert len(speech) / rate > 1.0 and rms(speech) > 300
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0

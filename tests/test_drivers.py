"""Drivers against their simulators: real pty pairs, real OpenCV capture of a real file."""

import io
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import segno

from biblioedge.drivers.camera import OpenCVCamera, SimulatedCamera
from biblioedge.drivers.codes import (
    Code,
    PyzbarDecoder,
    SerialScanner,
    WedgeAssembler,
    ZxingDecoder,
    frame_decoder,
)
from biblioedge.drivers.errors import DeviceNotResponding, DeviceUnavailable
from biblioedge.drivers.gate import CH340Relay, LineGate, relay_frame
from biblioedge.drivers.sim_serial import RelayBoardSimulator, TurnstileSimulator


def wait(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def qr_frame(text: str, size: tuple[int, int] = (1280, 720), scale: int = 5) -> np.ndarray:
    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="png", scale=scale, border=4)
    code = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    frame = np.full((size[1], size[0], 3), 190, np.uint8)
    frame[100 : 100 + code.shape[0], 400 : 400 + code.shape[1]] = code
    return frame


# -- codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", [ZxingDecoder(), PyzbarDecoder()], ids=["zxing", "pyzbar"])
def test_qr_on_a_frame_is_read_with_vietnamese_text(decoder: object) -> None:
    text = "BE1.thẻ-thư-viện.P000123"
    codes = decoder.decode(qr_frame(text))  # type: ignore[attr-defined]
    assert [c.text for c in codes] == [text]
    assert codes[0].source == "camera" and len(codes[0].corners) == 4
    assert decoder.decode(np.full((720, 1280, 3), 128, np.uint8)) == []  # type: ignore[attr-defined]


def test_unknown_decoder_name_is_refused() -> None:
    assert frame_decoder("zxing").name == "zxing-cpp"
    with pytest.raises(ValueError, match="unknown code decoder"):
        frame_decoder("opencv")


def test_wedge_tells_a_scanner_from_a_person() -> None:
    w = WedgeAssembler(max_gap=0.05)
    t = 100.0
    out = None
    for ch in "2000000123\r":
        t += 0.01
        out = w.key(ch, t) or out
    assert out == Code("2000000123", "wedge", "wedge")
    for ch in "2000000123":  # typed by hand: 0.3 s between keys
        t += 0.3
        assert w.key(ch, t) is None
    assert w.key("\n", t + 0.01) is None
    for ch in "ab\x07cd\r":  # control characters: dropped
        t += 0.01
        assert w.key(ch, t) is None


def test_serial_scanner_reads_lines_and_drops_noise() -> None:
    class Wire(TurnstileSimulator):
        def feed(self, data: bytes) -> None:
            pass

    sim = Wire().start()
    got: list[Code] = []
    scanner = SerialScanner(sim.port, on_code=got.append)
    scanner.start()
    try:
        time.sleep(0.2)
        sim.write(b"2000000123\r\n\xff\xfe\xfd\r\nbad\x01line\n" + b"x" * 5000 + b"\nP000777\r")
        wait(lambda: len(got) >= 2)
        assert [c.text for c in got] == ["2000000123", "P000777"]
        assert scanner.rejected >= 2
    finally:
        scanner.stop()
        sim.stop()


# -- gate controllers ----------------------------------------------------------------------


def test_line_gate_open_alarm_status_and_door_events() -> None:
    sim = TurnstileSimulator().start()
    events: list[str] = []
    gate = LineGate(sim.port, on_event=events.append)
    try:
        gate.ping()
        gate.open(1500)
        # open() returns once the turnstile took the command, not when the pulse ends
        assert "DOOR CLOSED" not in events
        assert sim.state.opens and sim.state.opens[-1][1] == 1500
        wait(lambda: "DOOR CLOSED" in events)
        assert events == ["DOOR OPEN", "PASSED", "DOOR CLOSED"] and gate.door == "closed"
        gate.alarm(True)
        assert gate.status() == {"door": "closed", "alarm": "on"}
        with pytest.raises(ValueError):
            gate.open(5)
    finally:
        gate.close()
        sim.stop()


def test_line_gate_survives_noise_and_reports_a_dead_controller() -> None:
    sim = TurnstileSimulator(noise=True).start()
    gate = LineGate(sim.port, reply_timeout=0.3)
    try:
        gate.open(100)  # garbage before every answer: still works
        assert gate.noise >= 1
        sim.mute = True
        with pytest.raises(DeviceNotResponding, match="did not answer"):
            gate.open(100)
    finally:
        gate.close()
        sim.stop()


def test_ch340_relay_pulse_and_frames() -> None:
    assert relay_frame(1, True) == bytes.fromhex("A00101A2")
    assert relay_frame(1, False) == bytes.fromhex("A00100A1")
    board = RelayBoardSimulator().start()
    relay = CH340Relay(board.port, alarm_channel=2)
    try:
        relay.open(150)
        wait(lambda: board.relays.get(1) is True)
        wait(lambda: board.relays.get(1) is False)
        (t_on, _, _), (t_off, _, _) = board.history[:2]
        assert 0.12 <= t_off - t_on <= 0.5
        relay.alarm(True)
        wait(lambda: board.relays.get(2) is True)
        board.write(b"")  # nothing to read back: a relay board never answers
        assert board.bad_frames == 0
    finally:
        relay.close()
        board.stop()


def test_missing_serial_port_is_unavailable() -> None:
    with pytest.raises(DeviceUnavailable, match="cannot open"):
        LineGate("/dev/ttyNOPE0")


# -- cameras -------------------------------------------------------------------------------


def test_simulated_camera_newest_frame_unplug_and_replug() -> None:
    frames = [np.full((48, 64, 3), i * 20, np.uint8) for i in range(5)]
    cam = SimulatedCamera(frames, fps=50, stall_timeout=0.3)
    statuses: list[str] = []
    cam.on_status = statuses.append
    cam.start()
    try:
        f1 = cam.latest(timeout=2)
        assert f1 is not None and cam.status == "ok"
        f2 = cam.latest(newer_than=f1.seq, timeout=2)
        assert f2 is not None and f2.seq > f1.seq
        cam.unplug()
        wait(lambda: cam.status in ("stalled", "unavailable"))
        cam.replug()
        wait(lambda: cam.status == "ok")
        assert cam.stats.stalls >= 1 and cam.stats.reconnects >= 1
        assert statuses[:2] == ["starting", "ok"] and "stalled" in statuses
    finally:
        cam.stop()
    assert cam.status == "stopped"


def test_opencv_camera_reads_a_video_file_and_reconnects_at_its_end(tmp_path: Path) -> None:
    video = tmp_path / "gate.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 20, (160, 120))
    for i in range(10):
        writer.write(np.full((120, 160, 3), i * 20, np.uint8))
    writer.release()
    cam = OpenCVCamera(str(video), stall_timeout=0.2, backoff_cap=0.2)
    cam.start()
    try:
        first = cam.latest(timeout=3)
        assert first is not None and first.image.shape == (120, 160, 3)
        wait(lambda: cam.stats.reconnects >= 1, timeout=10)  # end of file: treated as a stall
        wait(lambda: cam.stats.frames > 10, timeout=10)  # ...and reopened
    finally:
        cam.stop()


def test_unavailable_camera_keeps_retrying() -> None:
    cam = OpenCVCamera("/dev/video99", backoff_cap=0.1)
    cam.start()
    try:
        wait(lambda: cam.status == "unavailable")
        assert cam.latest(timeout=0.2) is None
    finally:
        cam.stop()


def test_simulated_camera_from_a_folder(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 40, 3), 50 * i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    cam = SimulatedCamera(tmp_path, fps=100)
    assert len(cam._images) == 3
    with pytest.raises(ValueError, match="no frames"):
        SimulatedCamera(tmp_path / "notes.txt")


def test_line_buffer_drops_overlong_lines_whole() -> None:
    from biblioedge.drivers.codes import LineBuffer

    lb = LineBuffer(5)
    assert lb.feed(b"abc\r\nabcdefghij") == [b"abc"]
    assert lb.feed(b"klm\nxy") == [] and lb.take_overflows() == 1
    assert lb.feed(b"z\r") == [b"xyz"]


def test_bench_codes_reports_both_decoders() -> None:
    from biblioedge.bench.codes import bench_codes

    doc = bench_codes(frames=12, repeat=1)
    for config in ("library_formats", "qr_only"):
        per = doc["decoders"][config]
        for name in ("zxing-cpp", "pyzbar"):
            assert per[name]["p50_ms"] > 0 and 0 <= per[name]["read_rate"] <= 1
            assert per[name]["false_reads"] == 0
        assert per["zxing-cpp"]["read_rate"] == 1.0
    assert doc["frames_with_code"] == 9

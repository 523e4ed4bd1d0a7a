"""``biblioedge bench codes``: QR reading on 1280x720 frames, zxing-cpp and pyzbar side by side.

Frames: library-card tokens as QR codes at module sizes 3-8 px, rotated up to 30 degrees,
with sensor noise, some blurred or dimmed, plus frames with no code at all (a false read there
would be a wrong person let in). Both decoders look for the same formats, the ones a library
uses (QR, Code 128, EAN-13).
"""

from __future__ import annotations

import io
import time
from typing import Any

import cv2
import numpy as np
import segno

from biblioedge.drivers.codes import LIBRARY_FORMATS, PyzbarDecoder, ZxingDecoder


def make_frames(n: int, seed: int = 0) -> list[tuple[Any, str | None]]:
    rng = np.random.default_rng(seed)
    frames: list[tuple[Any, str | None]] = []
    for i in range(n):
        if i % 4 == 3:  # a quarter of the frames carry no code
            empty = np.full((720, 1280), int(rng.integers(90, 200)), np.uint8)
            noisy = np.clip(empty + rng.normal(0, 8, empty.shape), 0, 255).astype(np.uint8)
            frames.append((noisy, None))
            continue
        text = f"BE1.{rng.integers(0, 10**12):012d}.{rng.integers(0, 10**15):015d}"
        buf = io.BytesIO()
        segno.make(text, error="m").save(buf, kind="png", scale=int(rng.integers(3, 9)), border=4)
        code: Any = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)
        bg = int(rng.integers(140, 220))
        f: Any = np.full((720, 1280), bg, np.uint8)
        h, w = code.shape
        y, x = int(rng.integers(0, 720 - h)), int(rng.integers(0, 1280 - w))
        f[y : y + h, x : x + w] = code
        m = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), float(rng.uniform(-30, 30)), 1.0)
        f = cv2.warpAffine(f, m, (1280, 720), borderValue=bg)
        if rng.random() < 0.3:
            f = cv2.GaussianBlur(f, (0, 0), float(rng.uniform(0.6, 1.2)))
        if rng.random() < 0.3:
            f = (f * rng.uniform(0.45, 0.7)).astype(np.uint8)
        f = np.clip(f + rng.normal(0, 6, f.shape), 0, 255).astype(np.uint8)
        frames.append((f, text))
    return frames


def _run(
    decoder: Any, data: list[tuple[Any, str | None]], repeat: int, with_code: int
) -> dict[str, Any]:
    times, reads, false_reads = [], 0, 0
    for image, text in data:
        found: list[str] = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            found = [c.text for c in decoder.decode(image)]
            times.append(time.perf_counter() - t0)
        if text is not None and text in found:
            reads += 1
        false_reads += sum(1 for f in found if f != text)
    ms = np.array(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "read_rate": round(reads / with_code, 4),
        "false_reads": false_reads,
    }


def bench_codes(frames: int = 80, repeat: int = 3) -> dict[str, Any]:
    data = make_frames(frames)
    with_code = sum(1 for _, t in data if t is not None)
    result: dict[str, Any] = {
        "bench": "codes",
        "frames": len(data),
        "frames_with_code": with_code,
        "frame_size": [1280, 720],
        "decoders": {},
    }
    for label, formats in (("library_formats", LIBRARY_FORMATS), ("qr_only", ("QRCode",))):
        per: dict[str, Any] = {}
        for decoder in (ZxingDecoder(formats), PyzbarDecoder(formats)):
            per[decoder.name] = _run(decoder, data, repeat, with_code)
        per["zxing_speedup_p50"] = round(
            per["pyzbar"]["p50_ms"] / max(per["zxing-cpp"]["p50_ms"], 1e-6), 2
        )
        result["decoders"][label] = per
    main = result["decoders"]["library_formats"]
    z, p = main["zxing-cpp"], main["pyzbar"]
    result["targets"] = {
        "zxing>=4x_faster": main["zxing_speedup_p50"] >= 4,
        "zxing>=4x_faster_qr_only": result["decoders"]["qr_only"]["zxing_speedup_p50"] >= 4,
        "zxing_read_rate>=pyzbar": z["read_rate"] >= p["read_rate"],
        "no_false_reads": z["false_reads"] == 0 and p["false_reads"] == 0,
    }
    return result

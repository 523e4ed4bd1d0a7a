"""Cameras: a V4L2 device, an RTSP/HTTP stream or a video file through OpenCV, and a simulator.

Both read on a background thread and keep only the newest frame: recognition wants the
freshest picture of the person in front of the gate, never a backlog of stale ones. A source
that stops delivering (unplugged USB camera, stalled stream, end of file) is released and
reopened with capped, jittered backoff; ``status`` and the counters tell the agent, which tells
the screen ("out of service") and the metrics.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

Status = Literal["starting", "ok", "stalled", "unavailable", "stopped"]
Image = npt.NDArray[np.uint8]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class Frame:
    image: Image = field(repr=False)
    seq: int
    ts: float  # time.monotonic() when captured
    scene: int = 0  # simulated cameras: which show() the frame came from


@dataclass
class CameraStats:
    frames: int = 0
    reconnects: int = 0
    stalls: int = 0
    read_errors: int = 0


class Camera(Protocol):
    status: Status
    stats: CameraStats

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def latest(self, newer_than: int = -1, timeout: float = 1.0) -> Frame | None: ...


class _NewestFrame:
    """A one-slot mailbox: writers overwrite, readers wait for a sequence number they lack."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._seq = 0

    def put(self, image: Image, scene: int = 0) -> None:
        with self._cond:
            self._seq += 1
            self._frame = Frame(image, self._seq, time.monotonic(), scene)
            self._cond.notify_all()

    def get(self, newer_than: int, timeout: float) -> Frame | None:
        with self._cond:
            self._cond.wait_for(
                lambda: self._frame is not None and self._frame.seq > newer_than, timeout
            )
            frame = self._frame
            return frame if frame is not None and frame.seq > newer_than else None


class _ThreadedCamera:
    """Reader thread, stall detection and reconnect; subclasses open and read the source."""

    def __init__(self, stall_timeout: float, backoff_cap: float) -> None:
        self.status: Status = "stopped"
        self.stats = CameraStats()
        self._box = _NewestFrame()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stall_timeout = stall_timeout
        self.backoff_cap = backoff_cap
        self.on_status: Callable[[Status], None] | None = None

    def _set(self, status: Status) -> None:
        if status != self.status:
            self.status = status
            if self.on_status is not None:
                self.on_status(status)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._set("starting")
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._set("stopped")

    def latest(self, newer_than: int = -1, timeout: float = 1.0) -> Frame | None:
        return self._box.get(newer_than, timeout)

    # -- subclass hooks -------------------------------------------------------------------

    def _open(self) -> bool:
        raise NotImplementedError

    def _read(self) -> Image | None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _scene(self) -> int:
        return 0

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if not self._open():
                self._set("unavailable")
                attempt += 1
                self._sleep(attempt)
                continue
            attempt = 0
            last_frame = time.monotonic()
            while not self._stop.is_set():
                image = self._read()
                if image is not None:
                    self._box.put(image, self._scene())
                    self.stats.frames += 1
                    last_frame = time.monotonic()
                    self._set("ok")
                    continue
                self.stats.read_errors += 1
                if time.monotonic() - last_frame > self.stall_timeout:
                    self.stats.stalls += 1
                    self._set("stalled")
                    break
                time.sleep(0.005)
            self._close()
            if not self._stop.is_set():
                self.stats.reconnects += 1
                attempt += 1
                self._sleep(attempt)

    def _sleep(self, attempt: int) -> None:
        ceiling = min(self.backoff_cap, 0.1 * 2**attempt)
        self._stop.wait(random.uniform(ceiling / 2, ceiling))


class OpenCVCamera(_ThreadedCamera):
    """``source``: a V4L2 index (0) or path (/dev/video0), an rtsp:// or http:// URL, a file."""

    def __init__(
        self,
        source: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        stall_timeout: float = 2.0,
        backoff_cap: float = 5.0,
    ) -> None:
        super().__init__(stall_timeout, backoff_cap)
        self.source = source
        self.size = (width, height)
        self.fps = fps
        self._cap: Any = None

    def _open(self) -> bool:
        import cv2

        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            return False
        w, h = self.size
        if w and h:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
        self._cap = cap
        return True

    def _read(self) -> Image | None:
        ok, image = self._cap.read()
        return image if ok and image is not None and image.size else None

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class SimulatedCamera(_ThreadedCamera):
    """A folder of images or a video file, looped at ``fps``: the gate's camera in the demo,
    the benchmark and the tests. ``unplug()``/``replug()`` simulate a cable pulled out."""

    def __init__(
        self,
        source: Path | list[Image],
        *,
        fps: float = 15.0,
        loop: bool = True,
        stall_timeout: float = 1.0,
        backoff_cap: float = 1.0,
    ) -> None:
        super().__init__(stall_timeout, backoff_cap)
        self.fps = fps
        self.loop = loop
        self._images = self._load(source)
        self._lock = threading.Lock()
        self._generation = 0
        self._last_scene = 0
        self._index = 0
        self._next_at = 0.0
        self._plugged = threading.Event()
        self._plugged.set()

    @staticmethod
    def _load(source: Path | list[Image]) -> list[Image]:
        import cv2

        if isinstance(source, list):
            images = source
        elif source.is_dir():
            files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            images = [
                np.asarray(img, np.uint8) for p in files if (img := cv2.imread(str(p))) is not None
            ]
        else:
            cap = cv2.VideoCapture(str(source))
            images = []
            while True:
                ok, img = cap.read()
                if not ok:
                    break
                images.append(np.asarray(img, np.uint8))
            cap.release()
        if not images:
            raise ValueError(f"no frames in {source}")
        return images

    def show(self, images: list[Image]) -> None:
        """Replace what the camera sees (the next person walking up), from the next frame on."""
        if not images:
            raise ValueError("show() needs at least one frame")
        with self._lock:
            self._images = list(images)
            self._index = 0
            self._generation += 1

    @property
    def scene(self) -> int:
        return self._generation

    def unplug(self) -> None:
        self._plugged.clear()

    def replug(self) -> None:
        self._plugged.set()

    def _open(self) -> bool:
        self._next_at = time.monotonic()
        return self._plugged.is_set()

    def _read(self) -> Image | None:
        if not self._plugged.is_set():
            time.sleep(0.02)
            return None
        if self._index >= len(self._images):
            if not self.loop:
                time.sleep(0.02)
                return None
            self._index = 0
        delay = self._next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next_at = max(self._next_at + 1.0 / self.fps, time.monotonic() - 1.0)
        with self._lock:
            if self._index >= len(self._images):
                self._index = 0
            image = self._images[self._index]
            self._index += 1
            self._last_scene = self._generation
        return image

    def _scene(self) -> int:
        return self._last_scene

    def _close(self) -> None:
        pass


def open_camera(
    spec: str, *, fps: float = 15.0, width: int | None = None, height: int | None = None
) -> Camera:
    """A camera from its config string: a V4L2 index or path, a URL or video file, or
    ``sim:<folder>`` for the simulated camera."""
    if spec.startswith("sim:"):
        return SimulatedCamera(Path(spec[4:]), fps=fps)
    source: int | str = int(spec) if spec.isdigit() else spec
    return OpenCVCamera(source, width=width, height=height, fps=fps)

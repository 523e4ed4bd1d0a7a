"""Sound out of a kiosk: short tones (grant, refusal, alarm) made here, spoken prompts from
an offline speech engine (espeak-ng, from Debian), each as a WAV played through ALSA
(``aplay``), written to a folder (tests, review), or nowhere.

Tones are synthesized rather than shipped as files so their loudness follows the volume
setting like speech does and nothing needs installing. The grant chime rises (two notes, a
fifth apart), the refusal falls (two low notes), the alarm repeats a harsh high pair: a
reader who does not read the screen still knows which it was. Errors are DriverErrors; the
caller decides how often to say so.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import wave
from array import array
from pathlib import Path
from typing import Protocol

from biblioedge.drivers.errors import DriverError

RATE = 22050
#: (frequency Hz, milliseconds) per note; 0 Hz is a pause
TONES: dict[str, tuple[tuple[float, int], ...]] = {
    "grant": ((659.3, 110), (987.8, 180)),
    "refusal": ((392.0, 140), (0, 40), (293.7, 220)),
    "alarm": ((1318.5, 160), (880.0, 160)) * 3,
}


class SoundError(DriverError):
    """A sound could not be made or played."""


def _wav(samples: array[int], rate: int = RATE) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def tone(kind: str, volume: int) -> bytes:
    """The named tone as a 16-bit mono WAV, at ``volume`` (0-100)."""
    amplitude = 32767 * 0.8 * max(0, min(volume, 100)) / 100
    samples: array[int] = array("h")
    for freq, ms in TONES[kind]:
        n = RATE * ms // 1000
        fade = max(1, min(n // 4, RATE // 200))  # 5 ms ramps: no clicks
        for i in range(n):
            env = min(1.0, i / fade, (n - 1 - i) / fade)
            value = math.sin(2 * math.pi * freq * i / RATE) if freq else 0.0
            samples.append(int(amplitude * env * value))
    return _wav(samples)


def scale(wav: bytes, volume: int) -> bytes:
    """``wav`` (16-bit PCM) with its samples scaled to ``volume`` percent."""
    with wave.open(io.BytesIO(wav)) as r:
        if r.getsampwidth() != 2:
            raise SoundError("the speech engine's output is not 16-bit PCM")
        channels, rate = r.getnchannels(), r.getframerate()
        samples = array("h", r.readframes(r.getnframes()))
    factor = max(0, min(volume, 100)) / 100
    scaled = array("h", (int(s * factor) for s in samples))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(scaled.tobytes())
    return out.getvalue()


class SpeechEngine:
    """espeak-ng (or a compatible command line) turning text into a WAV, offline."""

    def __init__(self, engine: str = "espeak-ng", voice: str = "vi", rate_wpm: int = 150) -> None:
        self.path = shutil.which(engine)
        self.engine, self.voice, self.rate_wpm = engine, voice, rate_wpm

    @property
    def available(self) -> bool:
        return self.path is not None

    def speak(self, text: str) -> bytes:
        if self.path is None:
            raise SoundError(f"speech engine {self.engine!r} not found")
        argv = [self.path, "-v", self.voice, "-s", str(self.rate_wpm), "--stdout", text]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=15, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SoundError(f"{self.engine}: {exc}") from exc
        if done.returncode != 0 or not done.stdout.startswith(b"RIFF"):
            err = done.stderr.decode(errors="replace").strip()[-200:]
            raise SoundError(f"{self.engine} exited {done.returncode}: {err or 'no WAV'}")
        return done.stdout


class SoundOutput(Protocol):
    def play(self, name: str, wav: bytes) -> None:
        """Play one sound to its end (blocking: call from a worker thread)."""


class AlsaOutput:
    """The default sound card through ``aplay`` (alsa-utils)."""

    def __init__(self, player: str = "aplay") -> None:
        self.path = shutil.which(player)
        self.player = player

    @property
    def available(self) -> bool:
        return self.path is not None

    def play(self, name: str, wav: bytes) -> None:
        if self.path is None:
            raise SoundError(f"no {self.player!r} to play sound with")
        try:
            done = subprocess.run(
                [self.path, "-q", "-"], input=wav, capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SoundError(f"{self.player}: {exc}") from exc
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()[-200:]
            raise SoundError(f"{self.player} exited {done.returncode}: {err}")


class DirOutput:
    """Each sound as a numbered WAV file in a folder: what would have been heard, in order."""

    available = True

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def play(self, name: str, wav: bytes) -> None:
        self.count += 1
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{self.count:04d}-{name}.wav"
            tmp = path.with_suffix(".part")
            tmp.write_bytes(wav)
            tmp.rename(path)
        except OSError as exc:
            raise SoundError(f"cannot write {self.folder}: {exc}") from exc


class NullOutput:
    available = False

    def play(self, name: str, wav: bytes) -> None:
        return None


def open_output(spec: str) -> AlsaOutput | DirOutput | NullOutput:
    """``aplay``, ``none`` or ``dir:<folder>``."""
    if spec.startswith("dir:"):
        return DirOutput(Path(spec[4:]))
    if spec == "aplay":
        return AlsaOutput()
    return NullOutput()

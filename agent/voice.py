"""A kiosk's voice: plays the cue (a tone, spoken words) of each new thing its screen shows.

Sounds are made and played on one worker thread, newest first: a queue of at most two, so a
burst of changes never piles up speech that no longer matches the screen. A missing speech
engine turns the spoken prompts off and is said once in the log; the tones need no engine and
keep playing. A missing or failing sound output is said once when it starts failing and once
when it recovers. Nothing here ever touches the flow or the screen: a sound that fails costs
that sound. Which view sounds how is the screen's business (``biblioedge.kiosk.voice``).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from biblioedge.agent.ui_config import SoundConfig
from biblioedge.drivers.errors import DriverError
from biblioedge.drivers.sound import SoundOutput, SpeechEngine, open_output, scale, tone

log = logging.getLogger("biblioedge.agent.voice")


@dataclass(frozen=True)
class Cue:
    """What one view sounds like; ``key`` tells a new view from the same one shown again."""

    key: tuple[Any, ...]
    tone: str | None
    speech: str


class Voice:
    """Plays the cue of each new view on its own thread (see the module docstring)."""

    def __init__(
        self,
        cue_of: Callable[[Any], Cue | None],
        config: Callable[[], SoundConfig],
        *,
        output: SoundOutput | None = None,
        engine: SpeechEngine | None = None,
        warm: tuple[str, ...] = (),
    ) -> None:
        cfg = config()
        self.cue_of, self.config = cue_of, config
        self.output: Any = output if output is not None else open_output(cfg.output)
        self.engine = engine or SpeechEngine(cfg.engine, cfg.voice, cfg.rate_wpm)
        self._last: tuple[Any, ...] | None = None
        self._queue: deque[Cue] = deque(maxlen=2)
        self._wake = threading.Condition()
        self._stopped = False
        self._failing = False
        self._speech_cache: OrderedDict[str, bytes] = OrderedDict()
        self._tones: dict[tuple[str, int], bytes] = {}  # a tone takes 25-90 ms to make
        self._warm = warm  # prompts spoken first and often: made before anyone arrives
        self.played: list[str] = []  # names of what was played, in order (tests, the demo)
        if not getattr(self.output, "available", True):
            log.warning("no sound output (%s): kiosk sounds are off", cfg.output)
        if cfg.speech and not self.engine.available:
            log.warning(
                "speech engine %r not found: spoken prompts are off (tones still play); "
                "install espeak-ng",
                cfg.engine,
            )
        self._thread = threading.Thread(target=self._run, name="kiosk-voice", daemon=True)
        self._thread.start()

    def heard(self, view: Any) -> None:
        """The screen shows ``view``: queue its cue if it is new. Never blocks, never raises."""
        if view is None:
            return
        try:
            found = self.cue_of(view)
        except Exception:  # a view the table does not know costs its sound, nothing else
            log.exception("no cue for the view %r", view)
            return
        if found is None or found.key == self._last:
            return
        self._last = found.key
        if found.tone is None and not found.speech:
            return
        with self._wake:
            self._queue.append(found)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        cfg = self.config()
        if cfg.speech and self.engine.available:
            for words in self._warm:
                try:
                    self._speech(words)
                except DriverError as exc:
                    log.info("speech not prepared (%s): made when first needed", exc)
                    break
        while True:
            with self._wake:
                while not self._queue and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    return
                item = self._queue.popleft()
            try:
                self._play(item)
            except DriverError as exc:
                if not self._failing:
                    log.error("kiosk sound failed: %s (said once until it works again)", exc)
                self._failing = True
            except Exception:  # noqa: BLE001 - sound never takes the kiosk down
                log.exception("kiosk sound failed")
            else:
                if self._failing:
                    log.info("kiosk sound works again")
                self._failing = False

    def _play(self, item: Cue) -> None:
        cfg = self.config()
        if not cfg.enabled or not getattr(self.output, "available", True) or cfg.volume == 0:
            return
        if item.tone is not None:
            made = self._tones.get((item.tone, cfg.volume))
            if made is None:
                made = self._tones[(item.tone, cfg.volume)] = tone(item.tone, cfg.volume)
            self.output.play(item.tone, made)
            self.played.append(item.tone)
        if item.speech and cfg.speech and self.engine.available:
            self.output.play("speech", scale(self._speech(item.speech), cfg.volume))
            self.played.append("speech")

    def _speech(self, words: str) -> bytes:
        """The words as a WAV at full volume, from the cache of the last 64 prompts."""
        wav = self._speech_cache.get(words)
        if wav is None:
            wav = self.engine.speak(words)
            self._speech_cache[words] = wav
            if len(self._speech_cache) > 64:
                self._speech_cache.popitem(last=False)
        else:
            self._speech_cache.move_to_end(words)
        return wav

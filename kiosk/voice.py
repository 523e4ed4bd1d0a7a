"""What a kiosk says aloud for what its screen shows: the tone (grant, refusal, alarm) and
the words (the screen's message in Vietnamese) of each view, once per change.

It reads the same view snapshots the screen renders, so a flow knows nothing about sound and
every role gets it the same way; :class:`biblioedge.agent.voice.Voice` plays the cues.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from biblioedge.agent.ui_config import SoundConfig
from biblioedge.agent.voice import Cue, Voice
from biblioedge.kiosk.i18n import subtitle, text

#: (role, mode or step) → the tone played when the screen turns to it
TONES: dict[tuple[str, str], str] = {
    ("gate", "granted"): "grant",
    ("gate", "denied"): "refusal",
    ("gate", "out_of_service"): "refusal",
    ("exitgate", "alarm"): "alarm",
    ("selfcheck", "refused"): "refusal",
    ("selfcheck", "out_of_service"): "refusal",
    ("selfcheck", "returned"): "grant",
    ("selfcheck", "receipt"): "grant",
    ("desk", "issued"): "grant",
    ("desk", "refused"): "refusal",
    ("desk", "face_failed"): "refusal",
    ("desk", "check_card"): "refusal",
    ("desk", "forgery"): "alarm",
}
#: steps whose message is not spoken: the resting screen (said to nobody), passing states
#: (working, reading) and the gate's face hints (they change several times a second)
QUIET = {"idle", "starting", "working", "reading", "hint", "registering"}
#: a prompt longer than this is spoken without its second line (the consent's full text is
#: read on screen and explained by the librarian, not recited)
MAX_SPOKEN = 160


def _step(view: Any) -> str:
    return str(getattr(view, "step", None) or getattr(view, "mode", ""))


def _speech(view: Any, say_names: bool) -> str:
    message = view.message
    fields = {
        "name": (getattr(view, "name", "") or "") if say_names else "",
        "patron": getattr(view, "patron_id", "") or "",
    }
    title = re.sub(r",\s*!", "!", text(message, "vi", **fields))  # "Xin chào, !" → "Xin chào!"
    sub = subtitle(message, "vi")
    stop = "" if title.endswith(("!", "?", ".", "…")) else "."
    spoken = f"{title}{stop} {sub}" if sub and len(title) + len(sub) < MAX_SPOKEN else title
    return spoken.replace("«", "").replace("»", "")


def cue(role: str, view: Any, say_names: bool = False) -> Cue | None:
    """The tone and the words for ``view``; None when the screen turning to it says nothing.
    A reader's name is spoken only with ``say_names`` (``[sound] say_names``)."""
    step = _step(view)
    if role == "selfcheck" and step == "results":
        items = tuple(view.items)
        if not items:
            return None
        last = items[-1]
        counted = ("results", len(items), sum(not r.ok for r in items))
        if last.ok:
            return Cue(counted, "grant", "")
        return Cue(counted, "refusal", text(f"problem_{last.problem}", "vi", fee=last.fee))
    key: tuple[Any, ...] = (step, view.message, getattr(view, "name", ""))
    if role == "exitgate" and step == "alarm":
        key += tuple(i.item_id for i in view.items)
    sound = TONES.get((role, step))
    speech = "" if step in QUIET else _speech(view, say_names)
    if sound is None and not speech:
        return Cue(key, None, "")  # remembered, so returning to it later speaks again
    return Cue(key, sound, speech)


#: the prompts each role speaks first and most (made at start, so the first is not late)
WARM: dict[str, tuple[tuple[str, str], ...]] = {
    "gate": (("granted", "welcome_name"), ("denied", "scan_card")),
    "selfcheck": (("ready", "selfcheck_place_books"),),
    "exitgate": (("alarm", "exit_alarm"),),
}


@dataclass(frozen=True)
class _Shown:
    step: str
    message: str
    name: str = ""
    items: tuple[Any, ...] = ()


def kiosk_voice(role: str, config: Callable[[], SoundConfig], **kw: Any) -> Voice:
    """The voice of ``role``'s screen (``kw``: an output or engine of the tests' choosing)."""
    warm = tuple(
        c.speech for s, m in WARM.get(role, ()) if (c := cue(role, _Shown(s, m))) and c.speech
    )
    kw.setdefault("warm", warm)
    return Voice(lambda view: cue(role, view, config().say_names), config, **kw)

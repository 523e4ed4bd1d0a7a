"""The short form of a reader's name that a gate may show, shared by central and the gates.

A gate greets a reader by name, so it needs one; it does not need the full name, and a gate
stands in a public hall where its disk can be taken. Vietnamese names put the family name
first and the given name (tên) last, and people are addressed by the given name: "Nguyễn Thị
Bình" is greeted "Bình". So a gate is sent, and keeps, only the last word of the name.
Central derives it when it builds a gallery delta; a gate applies the same rule to what it
receives, so a full name from an older central is cut down before it is stored.
"""

from __future__ import annotations

import unicodedata

#: Longest greeting kept: a given name, not a sentence.
MAX_GREETING = 40


def greeting_name(name: str) -> str:
    """The given name a gate shows: the last word of the NFC name ("" for no name)."""
    words = unicodedata.normalize("NFC", name).split()
    return words[-1][:MAX_GREETING] if words else ""

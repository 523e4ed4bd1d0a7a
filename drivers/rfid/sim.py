"""A 3M 810 reader with a stack of tags, on the far end of a real pseudo-terminal.

The driver opens the pty as it opens /dev/ttyUSB0. Tags can be placed and lifted at any time
(the pad is shared with the thread that serves the pty); a tag can be told to leave the field
when a given command reaches it (a reader lifting the book mid-write) or to acknowledge an
AFI write without storing it (a faulty tag). ``baud`` makes each answer take the time its
bytes take on a real 19200-baud line, and ``air_s`` adds the tag's own time per command, so
benchmarks state and include realistic latencies.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

from biblioedge.drivers.rfid import m810
from biblioedge.drivers.rfid.iso28560 import TagData, encode
from biblioedge.drivers.sim_serial import _PtyDevice

Command = str  # "inventory", "read", "write", "read_afi", "write_afi"


@dataclass
class SimTag:
    uid: str
    memory: bytearray
    afi: int = 0x07
    lift_on: Command | None = None
    ignore_afi_writes: bool = False
    commands: list[Command] = field(default_factory=list)

    @property
    def blocks(self) -> int:
        return len(self.memory) // 4


def uid_for(item_id: str) -> str:
    """A stable ISO 15693 UID (E0 = ISO 15693, 04 = NXP) derived from the item id."""
    return "E004" + hashlib.sha256(item_id.encode()).hexdigest()[:12].upper()


def item_tag(data: TagData, *, afi: int = 0x07, blocks: int = 28, uid: str | None = None) -> SimTag:
    memory = bytearray(encode(data))
    if len(memory) > blocks * 4:
        raise ValueError(f"{len(memory)} bytes of data do not fit {blocks} blocks")
    memory += bytes(blocks * 4 - len(memory))
    return SimTag(uid or uid_for(data.primary_item_id), memory, afi)


def catalogue_tags(
    catalogue: dict[str, str],
    *,
    owner: str = "VN-TVTN",
    sets: dict[str, int] | None = None,
    not_offline: set[str] | frozenset[str] = frozenset(),
) -> dict[str, list[SimTag]]:
    """Tags for a catalogue (item id → title), every part of a set, secured as on the shelf."""
    out: dict[str, list[SimTag]] = {}
    for item, title in catalogue.items():
        parts = (sets or {}).get(item, 1)
        usage = 0x15 if item in not_offline else 0x10  # neither lent nor returned offline
        out[item] = [
            item_tag(
                TagData(
                    item,
                    owner_institution=owner,
                    parts=parts,
                    part=part,
                    type_of_usage=usage,
                    elements={"title": title[:40]},
                ),
                uid=uid_for(f"{item}/{part}") if parts > 1 else None,
            )
            for part in range(1, parts + 1)
        ]
    return out


class M810Simulator(_PtyDevice):
    def __init__(
        self,
        tags: list[SimTag] | None = None,
        *,
        baud: int | None = m810.BAUD,
        air_s: float = 0.0,
        noise: bool = False,
        mute: bool = False,
    ) -> None:
        super().__init__()
        self._pad: dict[str, SimTag] = {}
        self._lock = threading.Lock()
        self._frames = m810.FrameReader()
        self.baud = baud
        self.air_s = air_s
        self.noise = noise
        self.mute = mute
        self.commands = 0
        for tag in tags or []:
            self.place(tag)

    # -- the pad --------------------------------------------------------------------------

    def place(self, *tags: SimTag) -> None:
        with self._lock:
            for tag in tags:
                self._pad[tag.uid] = tag

    def lift(self, *uids: str) -> None:
        with self._lock:
            for uid in uids:
                self._pad.pop(uid, None)

    def clear(self) -> None:
        with self._lock:
            self._pad.clear()

    @property
    def tags(self) -> list[SimTag]:
        with self._lock:
            return list(self._pad.values())

    def tag(self, uid: str) -> SimTag | None:
        with self._lock:
            return self._pad.get(uid)

    # -- the line -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        for start, payload in self._frames.feed(data):
            self.commands += 1
            answer = self._answer(start, payload)
            if answer is None or self.mute:
                continue
            out = m810.frame(answer, start)
            if self.air_s:
                time.sleep(self.air_s)
            if self.baud:
                time.sleep(len(out) * 10 / self.baud)
            if self.noise:
                out = b"\x13\x37" + out
            self.write(out)

    def _present(self, wire_uid: bytes, command: Command) -> SimTag | None:
        uid = m810.uid_text(wire_uid)
        with self._lock:
            tag = self._pad.get(uid)
            if tag is None:
                return None
            tag.commands.append(command)
            if tag.lift_on == command:
                del self._pad[uid]
                return None
            return tag

    def _answer(self, start: int, p: bytes) -> bytes | None:
        if start == m810.PROBE:
            return bytes([0x04, 0x00, 0x11, 0x0A, 0x05, 0x00, 0x02])
        if not p:
            return None
        cmd = p[0]
        if cmd == m810.INVENTORY:
            with self._lock:
                uids = list(self._pad)
            body = b"".join(m810.uid_wire(u) for u in uids)
            return bytes([cmd, 0x00, 0x00, 0x05, len(uids)]) + body
        if len(p) < 9:
            return bytes([cmd, m810.NO_TAG])
        wire = p[1:9]
        names = {
            m810.READ: "read",
            m810.WRITE: "write",
            m810.READ_AFI: "read_afi",
            m810.WRITE_AFI: "write_afi",
        }
        if cmd not in names:
            return bytes([cmd, 0x01])
        tag = self._present(wire, names[cmd])
        if tag is None:
            return bytes([cmd, m810.NO_TAG]) + wire
        if cmd == m810.READ and len(p) >= 11:
            start_block, count = p[9], p[10]
            count = max(0, min(count, tag.blocks - start_block))
            out = bytearray([cmd, m810.OK]) + wire + bytes([count])
            for i in range(start_block, start_block + count):
                out += i.to_bytes(2, "little") + tag.memory[4 * i : 4 * i + 4]
            return bytes(out)
        if cmd == m810.WRITE and len(p) >= 12:
            start_block, count, data = p[9], p[10], p[12:]
            if len(data) != 4 * count or start_block + count > tag.blocks:
                return bytes([cmd, 0x01]) + wire
            tag.memory[4 * start_block : 4 * (start_block + count)] = data
            return bytes([cmd, m810.OK]) + wire + bytes([count])
        if cmd == m810.READ_AFI:
            return bytes([cmd, m810.OK]) + wire + bytes([tag.afi])
        if cmd == m810.WRITE_AFI and len(p) >= 10:
            if not tag.ignore_afi_writes:
                tag.afi = p[9]
            return bytes([cmd, m810.OK]) + wire
        return bytes([cmd, 0x01]) + wire

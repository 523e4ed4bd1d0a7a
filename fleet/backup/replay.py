"""After a restore: ask each kiosk to send again what the lost central had acknowledged after
the backup (kiosks keep acknowledged events, ``outbox.keep_acked_h``), until it says it has.

The point comes from the backup's manifest: per kiosk, the end of its first unbroken run of
sequence numbers in the snapshot (a kiosk unknown to the backup sends everything it kept).
Ingest is exactly-once, so what central already has costs nothing but bandwidth.

Why ask until done rather than once: the ask is a command on a kiosk's topic, sent when the
kiosk reports itself online; a kiosk that drops off right then (a flaky link, a power cut)
never hears it, and what it kept would never come back. A kiosk carries the request out and
then says so in its state reports (``replayed``: this restore's request id); until then it is asked
again at its next online report, at most every ``RETRY_S`` doubling to ``RETRY_MAX_S`` (a
kiosk of an older version never says so: the doubling bounds what it resends). A kiosk that
is gone (removed or revoked) never reports again, so is never asked again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from biblioedge.fleet.backup.restore import RESTORED

log = logging.getLogger("biblioedge.fleet.backup")

ASKED = "replay-asked.json"
RETRY_S = 60.0
RETRY_MAX_S = 6 * 3600.0


class Replays:
    def __init__(self, data_dir: Path) -> None:
        self._asked_path = data_dir / ASKED
        self.backup_id: str | None = None
        #: this restore's ask (the same backup may be restored twice): what kiosks echo
        self.request_id: str | None = None
        self._point: dict[str, Any] = {}
        #: device -> (times asked, wall-clock time of the last ask)
        self._asked: dict[str, tuple[int, float]] = {}
        self._done: set[str] = set()
        try:
            record = json.loads((data_dir / RESTORED).read_text())
            self.backup_id = str(record["backup_id"])
            self.request_id = f"{self.backup_id[:32]}@{record.get('restored_at', '')}"[:64]
            point = record.get("point") or {}
            self._point = point if isinstance(point, dict) else {}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("cannot read %s, no replay will be asked: %s", RESTORED, exc)
            return
        try:
            asked = json.loads(self._asked_path.read_text())
            if asked.get("request") == self.request_id:
                self._done = {str(d) for d in asked.get("done", [])}
                for device, entry in (asked.get("asked") or {}).items():
                    self._asked[str(device)] = (int(entry[0]), float(entry[1]))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError, TypeError, IndexError) as exc:
            log.error("cannot read %s, asking every kiosk again: %s", ASKED, exc)

    def due(self, device_id: str, now: float | None = None) -> int | None:
        """``after_seq`` to ask ``device_id`` for, or None when there is nothing to ask now
        (no restore, done, or asked too recently)."""
        if self.backup_id is None or device_id in self._done:
            return None
        times, last = self._asked.get(device_id, (0, 0.0))
        if times and (now or time.time()) - last < min(RETRY_S * 2 ** (times - 1), RETRY_MAX_S):
            return None
        entry = self._point.get(device_id)
        if not isinstance(entry, dict):
            return 0
        value = entry.get("complete_to", 0)
        return value if isinstance(value, int) and value >= 0 else 0

    def asked(self, device_id: str, now: float | None = None) -> None:
        times, _ = self._asked.get(device_id, (0, 0.0))
        self._asked[device_id] = (times + 1, now or time.time())
        self._save()

    def reported(self, device_id: str, replayed: object) -> bool:
        """A kiosk's state report said which replay it carried out; True when that settles
        this restore's ask for it."""
        if self.request_id is None or replayed != self.request_id or device_id in self._done:
            return False
        self._done.add(device_id)
        self._save()
        log.info("%s has sent again what it kept since the backup", device_id)
        return True

    def status(self) -> dict[str, Any]:
        """Who was asked, who has done it, who is still waited for."""
        return {
            "backup_id": self.backup_id,
            "done": sorted(self._done),
            "waiting": sorted(set(self._asked) - self._done),
        }

    def _save(self) -> None:
        doc = {
            "backup_id": self.backup_id,
            "request": self.request_id,
            "devices": sorted(self._asked),
            "asked": {d: list(v) for d, v in sorted(self._asked.items())},
            "done": sorted(self._done),
        }
        tmp = self._asked_path.with_name(f".{ASKED}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self._asked_path)

"""After a restore: ask each kiosk, once, to send again what the lost central had
acknowledged after the backup (kiosks keep acknowledged events, ``outbox.keep_acked_h``).

The point comes from the backup's manifest: per kiosk, the end of its first unbroken run of
sequence numbers in the snapshot (a kiosk unknown to the backup sends everything it kept).
Ingest is exactly-once, so what central already has costs nothing but bandwidth."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from biblioedge.fleet.backup.restore import RESTORED

log = logging.getLogger("biblioedge.fleet.backup")

ASKED = "replay-asked.json"


class Replays:
    def __init__(self, data_dir: Path) -> None:
        self._asked_path = data_dir / ASKED
        self.backup_id: str | None = None
        self._point: dict[str, Any] = {}
        self._asked: set[str] = set()
        try:
            record = json.loads((data_dir / RESTORED).read_text())
            self.backup_id = str(record["backup_id"])
            point = record.get("point") or {}
            self._point = point if isinstance(point, dict) else {}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("cannot read %s, no replay will be asked: %s", RESTORED, exc)
            return
        try:
            asked = json.loads(self._asked_path.read_text())
            if asked.get("backup_id") == self.backup_id:
                self._asked = {str(d) for d in asked.get("devices", [])}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            log.error("cannot read %s, asking every kiosk again: %s", ASKED, exc)

    def due(self, device_id: str) -> int | None:
        """``after_seq`` to ask ``device_id`` for, or None when there is nothing to ask."""
        if self.backup_id is None or device_id in self._asked:
            return None
        entry = self._point.get(device_id)
        if not isinstance(entry, dict):
            return 0
        value = entry.get("complete_to", 0)
        return value if isinstance(value, int) and value >= 0 else 0

    def asked(self, device_id: str) -> None:
        self._asked.add(device_id)
        tmp = self._asked_path.with_name(f".{ASKED}.tmp")
        tmp.write_text(json.dumps({"backup_id": self.backup_id, "devices": sorted(self._asked)}))
        os.replace(tmp, self._asked_path)

"""Applying central's gallery deltas on a gate: all of a delta or nothing, in order.

A delta applies only on top of the version the gate has (``base``); its readers, templates
(encrypted at rest), erasures and card revocations land in one SQLite transaction together with
the new version, so a power cut leaves the old gallery or the new one, never half. Then the
running gate's in-memory gallery is updated the same way. A delta for another base is ignored:
the gate's next state report tells central where it really is.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import unicodedata
from collections.abc import Callable

import numpy as np

from biblioedge.agent.gallery_store import GalleryStore
from biblioedge.agent.store import Store
from biblioedge.protocol import GalleryDelta

log = logging.getLogger("biblioedge.agent.gallery")

Applied = Callable[[GalleryDelta], None]


def vectors_of(templates: list[str]) -> np.ndarray:
    vecs = [np.frombuffer(base64.b64decode(t, validate=True), dtype="<f4") for t in templates]
    if not vecs or len({v.shape[0] for v in vecs}) != 1:
        raise ValueError("templates of one reader must all have the same length")
    return np.vstack(vecs).astype(np.float32)


class GallerySync:
    def __init__(self, store: Store, templates: GalleryStore) -> None:
        self.store = store
        self.templates = templates

    def version(self) -> int:
        row = self.store.conn.execute(
            "SELECT value FROM meta WHERE key = 'gallery_version'"
        ).fetchone()
        return int(row[0]) if row else 0

    def card_keys(self) -> dict[str, str]:
        row = self.store.conn.execute("SELECT value FROM meta WHERE key = 'card_keys'").fetchone()
        return dict(json.loads(row[0])) if row else {}

    def revoked(self) -> set[str]:
        return {r[0] for r in self.store.conn.execute("SELECT jti FROM revoked_cards")}

    def apply(self, delta: GalleryDelta) -> bool:
        """True when applied; False when it does not start at our version (ignored)."""
        if delta.base != self.version() or delta.version <= delta.base:
            return False
        decoded = {r.patron_id: vectors_of(r.templates) for r in delta.upserts if r.templates}
        conn = self.store.conn
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for reader in delta.upserts:
                conn.execute(
                    "INSERT INTO patron_cache (patron_id, barcode, display_name, status,"
                    " expires_at, updated_at) VALUES (?,?,?,?,?,?) ON CONFLICT (patron_id) DO"
                    " UPDATE SET barcode = excluded.barcode, display_name = excluded.display_name,"
                    " status = excluded.status, expires_at = excluded.expires_at,"
                    " updated_at = excluded.updated_at",
                    (
                        reader.patron_id,
                        reader.barcode or reader.patron_id,
                        unicodedata.normalize("NFC", reader.display_name),
                        reader.status,
                        reader.expires_at,
                        now,
                    ),
                )
                if reader.patron_id in decoded:
                    self.templates.put_in_tx(
                        reader.patron_id, decoded[reader.patron_id], reader.model
                    )
                else:
                    conn.execute(
                        "DELETE FROM gallery_templates WHERE patron_id = ?", (reader.patron_id,)
                    )
            for pid in delta.removes:
                conn.execute("DELETE FROM gallery_templates WHERE patron_id = ?", (pid,))
                conn.execute("DELETE FROM patron_cache WHERE patron_id = ?", (pid,))
            conn.executemany(
                "INSERT OR IGNORE INTO revoked_cards (jti, added_at) VALUES (?, ?)",
                [(j, now) for j in delta.revoked_cards],
            )
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'gallery_version'", (str(delta.version),)
            )
            if delta.card_keys:  # central's key set is authoritative for centrally issued cards
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'card_keys'",
                    (json.dumps(delta.card_keys),),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info(
            "gallery %d -> %d: %d readers updated, %d erased, %d cards revoked",
            delta.base,
            delta.version,
            len(delta.upserts),
            len(delta.removes),
            len(delta.revoked_cards),
        )
        return True

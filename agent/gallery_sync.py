"""Applying central's gallery deltas on a gate: all of a delta or nothing, in order.

A delta applies only on top of the version the gate has (``base``); its readers, templates
(encrypted at rest), erasures and card revocations land in one SQLite transaction together with
the new version, so a power cut leaves the old gallery or the new one, never half. Then the
running gate's in-memory gallery is updated the same way. A delta for another base is ignored:
the gate's next state report tells central where it really is.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable

import numpy as np

from biblioedge.agent.gallery_store import GalleryStore
from biblioedge.agent.store import Store
from biblioedge.names import greeting_name
from biblioedge.protocol import GalleryDelta

log = logging.getLogger("biblioedge.agent.gallery")

Applied = Callable[[GalleryDelta], None]


def vectors_of(templates: list[str]) -> np.ndarray:
    """The reader's templates as rows; ValueError unless they are base64 float32 vectors of
    one length, all finite and none all zeros."""
    try:
        raw = [base64.b64decode(t, validate=True) for t in templates]
    except (ValueError, binascii.Error) as exc:
        raise ValueError("a template is not base64") from exc
    if not raw or len({len(r) for r in raw}) != 1 or len(raw[0]) % 4 or not raw[0]:
        raise ValueError("templates of one reader are float32 vectors of one length")
    mat = np.vstack([np.frombuffer(r, dtype="<f4") for r in raw]).astype(np.float32)
    if not np.all(np.isfinite(mat)) or np.any(np.all(mat == 0, axis=1)):
        raise ValueError("a template is not finite or is all zeros")
    return mat


class GallerySync:
    def __init__(
        self,
        store: Store,
        templates: GalleryStore,
        *,
        keep_citizen_ref: bool = False,
        purpose: str = "face_gate",
        keep_name: bool = True,
    ) -> None:
        self.store = store
        self.templates = templates
        #: the face purpose this kiosk serves: it keeps templates only of readers who
        #: consented to it (a gate: entering; a self-check: being recognised there)
        self.purpose = purpose
        #: the self-check keeps the keyed hash of the ID number (CCCD QR); gates do not
        self.keep_citizen_ref = keep_citizen_ref
        #: a gate keeps the given name it greets with; a self-check none (it greets with the
        #: name the library system gives at sign-in), so it drops what it kept before
        self.keep_name = keep_name
        if not keep_name:
            with store.transaction():
                store.conn.execute(
                    "UPDATE patron_cache SET display_name = '' WHERE display_name != ''"
                )
        #: template length per model, from the running face engine (set when it loads)
        self.dims: dict[str, int] = {}
        #: readers whose templates were refused, by reason (the state report counts them)
        self.refused: dict[str, int] = {}
        #: the templates the last applied delta stored, per reader (the running gate's update)
        self.accepted: dict[str, np.ndarray] = {}

    def _dim(self, model: str) -> int | None:
        """The length ``model``'s templates must have: the engine's, or the stored ones'."""
        if model in self.dims:
            return self.dims[model]
        row = self.store.conn.execute(
            "SELECT length(ciphertext) FROM gallery_templates WHERE model = ? LIMIT 1", (model,)
        ).fetchone()
        return None if row is None else (int(row[0]) - 16) // 4

    def _usable(self, delta: GalleryDelta) -> dict[str, np.ndarray]:
        """Each upserted reader's templates, checked before anything is written. A reader
        whose templates are unusable keeps its card (stored without a face) rather than
        costing the whole delta, or breaking the gate's gallery at its next start."""
        out: dict[str, np.ndarray] = {}
        for reader in delta.upserts:
            if not reader.templates:
                continue
            # no purposes with templates: a central older than purposes, when templates
            # were sent only with the entrance consent
            purposes = reader.face_purposes or ["face_gate"]
            if self.purpose not in purposes:
                continue  # not consented for this kiosk's purpose: not kept here
            try:
                mat = vectors_of(reader.templates)
                dim = self._dim(reader.model)
                if dim is not None and mat.shape[1] != dim:
                    raise ValueError(f"{reader.model} templates have {dim} values")
            except ValueError as exc:
                self.refused["template"] = self.refused.get("template", 0) + 1
                log.warning("not storing the templates of %s: %s", reader.patron_id, exc)
                continue
            out[reader.patron_id] = mat
        return out

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

    def reader(self, *, patron_id: str = "", citizen_ref: str = "") -> tuple[str, str] | None:
        """(patron id, status) of a synced reader, by id or by the ID number's keyed hash."""
        if citizen_ref:
            row = self.store.conn.execute(
                "SELECT patron_id, status FROM patron_cache WHERE citizen_ref = ?",
                (citizen_ref,),
            ).fetchone()
        else:
            row = self.store.conn.execute(
                "SELECT patron_id, status FROM patron_cache WHERE patron_id = ? OR barcode = ?",
                (patron_id, patron_id),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def card_number(self, patron_id: str) -> str:
        """The number the library system holds for this reader: her barcode, else her patron
        number (kept so in ``patron_cache.barcode``); the number itself when not synced."""
        row = self.store.conn.execute(
            "SELECT barcode FROM patron_cache WHERE patron_id = ?", (patron_id,)
        ).fetchone()
        return str(row[0]) if row and row[0] else patron_id

    def patron_of(self, number: str) -> str:
        """The patron number of the reader the library system knows by ``number``."""
        found = self.reader(patron_id=number)
        return found[0] if found else number

    def apply(self, delta: GalleryDelta) -> bool:
        """True when applied; False when it does not start at our version (ignored)."""
        if delta.base != self.version() or delta.version <= delta.base:
            return False
        decoded = self._usable(delta)
        conn = self.store.conn
        now = time.time()
        with self.store.transaction():
            for reader in delta.upserts:
                # a barcode finds one reader: central moved it to this one, so the reader
                # that had it loses it here until its own update arrives
                conn.execute(
                    "UPDATE patron_cache SET barcode = NULL WHERE barcode = ? AND patron_id != ?",
                    (reader.barcode or reader.patron_id, reader.patron_id),
                )
                conn.execute(
                    "INSERT INTO patron_cache (patron_id, barcode, display_name, status,"
                    " expires_at, updated_at, citizen_ref) VALUES (?,?,?,?,?,?,?)"
                    " ON CONFLICT (patron_id) DO UPDATE SET barcode = excluded.barcode,"
                    " display_name = excluded.display_name, status = excluded.status,"
                    " expires_at = excluded.expires_at, updated_at = excluded.updated_at,"
                    " citizen_ref = excluded.citizen_ref",
                    (
                        reader.patron_id,
                        reader.barcode or reader.patron_id,
                        # the given name only, whatever central sent (an older one sent the
                        # full name)
                        greeting_name(reader.display_name) if self.keep_name else "",
                        reader.status,
                        reader.expires_at,
                        now,
                        (reader.citizen_ref or None) if self.keep_citizen_ref else None,
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
        self.accepted = decoded
        log.info(
            "gallery %d -> %d: %d readers updated, %d erased, %d cards revoked",
            delta.base,
            delta.version,
            len(delta.upserts),
            len(delta.removes),
            len(delta.revoked_cards),
        )
        return True

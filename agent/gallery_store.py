"""Face templates at rest on the kiosk: AES-256-GCM in the agent's SQLite store.

Templates are biometric data (sensitive personal data under Vietnamese law): the store never
holds them in clear. Each row is sealed with a fresh 96-bit nonce and authenticated together
with its patron id, slot and model name, so a template cannot be moved to another reader or
replayed under another model without failing to open. The key is a 32-byte file created
0600 beside the store on first use (or handed in from a secret); losing it makes the gallery
unreadable, which is the intended failure: the gate re-syncs it from central.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from biblioedge.agent.store import Store, StoreError
from biblioedge.keys import KeyFileError
from biblioedge.keys import load_or_create_key as _load_or_create_key

F32 = npt.NDArray[np.float32]
log = logging.getLogger("biblioedge.agent.gallery")


class TemplateKeyError(StoreError):
    """The template key is missing, unreadable or wrong."""


def load_or_create_key(path: Path) -> bytes:
    try:
        return _load_or_create_key(path)
    except KeyFileError as exc:
        raise TemplateKeyError(str(exc)) from exc


class GalleryStore:
    def __init__(self, store: Store, key: bytes) -> None:
        if len(key) != 32:
            raise TemplateKeyError("a template key is 32 bytes")
        self.store = store
        self.aead = AESGCM(key)

    @staticmethod
    def _aad(patron_id: str, slot: int, model: str) -> bytes:
        return f"{patron_id}\x1f{slot}\x1f{model}".encode()

    def put(self, patron_id: str, vectors: F32, model: str) -> None:
        """Replace every template of ``patron_id`` in one transaction."""
        with self.store.transaction():
            self.put_in_tx(patron_id, vectors, model)

    def put_in_tx(self, patron_id: str, vectors: F32, model: str) -> None:
        """``put`` inside a transaction the caller holds (gallery sync applies whole deltas)."""
        mat = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
        rows = []
        for slot, vec in enumerate(mat):
            nonce = os.urandom(12)
            sealed = self.aead.encrypt(nonce, vec.tobytes(), self._aad(patron_id, slot, model))
            rows.append((patron_id, slot, model, nonce, sealed, time.time()))
        conn = self.store.conn
        conn.execute("DELETE FROM gallery_templates WHERE patron_id = ?", (patron_id,))
        conn.executemany("INSERT INTO gallery_templates VALUES (?,?,?,?,?,?)", rows)

    def delete(self, patron_ids: Iterable[str]) -> int:
        conn = self.store.conn
        with self.store.transaction():
            before = conn.total_changes
            conn.executemany(
                "DELETE FROM gallery_templates WHERE patron_id = ?", [(p,) for p in patron_ids]
            )
            deleted = conn.total_changes - before
        return deleted

    def load(self, model: str, dim: int) -> tuple[list[str], F32]:
        """Every template of ``model``, decrypted: ids (one per row) and an (n, dim) matrix."""
        rows = self.store.conn.execute(
            "SELECT patron_id, slot, nonce, ciphertext FROM gallery_templates WHERE model = ?"
            " ORDER BY patron_id, slot",
            (model,),
        ).fetchall()
        ids: list[str] = []
        mat = np.empty((len(rows), dim), np.float32)
        skipped = 0
        for pid, slot, nonce, sealed in rows:
            try:
                raw = self.aead.decrypt(nonce, sealed, self._aad(pid, slot, model))
            except InvalidTag as exc:
                raise TemplateKeyError(
                    f"template {pid}/{slot} does not open: wrong key or tampered row"
                ) from exc
            vec = np.frombuffer(raw, np.float32)
            if vec.shape[0] != dim:  # one bad row must not keep the gate from starting
                skipped += 1
                continue
            mat[len(ids)] = vec
            ids.append(pid)
        if skipped:
            log.warning("skipped %d %s template(s) whose length is not %d", skipped, model, dim)
        return ids, mat[: len(ids)]

    def count(self) -> int:
        return int(self.store.conn.execute("SELECT count(*) FROM gallery_templates").fetchone()[0])

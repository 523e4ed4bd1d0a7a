"""Readers and their face templates at central, and the per-site gallery deltas gates apply.

Templates are sealed with AES-256-GCM under central's template key, authenticated with
(patron, model, slot): the database alone, or a backup of it, reveals no biometric data.
Every change to a reader appends to ``gallery_log`` for the reader's site; the log position
is the site's gallery version. A delta from version A to B carries the *current* state of
every reader touched in (A, B]: upserted with templates, or removed if erased or left the
site. Compacting like this means a gate a week behind gets one message per reader, not the
reader's whole history.
"""

from __future__ import annotations

import base64
import os
import unicodedata
from datetime import date

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, delete, func, insert, select, update

from biblioedge.fleet.db import (
    card_keys,
    card_revocations,
    gallery_log,
    reader_profiles,
    readers,
    registrations,
    templates,
)
from biblioedge.fleet.repo import Repo
from biblioedge.protocol import GalleryDelta, GalleryReader, utc_now

MAX_TEMPLATES = 16


class ReaderError(ValueError):
    pass


class UnknownReader(LookupError):
    pass


def check_vectors(vectors: list[list[float]]) -> np.ndarray:
    """Templates as unit rows, or ReaderError: checked before anything is written."""
    if not 1 <= len(vectors) <= MAX_TEMPLATES:
        raise ReaderError(f"1 to {MAX_TEMPLATES} templates")
    try:
        mat = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ReaderError("templates are lists of numbers") from exc
    if mat.ndim != 2 or not 16 <= mat.shape[1] <= 4096 or not np.all(np.isfinite(mat)):
        raise ReaderError("templates are equal-length lists of 16 to 4096 finite numbers")
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    if np.any(norms < 1e-6):
        raise ReaderError("a template is all zeros")
    unit: np.ndarray = mat / norms
    return unit


def _aad(patron_id: str, model: str, slot: int) -> bytes:
    return f"{patron_id}\x1f{model}\x1f{slot}".encode()


class Readers:
    def __init__(self, repo: Repo, key: bytes) -> None:
        self.repo = repo
        self.aead = AESGCM(key)

    @staticmethod
    def site_of(conn: Connection, patron_id: str) -> str:
        site = conn.execute(select(readers.c.site).where(readers.c.patron_id == patron_id)).scalar()
        if site is None:
            raise UnknownReader(patron_id)
        return str(site)

    def _log(self, conn: Connection, site: str, patron_id: str) -> None:
        conn.execute(
            insert(gallery_log).values(site=site, patron_id=patron_id, created_at=utc_now())
        )

    def upsert(
        self,
        patron_id: str,
        *,
        site: str,
        display_name: str,
        status: str = "active",
        expires_at: str = "",
        barcode: str | None = None,
    ) -> dict[str, object]:
        with self.repo.engine.begin() as conn:
            self.upsert_in(conn, patron_id, site, display_name, status, expires_at, barcode)
        return self.get(patron_id)

    def upsert_in(
        self,
        conn: Connection,
        patron_id: str,
        site: str,
        display_name: str,
        status: str = "active",
        expires_at: str = "",
        barcode: str | None = None,
    ) -> None:
        """The upsert inside a caller's transaction (the desk registration uses one)."""
        if status not in ("active", "blocked", "expired"):
            raise ReaderError("status is active, blocked or expired")
        if expires_at:
            try:
                date.fromisoformat(expires_at)
            except ValueError as exc:
                raise ReaderError("expires_at is YYYY-MM-DD") from exc
        name = unicodedata.normalize("NFC", display_name).strip()
        if not name:
            raise ReaderError("display_name is empty")
        values = {
            "site": site,
            "display_name": name,
            "status": status,
            "expires_at": expires_at,
            "barcode": barcode or None,
            "updated_at": utc_now(),
        }
        old = conn.execute(select(readers.c.site).where(readers.c.patron_id == patron_id)).first()
        if old is None:
            conn.execute(insert(readers).values(patron_id=patron_id, **values))
        else:
            conn.execute(update(readers).where(readers.c.patron_id == patron_id).values(**values))
            if old.site != site:
                self._log(conn, old.site, patron_id)  # leaves the old site's gates
        self._log(conn, site, patron_id)

    def get(self, patron_id: str) -> dict[str, object]:
        with self.repo.engine.connect() as conn:
            row = conn.execute(select(readers).where(readers.c.patron_id == patron_id)).first()
            if row is None:
                raise UnknownReader(patron_id)
            counts = conn.execute(
                select(templates.c.model, func.count())
                .where(templates.c.patron_id == patron_id)
                .group_by(templates.c.model)
            ).all()
        doc = dict(row._mapping)
        doc["templates"] = {m: n for m, n in counts}
        return doc

    def put_templates(self, patron_id: str, model: str, vectors: list[list[float]]) -> int:
        with self.repo.engine.begin() as conn:
            return self.put_templates_in(conn, patron_id, model, vectors)

    def put_templates_in(
        self, conn: Connection, patron_id: str, model: str, vectors: list[list[float]]
    ) -> int:
        mat = check_vectors(vectors)
        now = utc_now()
        site = self.site_of(conn, patron_id)
        conn.execute(
            delete(templates).where(
                (templates.c.patron_id == patron_id) & (templates.c.model == model)
            )
        )
        rows = []
        for slot, vec in enumerate(mat):
            nonce = os.urandom(12)
            rows.append(
                {
                    "patron_id": patron_id,
                    "model": model,
                    "slot": slot,
                    "nonce": nonce,
                    "ciphertext": self.aead.encrypt(
                        nonce, vec.astype("<f4").tobytes(), _aad(patron_id, model, slot)
                    ),
                    "created_at": now,
                }
            )
        conn.execute(insert(templates), rows)
        self._log(conn, site, patron_id)
        return len(rows)

    def erase(self, patron_id: str) -> None:
        """Delete a reader, every template and the kept ID fields; the gates of the site drop
        them at next sync. Consent records stay: they name only the patron number."""
        with self.repo.engine.begin() as conn:
            site = self.site_of(conn, patron_id)
            conn.execute(delete(templates).where(templates.c.patron_id == patron_id))
            conn.execute(delete(readers).where(readers.c.patron_id == patron_id))
            conn.execute(delete(reader_profiles).where(reader_profiles.c.patron_id == patron_id))
            conn.execute(delete(registrations).where(registrations.c.patron_id == patron_id))
            self._log(conn, site, patron_id)

    def revoke_card(self, jti: str, patron_id: str) -> None:
        with self.repo.engine.begin() as conn:
            self.revoke_in(conn, jti, patron_id)

    def revoke_in(self, conn: Connection, jti: str, patron_id: str) -> None:
        site = self.site_of(conn, patron_id)
        if conn.execute(
            select(card_revocations.c.jti).where(card_revocations.c.jti == jti)
        ).first():
            return
        conn.execute(
            insert(card_revocations).values(jti=jti, patron_id=patron_id, revoked_at=utc_now())
        )
        self._log(conn, site, patron_id)

    # -- deltas ---------------------------------------------------------------------------

    def sites(self) -> list[str]:
        with self.repo.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(readers.c.site).distinct())]

    def site_version(self, site: str) -> int:
        with self.repo.engine.connect() as conn:
            return int(
                conn.scalar(select(func.max(gallery_log.c.seq)).where(gallery_log.c.site == site))
                or 0
            )

    def delta(self, site: str, base: int, max_readers: int = 200) -> GalleryDelta | None:
        """Changes after ``base`` for ``site``, at most ``max_readers`` readers (the rest in the
        next delta); None when the site has nothing after ``base``."""
        with self.repo.engine.connect() as conn:
            log = conn.execute(
                select(gallery_log.c.seq, gallery_log.c.patron_id)
                .where((gallery_log.c.site == site) & (gallery_log.c.seq > base))
                .order_by(gallery_log.c.seq)
            ).all()
            if not log:
                return None
            touched: list[str] = []
            version = base
            for seq, pid in log:
                if pid == "":  # a card-key change: moves the version, carries no reader
                    version = seq
                    continue
                if pid not in touched:
                    if len(touched) == max_readers:
                        break
                    touched.append(pid)
                version = seq
            upserts, removes, revoked = [], [], []
            for pid in touched:
                row = conn.execute(select(readers).where(readers.c.patron_id == pid)).first()
                if row is None or row.site != site:
                    removes.append(pid)
                    continue
                tmpl = conn.execute(
                    select(templates)
                    .where(templates.c.patron_id == pid)
                    .order_by(templates.c.model, templates.c.slot)
                ).all()
                model = tmpl[0].model if tmpl else ""
                vecs = [
                    base64.b64encode(
                        self.aead.decrypt(t.nonce, t.ciphertext, _aad(pid, t.model, t.slot))
                    ).decode()
                    for t in tmpl
                    if t.model == model
                ]
                upserts.append(
                    GalleryReader(
                        patron_id=pid,
                        display_name=row.display_name,
                        status=row.status,
                        expires_at=row.expires_at,
                        barcode=row.barcode or "",
                        model=model,
                        templates=vecs,
                    )
                )
                revoked += [
                    r.jti
                    for r in conn.execute(
                        select(card_revocations.c.jti).where(card_revocations.c.patron_id == pid)
                    )
                ]
            keys = {
                r.kid: r.public_key
                for r in conn.execute(
                    select(card_keys.c.kid, card_keys.c.public_key).where(
                        card_keys.c.retired_at.is_(None)
                    )
                )
            }
        return GalleryDelta(
            base=base,
            version=version,
            upserts=upserts,
            removes=removes,
            revoked_cards=revoked,
            card_keys=keys,
        )

"""Readers and their face templates at central, and the per-site gallery deltas gates apply.

Templates are sealed with AES-256-GCM under central's template key, authenticated with
(patron, model, slot): the database alone, or a backup of it, reveals no biometric data.
Every change to a reader appends to ``gallery_log`` for the reader's site; the log position
is the site's gallery version. A delta from version A to B carries the *current* state of
every reader touched in (A, B]: upserted with templates, or removed if erased or left the
site. Compacting like this means a gate a week behind gets one message per reader, not the
reader's whole history.

Names are sealed the same way (bound to the patron id, in a context of their own so a sealed
name cannot pass for a template or a profile): central never searches by name, and what a
gate is sent is only the given name it greets with (``biblioedge.names``).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import unicodedata
from collections.abc import Callable
from datetime import date
from typing import get_args

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError
from sqlalchemy import Connection, delete, func, insert, select, update

from biblioedge.fleet.db import (
    card_keys,
    card_revocations,
    consents,
    gallery_log,
    reader_profiles,
    readers,
    registrations,
    templates,
)
from biblioedge.fleet.repo import Repo
from biblioedge.names import greeting_name
from biblioedge.protocol import (
    MAX_SIGNED_BODY,
    PATRON_PATTERN,
    FacePurpose,
    GalleryDelta,
    GalleryReader,
    dumps,
    utc_now,
)

log = logging.getLogger("biblioedge.fleet.readers")

MAX_TEMPLATES = 16
PATRON_RE = re.compile(PATRON_PATTERN)
#: Reader bytes per delta: what is left of a signed message once sealing, card keys and the
#: delta's own fields are paid for (one reader at its largest takes about 350 KB).
DELTA_BYTES = MAX_SIGNED_BODY - 32 * 1024


class ReaderError(ValueError):
    pass


class UnknownReader(LookupError):
    pass


class BarcodeTaken(ReaderError):
    """The barcode is another reader's: a scan must find one reader."""


class WrongLength(ReaderError):
    """Templates whose length differs from each other's or from the model's stored ones."""


def check_vectors(vectors: list[list[float]]) -> np.ndarray:
    """Templates as unit rows, or ReaderError: checked before anything is written."""
    if not 1 <= len(vectors) <= MAX_TEMPLATES:
        raise ReaderError(f"1 to {MAX_TEMPLATES} templates")
    if len({len(v) if isinstance(v, list) else -1 for v in vectors}) != 1:
        raise WrongLength("the templates of one model all have the same length")
    try:
        mat = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ReaderError("templates are lists of numbers") from exc
    if mat.ndim != 2 or not 16 <= mat.shape[1] <= 4096 or not np.all(np.isfinite(mat)):
        raise ReaderError("templates are lists of 16 to 4096 finite numbers")
    # scale first, then normalize: tiny or huge values neither underflow nor overflow
    peak = np.max(np.abs(mat), axis=1, keepdims=True)
    if np.any(peak == 0):
        raise ReaderError("a template is all zeros")
    scaled = mat / peak
    unit: np.ndarray = (scaled / np.linalg.norm(scaled, axis=1, keepdims=True)).astype(np.float32)
    return unit


def _aad(patron_id: str, model: str, slot: int) -> bytes:
    return f"{patron_id}\x1f{model}\x1f{slot}".encode()


def _name_aad(patron_id: str) -> bytes:
    return f"reader-name\x1f{patron_id}".encode()


def seal_name(aead: AESGCM, patron_id: str, name: str) -> dict[str, bytes]:
    """The ``readers`` columns that hold ``name`` sealed to ``patron_id`` (also used by the
    migration that sealed the names stored in clear before)."""
    nonce = os.urandom(12)
    return {
        "name_nonce": nonce,
        "name_sealed": aead.encrypt(nonce, name.encode(), _name_aad(patron_id)),
    }


def open_name(aead: AESGCM, patron_id: str, nonce: bytes, sealed: bytes) -> str:
    return aead.decrypt(nonce, sealed, _name_aad(patron_id)).decode()


def face_purposes(conn: Connection, patron_id: str) -> list[FacePurpose]:
    """The face purposes whose latest consent is granted and not withdrawn."""
    latest: dict[str, bool] = {}
    for row in conn.execute(
        select(consents.c.purpose, consents.c.granted, consents.c.withdrawn_at)
        .where(consents.c.patron_id == patron_id)
        .order_by(consents.c.id)
    ):
        latest[row.purpose] = bool(row.granted) and row.withdrawn_at is None
    return [p for p in get_args(FacePurpose) if latest.get(p)]


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
        if not PATRON_RE.fullmatch(patron_id):
            raise ReaderError("a patron id is 1 to 64 ASCII letters, digits, '.', '_' or '-'")
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
            **seal_name(self.aead, patron_id, name),
            "status": status,
            "expires_at": expires_at,
            "barcode": barcode or None,
            "updated_at": utc_now(),
        }
        if barcode:
            holder = conn.scalar(
                select(readers.c.patron_id).where(
                    (readers.c.barcode == barcode) & (readers.c.patron_id != patron_id)
                )
            )
            if holder is not None:
                raise BarcodeTaken(f"barcode {barcode} belongs to reader {holder}")
        old = conn.execute(select(readers.c.site).where(readers.c.patron_id == patron_id)).first()
        if old is None:
            conn.execute(insert(readers).values(patron_id=patron_id, **values))
        else:
            conn.execute(update(readers).where(readers.c.patron_id == patron_id).values(**values))
            if old.site != site:
                self._log(conn, old.site, patron_id)  # leaves the old site's gates
        self._log(conn, site, patron_id)

    def name_of(self, conn: Connection, patron_id: str) -> str:
        """The reader's full name, opened (UnknownReader if there is no such reader)."""
        row = conn.execute(
            select(readers.c.name_nonce, readers.c.name_sealed).where(
                readers.c.patron_id == patron_id
            )
        ).first()
        if row is None:
            raise UnknownReader(patron_id)
        return open_name(self.aead, patron_id, row.name_nonce, row.name_sealed)

    def get(self, patron_id: str) -> dict[str, object]:
        """The reader with the name opened (``display_name``) and the given name gates show
        (``greeting``): for callers whose role may see them (the API filters by role)."""
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
        name = open_name(self.aead, patron_id, doc.pop("name_nonce"), doc.pop("name_sealed"))
        doc["display_name"] = name
        doc["greeting"] = greeting_name(name)
        doc["templates"] = {m: n for m, n in counts}
        return doc

    def put_templates(self, patron_id: str, model: str, vectors: list[list[float]]) -> int:
        with self.repo.engine.begin() as conn:
            return self.put_templates_in(conn, patron_id, model, vectors)

    def put_templates_in(
        self, conn: Connection, patron_id: str, model: str, vectors: list[list[float]]
    ) -> int:
        mat = check_vectors(vectors)
        dim = self.model_dim(conn, model)
        if dim is not None and mat.shape[1] != dim:
            raise WrongLength(f"{model} templates have {dim} values, not {mat.shape[1]}")
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

    @staticmethod
    def model_dim(conn: Connection, model: str) -> int | None:
        """The length of ``model``'s templates, from those already stored (None: first ones).
        A gate holds one gallery matrix per model: one wrong length would break it."""
        n = conn.scalar(
            select(func.length(templates.c.ciphertext)).where(templates.c.model == model).limit(1)
        )
        return None if n is None else (int(n) - 16) // 4

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
            if self.repo.rollups is not None:  # the reports' count of erasures
                self.repo.rollups.record_in(conn, site, "erasures")

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

    def _current(
        self, conn: Connection, site: str, pid: str
    ) -> tuple[GalleryReader | None, list[str]]:
        """A reader as the site's gates should hold it (None: drop it) and its revoked cards."""
        row = conn.execute(select(readers).where(readers.c.patron_id == pid)).first()
        revoked = [
            r.jti
            for r in conn.execute(
                select(card_revocations.c.jti).where(card_revocations.c.patron_id == pid)
            )
        ]
        if row is None or row.site != site:
            return None, revoked
        tmpl = conn.execute(
            select(templates)
            .where(templates.c.patron_id == pid)
            .order_by(templates.c.model, templates.c.slot)
        ).all()
        model = tmpl[0].model if tmpl else ""
        ref = conn.execute(
            select(reader_profiles.c.citizen_ref).where(reader_profiles.c.patron_id == pid)
        ).scalar()
        purposes = face_purposes(conn, pid)
        vecs = [
            base64.b64encode(
                self.aead.decrypt(t.nonce, t.ciphertext, _aad(pid, t.model, t.slot))
            ).decode()
            for t in tmpl
            if t.model == model
        ]
        try:
            reader = GalleryReader(
                patron_id=pid,
                # the given name the gate greets with, never the full name
                display_name=greeting_name(
                    open_name(self.aead, pid, row.name_nonce, row.name_sealed)
                ),
                status=row.status,
                expires_at=row.expires_at,
                barcode=row.barcode or "",
                model=model,
                templates=vecs,
                citizen_ref=ref or "",
                face_purposes=purposes if vecs else [],
            )
        except ValidationError as exc:  # stored before today's rules: gates must not hold it
            log.warning("reader %r cannot go to gates, dropping it there: %s", pid[:64], exc)
            return None, revoked
        return reader, revoked

    def delta(
        self,
        site: str,
        base: int,
        max_readers: int = 200,
        max_bytes: int = DELTA_BYTES,
        seal_name: Callable[[GalleryReader], GalleryReader] | None = None,
    ) -> GalleryDelta | None:
        """Changes after ``base`` for ``site``: at most ``max_readers`` readers and about
        ``max_bytes`` of them (the rest in the next delta, so every delta can be published);
        None when the site has nothing after ``base``. ``seal_name`` (the bridge's: the
        site's greeting key) seals each greeting before the reader's size is counted."""
        with self.repo.engine.connect() as conn:
            changes = conn.execute(
                select(gallery_log.c.seq, gallery_log.c.patron_id)
                .where((gallery_log.c.site == site) & (gallery_log.c.seq > base))
                .order_by(gallery_log.c.seq)
            ).all()
            if not changes:
                return None
            upserts: list[GalleryReader] = []
            removes: list[str] = []
            revoked: list[str] = []
            seen: set[str] = set()
            version, size = base, 0
            for seq, pid in changes:
                if pid == "" or pid in seen:  # "" is a card-key change: it carries no reader
                    version = seq
                    continue
                reader, jtis = self._current(conn, site, pid)
                if reader is not None and seal_name is not None:
                    reader = seal_name(reader)
                cost = len(dumps(reader)) if reader else len(pid) + 4
                cost += sum(len(j) + 4 for j in jtis)
                if seen and (len(seen) == max_readers or size + cost > max_bytes):
                    break
                seen.add(pid)
                size += cost
                version = seq
                if reader is None:
                    removes.append(pid)
                else:
                    upserts.append(reader)
                revoked += jtis
            keys = {  # the newest 16 the wire schema carries; older ones should be retired
                r.kid: r.public_key
                for r in conn.execute(
                    select(card_keys.c.kid, card_keys.c.public_key)
                    .where(card_keys.c.retired_at.is_(None))
                    .order_by(card_keys.c.created_at.desc())
                    .limit(16)
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

"""Readers and their face templates at central, and the per-site gallery deltas gates apply.

Readers belong to the library, not to a branch: ``readers.site`` is the home branch (where
the card was made, what reports count her under), and every branch's gates and self-checks
hold her, so her card works everywhere. Her face goes to a branch's kiosks only where her
consent says (a consent's ``sites``: every branch when empty, else the listed ones) and for
the purposes it names. One central serves one library: every site it knows is a branch.

Templates are sealed with AES-256-GCM under central's template key, authenticated with
(patron, model, slot): the database alone, or a backup of it, reveals no biometric data.
Every change to a reader appends one row to ``gallery_log`` with site ``*`` (every branch;
a site id can never be ``*``); rows naming one site (from before readers were the library's)
still count for that site. A site's gallery version is the newest log row that counts for
it. A delta from version A to B carries the *current* state of every reader touched in
(A, B]: upserted with templates, or removed if erased. Compacting like this means a gate a
week behind gets one message per reader, not the reader's whole history. Every statement on
these tables is in fleet/store/readers.py.

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
from contextlib import AbstractContextManager
from datetime import date
from typing import Any, get_args

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError
from sqlalchemy import Connection

from biblioedge.fleet.repo import Repo
from biblioedge.fleet.store import Transactions
from biblioedge.fleet.store import readers as rows
from biblioedge.names import greeting_name
from biblioedge.protocol import (
    MAX_SIGNED_BODY,
    PATRON_PATTERN,
    FacePurpose,
    GalleryDelta,
    GalleryReader,
    dumps,
    utc_now,
    uuid7,
)

log = logging.getLogger("biblioedge.fleet.readers")

MAX_TEMPLATES = 16
PATRON_RE = re.compile(PATRON_PATTERN)
#: Reader bytes per delta: what is left of a signed message once sealing, card keys and the
#: delta's own fields are paid for (one reader at its largest takes about 350 KB).
DELTA_BYTES = MAX_SIGNED_BODY - 32 * 1024
#: The device id of the events central records itself (a reader's renewal, erasure...).
CENTRAL = "central"


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


def face_purposes(conn: Connection, patron_id: str, site: str | None = None) -> list[FacePurpose]:
    """The face purposes whose latest consent is granted and not withdrawn (and, given
    ``site``, whose consent covers that branch: no ``sites`` listed means every branch)."""
    latest: dict[str, bool] = {}
    for row in rows.consent_states(conn, patron_id):
        where = row.sites if isinstance(row.sites, list) else []
        latest[row.purpose] = (
            bool(row.granted)
            and row.withdrawn_at is None
            and (site is None or not where or site in where)
        )
    return [p for p in get_args(FacePurpose) if latest.get(p)]


class Readers:
    """Readers, their sealed templates and names, revocations and the gallery deltas; the
    statements are fleet/store/readers.py's, run in the transactions this opens."""

    def __init__(self, repo: Repo, key: bytes) -> None:
        self.repo = repo
        self.tx = Transactions(repo)
        self.aead = AESGCM(key)

    def begin(self) -> AbstractContextManager[Connection]:
        """A transaction for operations that span several of these tables (lifecycle.py)."""
        return self.tx.begin()

    @staticmethod
    def site_of(conn: Connection, patron_id: str) -> str:
        site = rows.site_of(conn, patron_id)
        if site is None:
            raise UnknownReader(patron_id)
        return site

    @staticmethod
    def log_change(conn: Connection, patron_id: str) -> None:
        """Every branch's kiosks follow this reader's change ("" : a card-key change)."""
        rows.log_change(conn, patron_id)

    def _log(self, conn: Connection, site: str, patron_id: str) -> None:
        del site  # a reader is at every branch, whichever is her home
        self.log_change(conn, patron_id)

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
        with self.tx.begin() as conn:
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
            holder = rows.barcode_holder(conn, barcode, patron_id)
            if holder is not None:
                raise BarcodeTaken(f"barcode {barcode} belongs to reader {holder}")
        # a new home branch moves nothing: she was at every branch already
        rows.put_reader(conn, patron_id, values)
        self._log(conn, site, patron_id)

    def name_of(self, conn: Connection, patron_id: str) -> str:
        """The reader's full name, opened (UnknownReader if there is no such reader)."""
        row = rows.reader(conn, patron_id)
        if row is None:
            raise UnknownReader(patron_id)
        return open_name(self.aead, patron_id, row.name_nonce, row.name_sealed)

    def get(self, patron_id: str) -> dict[str, object]:
        """The reader with the name opened (``display_name``) and the given name gates show
        (``greeting``): for callers whose role may see them (the API filters by role)."""
        with self.tx.connect() as conn:
            row = rows.reader(conn, patron_id)
            if row is None:
                raise UnknownReader(patron_id)
            counts = rows.template_counts(conn, patron_id)
        doc = dict(row._mapping)
        name = open_name(self.aead, patron_id, doc.pop("name_nonce"), doc.pop("name_sealed"))
        doc["display_name"] = name
        doc["greeting"] = greeting_name(name)
        doc["templates"] = counts
        return doc

    def put_templates(self, patron_id: str, model: str, vectors: list[list[float]]) -> int:
        with self.tx.begin() as conn:
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
        sealed = []
        for slot, vec in enumerate(mat):
            nonce = os.urandom(12)
            sealed.append(
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
        rows.replace_templates(conn, patron_id, model, sealed)
        self._log(conn, site, patron_id)
        return len(sealed)

    @staticmethod
    def model_dim(conn: Connection, model: str) -> int | None:
        """The length of ``model``'s templates, from those already stored (None: first ones).
        A gate holds one gallery matrix per model: one wrong length would break it."""
        n = rows.sealed_template_length(conn, model)
        return None if n is None else (n - 16) // 4  # less the GCM tag, 4 bytes a value

    def erase(self, patron_id: str) -> None:
        """Delete a reader, every template and the kept ID fields; every branch's kiosks
        drop them at next sync. Consent records stay: they name only the patron number."""
        with self.tx.begin() as conn:
            self.erase_in(conn, patron_id)

    def erase_in(self, conn: Connection, patron_id: str) -> None:
        site = self.site_of(conn, patron_id)  # UnknownReader if absent
        rows.erase(conn, patron_id)
        self.log_change(conn, patron_id)
        self.count_in(conn, site, "erasures")

    def count_in(self, conn: Connection, site: str, figure: str) -> None:
        """Count in the reports what central itself did, in the change's transaction."""
        if self.repo.rollups is not None:
            self.repo.rollups.record_in(conn, site, figure)

    @staticmethod
    def ils_keys_in(conn: Connection, patron_id: str) -> dict[str, str]:
        """What finds the reader in the library system once she is erased here: her card
        number (the barcode, else the patron number) and the keyed hash of her ID number."""
        row = rows.reader(conn, patron_id)
        ref = rows.citizen_ref_of(conn, patron_id)
        keys = {"cardnumber": str((row.barcode if row is not None else None) or patron_id)}
        if ref:
            keys["citizen_ref"] = ref
        return keys

    def renew_in(self, conn: Connection, patron_id: str, expires_at: str) -> None:
        """A new expiry; an expired reader is active again, a blocked one stays blocked."""
        row = rows.reader(conn, patron_id)
        if row is None:
            raise UnknownReader(patron_id)
        status = "blocked" if row.status == "blocked" else "active"
        rows.set_fields(conn, patron_id, expires_at=expires_at, status=status)
        self.log_change(conn, patron_id)

    def set_barcode_in(self, conn: Connection, patron_id: str, barcode: str | None) -> None:
        """The reader's barcode (None: none): the old one stops finding her at every kiosk."""
        if barcode:
            holder = rows.barcode_holder(conn, barcode, patron_id)
            if holder is not None:
                raise BarcodeTaken(f"barcode {barcode} belongs to reader {holder}")
        rows.set_fields(conn, patron_id, barcode=barcode or None)
        self.log_change(conn, patron_id)

    @staticmethod
    def record_in(conn: Connection, type_: str, site: str, payload: dict[str, Any]) -> None:
        """An event of central's own (a reader's renewal, replacement, erasure) beside the
        devices' events: reports and the audit trail read one table."""
        now = utc_now()
        rows.record_event(
            conn,
            event_id=uuid7(),
            device_id=CENTRAL,
            site=site,
            type=type_,
            seq=0,  # central's, not in a device's sequence
            occurred_at=now,
            received_at=now,
            payload=payload,
        )

    def revoke_card(self, jti: str, patron_id: str) -> None:
        with self.tx.begin() as conn:
            self.revoke_in(conn, jti, patron_id)

    def revoke_in(self, conn: Connection, jti: str, patron_id: str) -> None:
        site = self.site_of(conn, patron_id)
        if rows.is_revoked(conn, jti):
            return
        rows.revoke(conn, jti, patron_id)
        self._log(conn, site, patron_id)

    # -- deltas ---------------------------------------------------------------------------

    def sites(self) -> list[str]:
        """The library's branches: every site a kiosk or a reader's home is at."""
        with self.tx.connect() as conn:
            return self.sites_in(conn)

    @staticmethod
    def sites_in(conn: Connection) -> list[str]:
        return sorted(rows.homes_and_kiosk_sites(conn))

    def site_version(self, site: str) -> int:
        with self.tx.connect() as conn:
            return rows.site_version(conn, site)

    def _current(
        self, conn: Connection, site: str, pid: str
    ) -> tuple[GalleryReader | None, list[str]]:
        """A reader as the site's gates should hold it (None: drop it) and its revoked cards."""
        row = rows.reader(conn, pid)
        revoked = rows.revoked_of(conn, pid)
        if row is None:
            return None, revoked
        tmpl = rows.templates_of(conn, pid)
        model = tmpl[0].model if tmpl else ""
        ref = rows.citizen_ref_of(conn, pid)
        purposes = face_purposes(conn, pid, site)  # her consent says where, too
        # templates with no consent record at all (put by staff through the API) go as
        # before, read as face_gate; a consent that does not reach this branch keeps them away
        face_here = bool(purposes) or not face_purposes(conn, pid)
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
                templates=vecs if face_here else [],
                model=model if face_here else "",
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
        with self.tx.connect() as conn:
            changes = rows.changes_after(conn, site, base)
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
            # the newest 16 the wire schema carries; older ones should be retired
            keys = rows.gate_card_keys(conn, 16)
        return GalleryDelta(
            base=base,
            version=version,
            upserts=upserts,
            removes=removes,
            revoked_cards=revoked,
            card_keys=keys,
        )

"""Per-site gallery keys: deltas are sealed with the site's key, which only its gates hold.

Each site has AES-256 keys (sealed at rest under central's identity key); the newest seals new
deltas. Central wraps every key to each gate's certificate key (ECIES, P-256) and publishes
the set, signed and retained, on the gate's own ``keys`` topic, so neither the broker nor a
self-check or desk (nor another site's gate) can read a template. Revoking a gate rotates its
site's key: what is sealed afterwards is closed to the revoked gate.
"""

from __future__ import annotations

import base64
import os
import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, func, insert, select

from biblioedge.fleet.db import site_keys
from biblioedge.protocol import SiteKeys, dumps, utc_now
from biblioedge.provisioning import pki
from biblioedge.provisioning.sealing import gallery_context, seal, seal_with, site_key_context

#: keys a gate is sent: the active one and a few before it (deltas still in flight)
KEPT = 4


class SiteKeyring:
    def __init__(self, engine: Engine, aead: AESGCM) -> None:
        self.engine = engine
        self.aead = aead

    def _keys(self, site: str) -> tuple[int, list[tuple[str, bytes]]]:
        """(how many keys the site ever had, newest KEPT keys newest first), made on first use."""
        with self.engine.begin() as conn:
            count = int(
                conn.scalar(
                    select(func.count()).select_from(site_keys).where(site_keys.c.site == site)
                )
                or 0
            )
            if count == 0:
                self._add(conn, site)
                count = 1
            rows = conn.execute(
                select(site_keys)
                .where(site_keys.c.site == site)
                .order_by(site_keys.c.created_at.desc(), site_keys.c.kid.desc())
                .limit(KEPT)
            ).all()
        return count, [
            (r.kid, self.aead.decrypt(r.nonce, r.sealed_key, f"{site}\0{r.kid}".encode()))
            for r in rows
        ]

    def _add(self, conn: Any, site: str) -> str:
        kid = f"s{utc_now():%Y%m%d%H%M%S}{secrets.token_hex(3)}"
        nonce = os.urandom(12)
        conn.execute(
            insert(site_keys).values(
                kid=kid,
                site=site,
                nonce=nonce,
                sealed_key=self.aead.encrypt(
                    nonce, AESGCM.generate_key(256), f"{site}\0{kid}".encode()
                ),
                created_at=utc_now(),
            )
        )
        return kid

    def rotate(self, site: str) -> str:
        with self.engine.begin() as conn:
            return self._add(conn, site)

    def seal_delta(self, site: str, body: bytes) -> bytes:
        _, keys = self._keys(site)
        kid, key = keys[0]
        return seal_with(key, kid, body, gallery_context(site))

    def message(self, device_id: str, site: str, cert_pem: str) -> bytes:
        """The site's keys wrapped to one gate's certificate key (its ``keys`` document)."""
        pub = pki.load_cert(cert_pem.encode()).public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            raise ValueError(f"{device_id}'s certificate key is not EC")
        version, keys = self._keys(site)
        wrapped = {
            kid: base64.b64encode(seal(pub, key, site_key_context(site, kid, device_id))).decode()
            for kid, key in keys
        }
        doc = SiteKeys(
            device_id=device_id, site=site, version=version, active=keys[0][0], keys=wrapped
        )
        return dumps(doc)

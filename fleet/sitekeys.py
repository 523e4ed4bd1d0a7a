"""Per-site gallery keys: deltas are sealed with the site's key, names with its greeting key.

Each site has AES-256 keys of two kinds (sealed at rest under central's identity key, in one
table, told apart by the key id's first letter): site keys ("s…") seal whole gallery deltas
and go to every kiosk that keeps the gallery (gates and self-checks, which need the
templates); greeting keys ("g…") seal each reader's greeting inside a delta and go to gates
only, the one role that shows a name. The newest key of each kind seals. Central wraps every
key to each kiosk's certificate key (ECIES, P-256) and publishes the set, signed and
retained, on the kiosk's own ``keys`` topic, so neither the broker nor a desk (nor another
site's kiosk) can read a template, and a self-check cannot read a name. Which keys a kiosk
gets follows the role its certificate states. Revoking a kiosk rotates both keys of its
site: what is sealed afterwards is closed to the revoked kiosk.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from biblioedge.fleet.store import Db
from biblioedge.fleet.store.site_keys import SealedKey, SiteKeyStore
from biblioedge.protocol import GalleryReader, SiteKeys, dumps, utc_now
from biblioedge.provisioning import pki
from biblioedge.provisioning.sealing import (
    gallery_context,
    greeting_context,
    greeting_key_context,
    seal,
    seal_with,
    site_key_context,
)

#: keys of each kind a kiosk is sent: the active one and a few before it (deltas in flight)
KEPT = 4
#: the key id's first letter: a site key (every gallery kiosk) or a greeting key (gates)
SITE, GREETING = "s", "g"
#: the one role that shows readers' names, and so gets the greeting keys
GREETS = "gate"

NameSealer = Callable[[GalleryReader], GalleryReader]


class SiteKeyring:
    def __init__(self, db: Db, aead: AESGCM) -> None:
        self.store = SiteKeyStore(db)
        self.aead = aead

    def _keys(self, site: str) -> tuple[int, dict[str, list[tuple[str, bytes]]]]:
        """(how many keys the site ever had, of either kind: the version of its key sets;
        per kind, the newest KEPT keys newest first), each kind made on first use."""
        count, stored = self.store.load(site, (SITE, GREETING), KEPT, lambda k: self._new(site, k))
        out = {
            kind: [
                (k.kid, self.aead.decrypt(k.nonce, k.sealed_key, f"{site}\0{k.kid}".encode()))
                for k in keys
            ]
            for kind, keys in stored.items()
        }
        return count, out

    def _new(self, site: str, kind: str) -> SealedKey:
        """A new random key of ``kind``, sealed under central's key and bound to its id."""
        kid = f"{kind}{utc_now():%Y%m%d%H%M%S}{secrets.token_hex(3)}"
        nonce = os.urandom(12)
        sealed = self.aead.encrypt(nonce, AESGCM.generate_key(256), f"{site}\0{kid}".encode())
        return SealedKey(kid, nonce, sealed, utc_now())

    def rotate(self, site: str) -> str:
        """A new site key and a new greeting key (the site key's id is returned)."""
        greeting = self._new(site, GREETING)
        key = self._new(site, SITE)
        self.store.add(site, [greeting, key])
        return key.kid

    def seal_delta(self, site: str, body: bytes) -> bytes:
        _, keys = self._keys(site)
        kid, key = keys[SITE][0]
        return seal_with(key, kid, body, gallery_context(site))

    def name_sealer(self, site: str) -> NameSealer:
        """Seals a reader's greeting under the site's active greeting key, bound to the site
        and the reader, and empties ``display_name``: only a gate can read it."""
        _, keys = self._keys(site)
        kid, key = keys[GREETING][0]

        def sealed(reader: GalleryReader) -> GalleryReader:
            if not reader.display_name:
                return reader
            blob = seal_with(
                key, kid, reader.display_name.encode(), greeting_context(site, reader.patron_id)
            )
            return reader.model_copy(
                update={"display_name": "", "sealed_greeting": base64.b64encode(blob).decode()}
            )

        return sealed

    def message(self, device_id: str, site: str, cert_pem: str) -> bytes:
        """The site's keys wrapped to one kiosk's certificate key (its ``keys`` document):
        the greeting keys too if the certificate is a gate's."""
        return self._message(device_id, site, cert_pem, self._keys(site))

    def messages(self, site: str, kiosks: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
        """``message`` for each (device id, certificate PEM) of ``site``, the site's keys
        read once: re-asserting a fleet's keys read them once per kiosk, a transaction of
        four queries each on the bridge's one database thread, while ingest waited."""
        keys = self._keys(site)
        return [(device_id, self._message(device_id, site, pem, keys)) for device_id, pem in kiosks]

    def _message(
        self,
        device_id: str,
        site: str,
        cert_pem: str,
        loaded: tuple[int, dict[str, list[tuple[str, bytes]]]],
    ) -> bytes:
        cert = pki.load_cert(cert_pem.encode())
        pub = cert.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            raise ValueError(f"{device_id}'s certificate key is not EC")
        greets = pki.device_name(cert).role == GREETS
        version, keys = loaded

        def wrapped(kind: str, context: Callable[[str, str, str], bytes]) -> dict[str, str]:
            return {
                kid: base64.b64encode(seal(pub, key, context(site, kid, device_id))).decode()
                for kid, key in keys[kind]
            }

        doc = SiteKeys(
            device_id=device_id,
            site=site,
            version=version,
            active=keys[SITE][0][0],
            keys=wrapped(SITE, site_key_context),
            greeting_active=keys[GREETING][0][0] if greets else "",
            greeting_keys=wrapped(GREETING, greeting_key_context) if greets else {},
        )
        return dumps(doc)

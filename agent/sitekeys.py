"""The site's gallery keys on a kiosk: unwrapped with its own key, kept 0600 beside it.

Central sends them (signed, retained) on the kiosk's ``keys`` topic whenever they change; a set
applies only if it is for this kiosk and newer than the one held, so a replayed older set
cannot bring back a key retired when another kiosk was revoked. A gate's set also holds the
site's greeting keys, with which it opens the readers' names in a delta; a self-check's has
none, so the names it receives stay sealed (it keeps none anyway).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from pathlib import Path

from biblioedge.protocol import GalleryDelta, GalleryReader, ProtocolError, SiteKeys, decode
from biblioedge.provisioning import pki
from biblioedge.provisioning.sealing import (
    SealError,
    UnknownKey,
    gallery_context,
    greeting_context,
    greeting_key_context,
    open_sealed,
    open_with,
    site_key_context,
)

log = logging.getLogger("biblioedge.agent.sitekeys")


def _b64(keys: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in keys.items()}


class SiteKeyRing:
    def __init__(
        self, identity_dir: Path, device_id: str, site: str, *, greets: bool = True
    ) -> None:
        self.path = identity_dir / "site-keys.json"
        self.key_path = identity_dir / "device.key"
        self.device_id = device_id
        self.site = site
        #: a gate shows names: it opens them (a self-check leaves them sealed)
        self.greets = greets
        self.version = 0
        self.keys: dict[str, bytes] = {}
        self.greeting: dict[str, bytes] = {}
        try:
            doc = json.loads(self.path.read_text())
            self.version = int(doc["version"])
            self.keys = {k: base64.b64decode(v) for k, v in doc["keys"].items()}
            self.greeting = {k: base64.b64decode(v) for k, v in doc.get("greeting", {}).items()}
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            log.warning("ignoring unreadable %s (central sends the keys again): %s", self.path, exc)

    def update(self, doc: SiteKeys) -> bool:
        """True when the keys changed. ProtocolError for a set that is not ours or not new."""
        if doc.device_id != self.device_id or doc.site != self.site:
            raise ProtocolError("device_mismatch", "site keys for another gate")
        if doc.version <= self.version and self.keys:
            return False
        try:
            private = pki.load_key(self.key_path.read_bytes())

            def unwrap(blob: str, context: bytes) -> bytes:
                return open_sealed(private, base64.b64decode(blob, validate=True), context)

            keys = {
                kid: unwrap(blob, site_key_context(self.site, kid, self.device_id))
                for kid, blob in doc.keys.items()
            }
            greeting = {
                kid: unwrap(blob, greeting_key_context(self.site, kid, self.device_id))
                for kid, blob in doc.greeting_keys.items()
            }
        except (OSError, pki.PkiError, SealError, ValueError, binascii.Error) as exc:
            raise ProtocolError("bad_site_keys", f"cannot unwrap the site keys: {exc}") from exc
        if doc.active not in keys:
            raise ProtocolError("bad_site_keys", "the active key is not in the set")
        if doc.greeting_active and doc.greeting_active not in greeting:
            raise ProtocolError("bad_site_keys", "the active greeting key is not in the set")
        self.keys, self.greeting, self.version = keys, greeting, doc.version
        body = {"version": doc.version, "keys": _b64(keys), "greeting": _b64(greeting)}
        pki.write_private(self.path, json.dumps(body).encode())
        log.info(
            "site keys version %d (%d keys, %d greeting keys)",
            doc.version,
            len(keys),
            len(greeting),
        )
        return True

    def open(self, blob: bytes) -> bytes:
        try:
            return open_with(self.keys, blob, gallery_context(self.site))
        except UnknownKey as exc:
            raise ProtocolError("unknown_site_key", str(exc)) from exc
        except SealError as exc:
            raise ProtocolError("bad_gallery", str(exc)) from exc

    def open_delta(self, blob: bytes) -> GalleryDelta:
        """The delta, with each reader's greeting opened into ``display_name`` on a gate.

        A name sealed under a greeting key this gate does not hold yet costs the whole delta
        (``unknown_greeting_key``: the new key set is on its way, and central sends the delta
        again after the gate's next report); a name that does not open costs only that name.
        A delta from an older central, with names in clear, is taken as it is.
        """
        delta = decode(GalleryDelta, self.open(blob))
        if not self.greets or not any(r.sealed_greeting for r in delta.upserts):
            return delta
        return delta.model_copy(update={"upserts": [self._greeted(r) for r in delta.upserts]})

    def _greeted(self, reader: GalleryReader) -> GalleryReader:
        if not reader.sealed_greeting:
            return reader
        name = ""
        try:
            name = open_with(
                self.greeting,
                base64.b64decode(reader.sealed_greeting, validate=True),
                greeting_context(self.site, reader.patron_id),
            ).decode()
        except UnknownKey as exc:
            raise ProtocolError("unknown_greeting_key", str(exc)) from exc
        except (SealError, ValueError, binascii.Error) as exc:
            log.warning("the greeting of %s does not open: %s", reader.patron_id, exc)
        return reader.model_copy(update={"display_name": name, "sealed_greeting": ""})

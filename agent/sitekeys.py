"""The site's gallery keys on a gate: unwrapped with the gate's own key, kept 0600 beside it.

Central sends them (signed, retained) on the gate's ``keys`` topic whenever they change; a set
applies only if it is for this gate and newer than the one held, so a replayed older set
cannot bring back a key retired when another gate was revoked.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from pathlib import Path

from biblioedge.protocol import ProtocolError, SiteKeys
from biblioedge.provisioning import pki
from biblioedge.provisioning.sealing import (
    SealError,
    UnknownKey,
    gallery_context,
    open_sealed,
    open_with,
    site_key_context,
)

log = logging.getLogger("biblioedge.agent.sitekeys")


class SiteKeyRing:
    def __init__(self, identity_dir: Path, device_id: str, site: str) -> None:
        self.path = identity_dir / "site-keys.json"
        self.key_path = identity_dir / "device.key"
        self.device_id = device_id
        self.site = site
        self.version = 0
        self.keys: dict[str, bytes] = {}
        try:
            doc = json.loads(self.path.read_text())
            self.version = int(doc["version"])
            self.keys = {k: base64.b64decode(v) for k, v in doc["keys"].items()}
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            log.warning("ignoring unreadable %s (central sends the keys again): %s", self.path, exc)

    def update(self, doc: SiteKeys) -> bool:
        """True when the keys changed. ProtocolError for a set that is not ours or not new."""
        if doc.device_id != self.device_id or doc.site != self.site:
            raise ProtocolError("device_mismatch", "site keys for another gate")
        if doc.version <= self.version and self.keys:
            return False
        try:
            private = pki.load_key(self.key_path.read_bytes())
            keys = {
                kid: open_sealed(
                    private,
                    base64.b64decode(blob, validate=True),
                    site_key_context(self.site, kid, self.device_id),
                )
                for kid, blob in doc.keys.items()
            }
        except (OSError, pki.PkiError, SealError, ValueError, binascii.Error) as exc:
            raise ProtocolError("bad_site_keys", f"cannot unwrap the site keys: {exc}") from exc
        if doc.active not in keys:
            raise ProtocolError("bad_site_keys", "the active key is not in the set")
        self.keys, self.version = keys, doc.version
        body = {
            "version": doc.version,
            "keys": {k: base64.b64encode(v).decode() for k, v in keys.items()},
        }
        pki.write_private(self.path, json.dumps(body).encode())
        log.info("site keys version %d (%d keys)", doc.version, len(keys))
        return True

    def open(self, blob: bytes) -> bytes:
        try:
            return open_with(self.keys, blob, gallery_context(self.site))
        except UnknownKey as exc:
            raise ProtocolError("unknown_site_key", str(exc)) from exc
        except SealError as exc:
            raise ProtocolError("bad_gallery", str(exc)) from exc

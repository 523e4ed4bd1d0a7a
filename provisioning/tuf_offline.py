"""The offline half of release signing: the root and targets keys, and what they sign.

These keys live on IT's signing machine (an offline laptop or a USB key in a safe), never at
central: with only central's online keys, an attacker who owns central can withhold or delay
updates, but cannot make a kiosk install anything IT did not sign. ``biblioedge release``
drives this module; central receives only the signed metadata and the artifacts.

A keys directory holds ``root.pem`` and ``targets.pem`` (mode 0600) and the metadata signed so
far (``<n>.root.json``, ``<n>.targets.json``), so the next release starts from the last one
even without asking central.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, Root, TargetFile, Targets
from tuf.api.serialization.json import JSONSerializer

from biblioedge.releases import valid_target

SERIALIZER = JSONSerializer(compact=False)
OFFLINE_ROLES = ("root", "targets")


class SigningError(RuntimeError):
    """The keys directory or the release cannot be used; the message says why."""


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _signer(path: Path) -> CryptoSigner:
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SigningError(f"cannot read the key {path}: {exc}") from exc
    return CryptoSigner(private)


def _new_key(path: Path) -> CryptoSigner:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return _signer(path)


def _latest(keys_dir: Path, role: str) -> tuple[int, Path] | None:
    best: tuple[int, Path] | None = None
    for path in keys_dir.glob(f"*.{role}.json"):
        head = path.name.split(".", 1)[0]
        if head.isdigit() and (best is None or int(head) > best[0]):
            best = (int(head), path)
    return best


@dataclass
class OfflineKeys:
    dir: Path

    def signer(self, role: str) -> CryptoSigner:
        return _signer(self.dir / f"{role}.pem")

    def latest(self, role: str) -> bytes | None:
        found = _latest(self.dir, role)
        return None if found is None else found[1].read_bytes()

    def keep(self, role: str, version: int, data: bytes) -> Path:
        path = self.dir / f"{version}.{role}.json"
        path.write_bytes(data)
        return path


def init_keys(
    keys_dir: Path,
    online: dict[str, dict[str, Any]],
    *,
    root_days: int = 365,
    targets_days: int = 90,
) -> tuple[bytes, bytes]:
    """New root and targets keys, root version 1 naming central's online keys, and an empty
    targets version 1. Refuses a directory that already holds keys."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    if any((keys_dir / f"{r}.pem").exists() for r in OFFLINE_ROLES):
        raise SigningError(f"{keys_dir} already holds release keys")
    signers = {r: _new_key(keys_dir / f"{r}.pem") for r in OFFLINE_ROLES}
    now = _now()
    root = Root(expires=now + timedelta(days=root_days), consistent_snapshot=True)
    for role in OFFLINE_ROLES:
        root.add_key(signers[role].public_key, role)
    for role in ("snapshot", "timestamp"):
        try:
            doc = dict(online[role])
            keyid = str(doc.pop("keyid"))
            root.add_key(SSlibKey.from_dict(keyid, doc), role)
        except (KeyError, ValueError, TypeError) as exc:
            raise SigningError(f"central's online {role} key is not usable: {exc}") from exc
    root_md = Metadata(root)
    root_md.sign(signers["root"])
    targets_md = Metadata(Targets(expires=now + timedelta(days=targets_days)))
    targets_md.sign(signers["targets"])
    keys = OfflineKeys(keys_dir)
    root_bytes = root_md.to_bytes(SERIALIZER)
    targets_bytes = targets_md.to_bytes(SERIALIZER)
    keys.keep("root", 1, root_bytes)
    keys.keep("targets", 1, targets_bytes)
    return root_bytes, targets_bytes


def sign_targets(
    keys_dir: Path,
    add: dict[str, tuple[Path, dict[str, Any]]],
    *,
    base: bytes | None = None,
    remove: tuple[str, ...] = (),
    days: int = 90,
) -> bytes:
    """The next targets metadata: ``base`` (central's current one, or the last signed here)
    plus ``add`` (target path -> local file and custom fields), minus ``remove``."""
    keys = OfflineKeys(keys_dir)
    base = base if base is not None else keys.latest("targets")
    if base is None:
        raise SigningError(f"no targets metadata in {keys_dir}: run 'release init' first")
    md = Metadata[Targets].from_bytes(base)
    signer = keys.signer("targets")
    for path, (local, custom) in add.items():
        if not valid_target(path):
            raise SigningError(f"not a release target name: {path!r}")
        tf = TargetFile.from_file(path, str(local), ["sha256"])
        tf.unrecognized_fields["custom"] = custom
        md.signed.targets[path] = tf
    for path in remove:
        md.signed.targets.pop(path, None)
    md.signed.version += 1
    md.signed.expires = _now() + timedelta(days=days)
    md.signatures.clear()
    md.sign(signer)
    data = md.to_bytes(SERIALIZER)
    keys.keep("targets", md.signed.version, data)
    return data

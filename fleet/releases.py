"""Central's release repository: artifacts and their TUF metadata, served to kiosks.

The root and targets keys never come here: IT signs a release on a machine that holds them
(``biblioedge release sign``) and uploads the artifacts and the new targets metadata. Central
checks that metadata against the trusted root (signature, version exactly one up, not
expired, every target present with its length and hash, every name a known kind), stores it,
and signs a new snapshot and timestamp with its online keys. The timestamp and snapshot are
re-signed on a schedule (``refresh``) so that kiosks see fresh metadata even when nothing is
released; a kiosk that cannot reach central keeps running what it committed.

Consistent snapshots: metadata is served as ``<version>.<role>.json`` and targets as
``<dir>/<sha256>.<name>``, so files never change once written and a kiosk reading during a
publish sees either the old or the new set, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from biblioedge.fleet.replicas import DirLock
from biblioedge.releases import valid_target

log = logging.getLogger("biblioedge.fleet.releases")

ONLINE_ROLES = ("snapshot", "timestamp")
_HEX64 = frozenset("0123456789abcdef")
_SERIALIZER = JSONSerializer(compact=False)


class ReleaseRefused(ValueError):
    """A release, root or artifact central will not take; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_online_keys(keys_dir: Path) -> dict[str, CryptoSigner]:
    """The snapshot and timestamp signers, created on first use (``central init`` makes them)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    signers = {}
    for role in ONLINE_ROLES:
        path = keys_dir / f"tuf-{role}.pem"
        if not path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        signers[role] = CryptoSigner(private)
    return signers


class Upload:
    """One artifact streaming in: hashed as it is written, kept only if the hash is right."""

    def __init__(self, incoming: Path, sha256: str, limit: int) -> None:
        self.final = incoming / sha256
        self.sha256 = sha256
        self.limit = limit
        self.size = 0
        self._digest = hashlib.sha256()
        self._tmp = incoming / f".{sha256}.{os.getpid()}.{threading.get_ident()}.{id(self)}"
        self._file: BinaryIO | None = None if self.final.exists() else self._tmp.open("wb")

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            return  # already stored: the rest is read and dropped
        self.size += len(chunk)
        if self.size > self.limit:
            self.abort()
            raise ReleaseRefused("too_large", f"an artifact is at most {self.limit} bytes")
        self._digest.update(chunk)
        self._file.write(chunk)

    def finish(self) -> int:
        if self._file is None:
            return self.final.stat().st_size
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if self._digest.hexdigest() != self.sha256:
                raise ReleaseRefused(
                    "hash_mismatch", f"the body's sha256 is {self._digest.hexdigest()}"
                )
            os.replace(self._tmp, self.final)
        finally:
            self.abort()
        return self.size

    def abort(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


@dataclass(frozen=True)
class Target:
    path: str
    length: int
    sha256: str
    custom: dict[str, Any]


class ReleaseRepo:
    """One TUF repository on disk; every method is safe from several threads."""

    def __init__(
        self,
        root_dir: Path,
        keys_dir: Path,
        *,
        timestamp_days: float = 1.0,
        snapshot_days: float = 7.0,
        max_artifact_bytes: int = 2 << 30,
    ) -> None:
        self.dir = root_dir
        self.metadata_dir = root_dir / "metadata"
        self.targets_dir = root_dir / "targets"
        self.incoming = root_dir / "incoming"
        for d in (self.metadata_dir, self.targets_dir, self.incoming):
            d.mkdir(parents=True, exist_ok=True)
        self.signers = load_online_keys(keys_dir)
        self.timestamp_life = timedelta(days=timestamp_days)
        self.snapshot_life = timedelta(days=snapshot_days)
        self.max_artifact_bytes = max_artifact_bytes
        #: every writer of the repository, in this process and in other central replicas
        #: on the same data directory (fleet/replicas.py): versions go up one at a time
        self._lock = DirLock(root_dir / "repository.lock")

    # -- reading -----------------------------------------------------------------------------

    def online_public(self) -> dict[str, dict[str, Any]]:
        """The online keys' public halves, for the root IT signs offline."""
        return {
            role: {"keyid": s.public_key.keyid, **s.public_key.to_dict()}
            for role, s in self.signers.items()
        }

    def _latest(self, role: str) -> tuple[int, Path] | None:
        best: tuple[int, Path] | None = None
        for path in self.metadata_dir.glob(f"*.{role}.json"):
            head = path.name.split(".", 1)[0]
            if head.isdigit() and (best is None or int(head) > best[0]):
                best = (int(head), path)
        return best

    def root(self) -> Metadata[Root] | None:
        latest = self._latest("root")
        return None if latest is None else Metadata[Root].from_bytes(latest[1].read_bytes())

    def root_bytes(self, version: int | None = None) -> bytes | None:
        if version is None:
            latest = self._latest("root")
            return None if latest is None else latest[1].read_bytes()
        path = self.metadata_dir / f"{version}.root.json"
        return path.read_bytes() if path.exists() else None

    def targets(self) -> Metadata[Targets] | None:
        latest = self._latest("targets")
        return None if latest is None else Metadata[Targets].from_bytes(latest[1].read_bytes())

    def ready(self) -> bool:
        return (self.metadata_dir / "timestamp.json").exists()

    def metadata_file(self, name: str) -> Path | None:
        """A metadata file by its served name, or None (names are checked, not trusted)."""
        parts = name.split(".")
        ok = name == "timestamp.json" or (
            len(parts) == 3
            and parts[0].isdigit()
            and parts[1] in ("root", "targets", "snapshot")
            and parts[2] == "json"
        )
        path = self.metadata_dir / name
        return path if ok and path.is_file() else None

    def target_file(self, served: str) -> Path | None:
        """``<dir>/<sha256>.<name>`` as a stored file, or None."""
        head, _, base = served.rpartition("/")
        digest, dot, name = base.partition(".")
        if not dot or len(digest) != 64 or not set(digest) <= _HEX64:
            return None
        if not valid_target(f"{head}/{name}" if head else name):
            return None
        path = self.targets_dir / head / base
        return path if path.is_file() else None

    def list_targets(self) -> list[Target]:
        md = self.targets()
        if md is None:
            return []
        return [
            Target(t.path, t.length, t.hashes.get("sha256", ""), dict(t.custom))
            for t in md.signed.targets.values()
        ]

    def describe(self) -> dict[str, Any]:
        """What the API and the dashboard show about the repository."""
        root, targets = self.root(), self.targets()
        ts = self._read("timestamp.json")
        return {
            "initialized": root is not None,
            "root_version": root.signed.version if root else None,
            "root_expires": root.signed.expires.isoformat() if root else None,
            "targets_version": targets.signed.version if targets else None,
            "targets_expires": targets.signed.expires.isoformat() if targets else None,
            "timestamp_version": ts.signed.version if ts else None,
            "timestamp_expires": ts.signed.expires.isoformat() if ts else None,
            "online_keys": {r: s.public_key.keyid for r, s in self.signers.items()},
        }

    def _read(self, name: str) -> Metadata[Any] | None:
        path = self.metadata_dir / name
        return Metadata.from_bytes(path.read_bytes()) if path.exists() else None

    # -- artifacts ---------------------------------------------------------------------------

    def receive(self, sha256: str) -> Upload:
        """A writer for one uploaded artifact, stored under its hash once the hash checks."""
        if len(sha256) != 64 or not set(sha256) <= _HEX64:
            raise ReleaseRefused("bad_hash", "artifacts are named by their lower-case sha256")
        return Upload(self.incoming, sha256, self.max_artifact_bytes)

    def _stored(self, path: str, sha256: str) -> Path:
        head, _, name = path.rpartition("/")
        return self.targets_dir / head / f"{sha256}.{name}"

    # -- publishing --------------------------------------------------------------------------

    def set_root(self, data: bytes) -> int:
        """Trust a root IT signed offline: the first one, or the next, signed by the old root's
        keys and its own. Its snapshot and timestamp keys must be central's online keys."""
        try:
            new = Metadata[Root].from_bytes(data)
        except (DeserializationError, ValueError, TypeError) as exc:
            raise ReleaseRefused("bad_metadata", f"not TUF root metadata: {exc}") from exc
        if not isinstance(new.signed, Root):
            raise ReleaseRefused("bad_metadata", "not root metadata")
        with self._lock:
            old = self.root()
            want = 1 if old is None else old.signed.version + 1
            if new.signed.version != want:
                raise ReleaseRefused(
                    "bad_version", f"root version {new.signed.version}, expected {want}"
                )
            try:
                if old is not None:
                    old.verify_delegate(Root.type, new)
                new.verify_delegate(Root.type, new)
            except UnsignedMetadataError as exc:
                raise ReleaseRefused("bad_signature", f"root signatures: {exc}") from exc
            if new.signed.is_expired():
                raise ReleaseRefused("expired", "this root has already expired")
            if not new.signed.consistent_snapshot:
                raise ReleaseRefused("bad_metadata", "root must use consistent snapshots")
            for role, signer in self.signers.items():
                r = new.signed.roles[role]
                if r.keyids != [signer.public_key.keyid] or r.threshold != 1:
                    raise ReleaseRefused(
                        "wrong_online_key",
                        f"the root's {role} key is not central's online key "
                        f"{signer.public_key.keyid[:16]}",
                    )
            _write_atomic(self.metadata_dir / f"{new.signed.version}.root.json", data)
            if self.targets() is not None:
                self._sign_online(new_snapshot=True)
            log.info("trusting TUF root version %d", new.signed.version)
            return new.signed.version

    def publish(self, data: bytes) -> tuple[int, list[Target]]:
        """Take new targets metadata signed offline; returns its version and the targets it
        added or changed. Nothing is stored unless everything checks."""
        try:
            new = Metadata[Targets].from_bytes(data)
        except (DeserializationError, ValueError, TypeError) as exc:
            raise ReleaseRefused("bad_metadata", f"not TUF targets metadata: {exc}") from exc
        if not isinstance(new.signed, Targets):
            raise ReleaseRefused("bad_metadata", "not targets metadata")
        with self._lock:
            root = self.root()
            if root is None:
                raise ReleaseRefused("no_root", "no trusted root yet: upload one first")
            try:
                root.verify_delegate(Targets.type, new)
            except UnsignedMetadataError as exc:
                raise ReleaseRefused(
                    "bad_signature", f"not signed by the root's targets key: {exc}"
                ) from exc
            old = self.targets()
            want = 1 if old is None else old.signed.version + 1
            if new.signed.version != want:
                raise ReleaseRefused(
                    "bad_version",
                    f"targets version {new.signed.version}, expected {want} (replayed or stale?)",
                )
            if new.signed.is_expired():
                raise ReleaseRefused("expired", "these targets have already expired")
            if new.signed.delegations is not None:
                raise ReleaseRefused("bad_metadata", "delegations are not used")
            before = {} if old is None else old.signed.targets
            changed: list[Target] = []
            moves: list[tuple[Path, Path]] = []
            for path, tf in new.signed.targets.items():
                if not valid_target(path):
                    raise ReleaseRefused("bad_target", f"not a release target name: {path!r}")
                sha = tf.hashes.get("sha256")
                if sha is None or len(sha) != 64:
                    raise ReleaseRefused("bad_target", f"{path}: no sha256")
                stored = self._stored(path, sha)
                if not stored.exists():
                    upload = self.incoming / sha
                    if not upload.exists():
                        raise ReleaseRefused("missing_artifact", f"{path}: not uploaded ({sha})")
                    if upload.stat().st_size != tf.length:
                        raise ReleaseRefused(
                            "length_mismatch",
                            f"{path}: {upload.stat().st_size} bytes uploaded, {tf.length} signed",
                        )
                    moves.append((upload, stored))
                if before.get(path) != tf:
                    changed.append(Target(path, tf.length, sha, dict(tf.custom)))
            for upload, stored in moves:
                stored.parent.mkdir(parents=True, exist_ok=True)
                if not stored.exists():
                    os.link(upload, stored)
            _write_atomic(self.metadata_dir / f"{new.signed.version}.targets.json", data)
            self._sign_online(new_snapshot=True)
            for upload, _ in moves:
                with contextlib.suppress(FileNotFoundError):
                    upload.unlink()
            return new.signed.version, changed

    def refresh(self, now: datetime | None = None) -> bool:
        """Re-sign the timestamp (and the snapshot) when half their life is gone."""
        now = now or _now()
        with self._lock:
            if self.targets() is None or self.root() is None:
                return False
            ts = self._read("timestamp.json")
            snap = self._latest("snapshot")
            snap_md = None if snap is None else Metadata[Snapshot].from_bytes(snap[1].read_bytes())
            snapshot_due = snap_md is None or snap_md.signed.expires - now < self.snapshot_life / 2
            timestamp_due = ts is None or ts.signed.expires - now < self.timestamp_life / 2
            if not (snapshot_due or timestamp_due):
                return False
            self._sign_online(new_snapshot=snapshot_due)
            return True

    def _sign_online(self, *, new_snapshot: bool) -> None:
        now = _now()
        targets = self._latest("targets")
        assert targets is not None
        snap_latest = self._latest("snapshot")
        if new_snapshot or snap_latest is None:
            version = 1 if snap_latest is None else snap_latest[0] + 1
            snapshot = Metadata(
                Snapshot(
                    version=version,
                    expires=now + self.snapshot_life,
                    meta={"targets.json": MetaFile(version=targets[0])},
                )
            )
            snapshot.sign(self.signers["snapshot"])
            snap_bytes = snapshot.to_bytes(_SERIALIZER)
            _write_atomic(self.metadata_dir / f"{version}.snapshot.json", snap_bytes)
        else:
            version = snap_latest[0]
        old_ts = self._read("timestamp.json")
        ts_version = 1 if old_ts is None else old_ts.signed.version + 1
        timestamp = Metadata(
            Timestamp(
                version=ts_version,
                expires=now + self.timestamp_life,
                snapshot_meta=MetaFile(version=version),
            )
        )
        timestamp.sign(self.signers["timestamp"])
        _write_atomic(self.metadata_dir / "timestamp.json", timestamp.to_bytes(_SERIALIZER))

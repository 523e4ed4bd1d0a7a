"""Central's own keys and the broker files it derives from the device registry.

Private keys are sealed at rest with AES-GCM under ``keys/identity.key`` (like the template and
card keys): the device CA, the ed25519 control key that signs what central commands, and the
X25519 key desks seal registrations to. The bridge's and the HTTPS listener's TLS keys are
plain 0600 files because OpenSSL reads them from disk.

The broker directory holds what mosquitto reads: the CA, the broker's server certificate, the
CRL and the ACL. Central rewrites the CRL and ACL whenever the registry changes (enrollment,
revocation) and sends the broker SIGHUP through its pid file; mosquitto 2.0 then reloads both
(checked on Debian 12's 2.0.11: a revoked certificate fails its next handshake and a connected
client whose ACL entry is gone is denied every publish and delivery at once).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from biblioedge.keys import load_or_create_key
from biblioedge.provisioning import pki
from biblioedge.provisioning.broker import BrokerFiles, mosquitto_acl
from biblioedge.provisioning.sealing import x25519_public_b64
from biblioedge.provisioning.signing import public_b64, sign

log = logging.getLogger("biblioedge.fleet.identity")


class IdentityError(RuntimeError):
    """Central's key material is unreadable or does not open."""


def _seal_file(aead: AESGCM, path: Path, data: bytes) -> None:
    nonce = os.urandom(12)
    pki.write_private(path, nonce + aead.encrypt(nonce, data, path.name.encode()))


def _open_file(aead: AESGCM, path: Path) -> bytes:
    blob = path.read_bytes()
    try:
        return aead.decrypt(blob[:12], blob[12:], path.name.encode())
    except Exception as exc:
        raise IdentityError(f"{path} does not open with keys/identity.key") from exc


@dataclass
class Signer:
    """Signs control messages with central's ed25519 key."""

    key: Ed25519PrivateKey
    kid: str

    def envelope(self, topic: str, body: bytes) -> bytes:
        return sign(self.key, self.kid, topic, body)

    @property
    def public_keys(self) -> dict[str, str]:
        return {self.kid: public_b64(self.key)}


class CentralIdentity:
    def __init__(
        self,
        keys_dir: Path,
        broker_dir: Path,
        hosts: list[str],
        cert_days: int,
        bridge_id: str = pki.BRIDGE_ID,
    ) -> None:
        self.keys_dir = keys_dir
        #: this process's MQTT identity; each central replica has its own (the broker forces
        #: the certificate's name as client id, so two replicas on one would close each other)
        self.bridge_id = bridge_id
        self._bridge_leaf = "bridge" if bridge_id == pki.BRIDGE_ID else bridge_id
        #: the bridge users the broker's ACL lets read every kiosk's events (all replicas;
        #: asked at each rewrite, since a replica started later adds its own)
        self.bridge_users: Callable[[], list[str]] = lambda: [bridge_id]
        self.files = BrokerFiles(broker_dir)
        self.hosts = hosts
        aead = AESGCM(load_or_create_key(keys_dir / "identity.key"))
        ca_key = keys_dir / "device-ca.key.sealed"
        ca_crt = keys_dir / "device-ca.crt"
        if ca_key.exists() and ca_crt.exists():
            ca = pki.DeviceCA(
                pki.load_key(_open_file(aead, ca_key)), pki.load_cert(ca_crt.read_bytes())
            )
        else:
            ca = pki.DeviceCA.create()
            _seal_file(aead, ca_key, pki.key_pem(ca.key))
            pki.write_public(ca_crt, pki.cert_pem(ca.cert))
        self.ca = ca
        control = keys_dir / "control.key.sealed"
        if control.exists():
            self.signer = Signer(
                Ed25519PrivateKey.from_private_bytes(_open_file(aead, control)), "c1"
            )
        else:
            key = Ed25519PrivateKey.generate()
            _seal_file(aead, control, key.private_bytes_raw())
            self.signer = Signer(key, "c1")
        seal = keys_dir / "seal.key.sealed"
        if seal.exists():
            self.seal_key = x25519.X25519PrivateKey.from_private_bytes(_open_file(aead, seal))
        else:
            self.seal_key = x25519.X25519PrivateKey.generate()
            _seal_file(aead, seal, self.seal_key.private_bytes_raw())
        self.aead = aead
        self._tls_leaf(self._bridge_leaf, lambda k: ca.issue_client(bridge_id, k, cert_days), [])
        self._tls_leaf("https", lambda k: ca.issue_server(k, hosts, cert_days), hosts)
        self._broker_leaf(cert_days)

    # -- TLS leaves ----------------------------------------------------------------------

    def _tls_leaf(self, name: str, issue: object, hosts: list[str]) -> None:
        """(Re)issue ``keys/{name}.crt`` when it is missing, from another CA, near expiry, or
        (server certificates) for other names than ``security.hostnames`` now lists."""
        crt, key = self.keys_dir / f"{name}.crt", self.keys_dir / f"{name}.key"
        if self._leaf_ok(crt, hosts):
            return
        k = pki.new_key()
        cert = issue(k.public_key())  # type: ignore[operator]
        pki.write_private(key, pki.key_pem(k))
        pki.write_public(crt, pki.cert_pem(cert))

    def _leaf_ok(self, crt: Path, hosts: list[str]) -> bool:
        if not crt.exists():
            return False
        try:
            cert = pki.load_cert(crt.read_bytes())
            self.ca.verify(cert)
        except pki.PkiError:
            return False
        if hosts and pki.server_names(cert) != {h.lower() for h in hosts}:
            return False
        return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=7)

    def _broker_leaf(self, cert_days: int) -> None:
        f = self.files
        f.root.mkdir(parents=True, exist_ok=True)
        pki.write_public(f.ca, pki.cert_pem(self.ca.cert))
        if not self._leaf_ok(f.cert, self.hosts):
            k = pki.new_key()
            pki.write_private(f.key, pki.key_pem(k))
            pki.write_public(
                f.cert, pki.cert_pem(self.ca.issue_server(k.public_key(), self.hosts, cert_days))
            )

    @property
    def ca_pem(self) -> bytes:
        return pki.cert_pem(self.ca.cert)

    @property
    def ca_pin(self) -> str:
        return pki.spki_sha256(self.ca.cert)

    @property
    def seal_public(self) -> str:
        return x25519_public_b64(self.seal_key)

    def bridge_tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.keys_dir / "device-ca.crt"))
        leaf = self.keys_dir / self._bridge_leaf
        ctx.load_cert_chain(leaf.with_suffix(".crt"), leaf.with_suffix(".key"))
        return ctx

    @property
    def https_files(self) -> tuple[Path, Path]:
        return self.keys_dir / "https.crt", self.keys_dir / "https.key"

    # -- broker files --------------------------------------------------------------------

    def write_broker_files(self, devices: list[pki.DeviceName], crl: bytes | None) -> bool:
        """Write the ACL and (when given) the CRL; True when either changed (reload)."""
        acl = mosquitto_acl(devices, self.bridge_users()).encode()
        changed = False
        for path, data in ((self.files.acl, acl), (self.files.crl, crl)):
            if data is not None and (not path.exists() or path.read_bytes() != data):
                pki.write_public(path, data)
                changed = True
        return changed

    def reload_broker(self, pid_file: Path | None) -> bool:
        """SIGHUP the broker named by ``pid_file``; False when there is none to signal."""
        if pid_file is None:
            return False
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except FileNotFoundError:
            log.info("no broker running yet: it reads the new ACL and CRL when it starts")
            return False
        except (OSError, ValueError) as exc:
            log.warning("could not ask the broker to reload (%s): %s", pid_file, exc)
            return False
        log.info("broker %d reloads its ACL and CRL", pid)
        return True

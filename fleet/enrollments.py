"""Enrollment, renewal and revocation of device certificates: central's device registry.

IT makes a one-time token bound to (device, site, role). The kiosk sends it with a CSR over
HTTPS; central checks the token (known, unused, unexpired, and the CSR names its device),
issues the certificate, marks the token used and the device registered, revokes the device's
earlier certificates (a replaced kiosk's old key must not work), and rewrites the broker's ACL
and CRL. The token string IT copies also carries the SHA-256 pin of the CA, so the kiosk can
trust central's HTTPS before it has anything else (as kubeadm's discovery hash does).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import logging
import secrets
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, Engine, insert, select, update

from biblioedge.fleet.db import device_certs, devices, enrollments
from biblioedge.fleet.identity import CentralIdentity
from biblioedge.fleet.repo import register_in
from biblioedge.protocol import utc_now, valid_id
from biblioedge.provisioning import pki
from biblioedge.provisioning.enroll import RENEW_DOMAIN

log = logging.getLogger("biblioedge.fleet.enrollments")


class EnrollmentError(ValueError):
    """Refused; ``reason`` is the slug the API answers and the metric counts."""

    def __init__(self, reason: str, detail: str, status: int = 403) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = status


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str]:
    """``id.secret[.pin]`` -> (id, secret)."""
    parts = token.strip().split(".")
    if len(parts) not in (2, 3) or not all(parts[:2]) or len(token) > 200:
        raise EnrollmentError("malformed_token", "not an enrollment token", 401)
    return parts[0], parts[1]


class Registry:
    def __init__(
        self,
        engine: Engine,
        identity: CentralIdentity,
        *,
        cert_days: int,
        broker_url: str,
        central_url: str,
        pid_file: Path | None,
    ) -> None:
        self.engine = engine
        self.identity = identity
        self.cert_days = cert_days
        self.broker_url = broker_url
        self.central_url = central_url
        self.pid_file = pid_file

    # -- tokens --------------------------------------------------------------------------

    def create_token(
        self, device_id: str, site: str, role: str, created_by: str, ttl_s: int
    ) -> dict[str, Any]:
        if not (valid_id(device_id) and valid_id(site)) or device_id == pki.BRIDGE_ID:
            raise EnrollmentError("invalid_device", "device and site must be lowercase ids", 400)
        if role not in pki.ROLES:
            raise EnrollmentError("invalid_role", f"role must be one of {pki.ROLES}", 400)
        now = utc_now()
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(24)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(devices.c.site).where(devices.c.device_id == device_id)
            ).first()
            if row is not None and row.site != site:
                raise EnrollmentError(
                    "site_mismatch", f"{device_id} is registered at site {row.site}", 409
                )
            conn.execute(
                insert(enrollments).values(
                    token_id=token_id,
                    secret_hash=_hash(secret),
                    device_id=device_id,
                    site=site,
                    role=role,
                    created_by=created_by,
                    created_at=now,
                    expires_at=now + dt.timedelta(seconds=ttl_s),
                )
            )
        return {
            "token": f"{token_id}.{secret}.{self.identity.ca_pin}",
            "token_id": token_id,
            "device_id": device_id,
            "site": site,
            "role": role,
            "expires_at": now + dt.timedelta(seconds=ttl_s),
        }

    # -- enrollment ----------------------------------------------------------------------

    @staticmethod
    def _usable(conn: Connection, token: str, now: dt.datetime) -> Any:
        token_id, secret = split_token(token)
        row = conn.execute(select(enrollments).where(enrollments.c.token_id == token_id)).first()
        if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
            raise EnrollmentError("unknown_token", "no such enrollment token", 401)
        if row.used_at is not None:
            raise EnrollmentError("used_token", "this enrollment token was already used")
        if row.expires_at <= now:
            raise EnrollmentError("expired_token", "this enrollment token has expired")
        return row

    def claim(self, token: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            row = self._usable(conn, token, utc_now())
        return {"device_id": row.device_id, "site": row.site, "role": row.role}

    def enroll(self, token: str, csr_pem: bytes) -> dict[str, Any]:
        now = utc_now()
        with self.engine.begin() as conn:
            row = self._usable(conn, token, now)
            token_id = row.token_id
            name = pki.DeviceName(row.device_id, row.site, row.role)
            try:
                cert = self.identity.ca.issue_device(csr_pem, name, self.cert_days)
            except pki.PkiError as exc:
                reason = "mismatched_csr" if "token is for" in str(exc) else "malformed_csr"
                raise EnrollmentError(reason, str(exc), 400) from exc
            claimed = conn.execute(  # two kiosks racing with one token: only one wins
                update(enrollments)
                .where(enrollments.c.token_id == token_id)
                .where(enrollments.c.used_at.is_(None))
                .values(used_at=now)
            )
            if claimed.rowcount != 1:
                raise EnrollmentError("used_token", "this enrollment token was already used")
            # a re-enrolled kiosk (new hardware, wiped disk): its old keys stop working
            conn.execute(
                update(device_certs)
                .where(device_certs.c.device_id == name.device_id)
                .where(device_certs.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            self._store_cert(conn, name, cert)
            try:
                register_in(conn, name.device_id, name.site, name.role)
            except ValueError as exc:  # moved to another site since the token was made
                raise EnrollmentError("site_mismatch", str(exc), 409) from exc
        log.info("enrolled %s (%s at %s)", name.device_id, name.role, name.site)
        self.sync_broker()
        return self._bundle(name, cert)

    def renew(self, cert_pem: bytes, csr_pem: bytes, signature_b64: str) -> dict[str, Any]:
        """A new certificate for a kiosk that proves it holds its current, valid key."""
        try:
            current = pki.load_cert(cert_pem)
            self.identity.ca.verify(current)
            name = pki.device_name(current)
        except pki.PkiError as exc:
            raise EnrollmentError("bad_certificate", str(exc), 401) from exc
        pub = current.public_key()
        try:
            sig = base64.b64decode(signature_b64, validate=True)
            if not isinstance(pub, ec.EllipticCurvePublicKey):
                raise ValueError("not an EC key")
            pub.verify(sig, RENEW_DOMAIN + csr_pem, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, ValueError, InvalidSignature) as exc:
            raise EnrollmentError(
                "bad_proof", "the renewal is not signed by that key", 401
            ) from exc
        serial = format(current.serial_number, "x")
        with self.engine.begin() as conn:
            row = conn.execute(
                select(device_certs.c.revoked_at).where(device_certs.c.serial == serial)
            ).first()
            if row is None or row.revoked_at is not None:
                raise EnrollmentError("revoked", f"{name.device_id}'s certificate is revoked")
            try:
                cert = self.identity.ca.issue_device(csr_pem, name, self.cert_days)
            except pki.PkiError as exc:
                raise EnrollmentError("malformed_csr", str(exc), 400) from exc
            self._store_cert(conn, name, cert)
        log.info("renewed the certificate of %s", name.device_id)
        self.sync_broker()
        return self._bundle(name, cert)

    def revoke(self, device_id: str) -> int:
        """Revoke every certificate of a device; it is cut off at the broker at once."""
        now = utc_now()
        with self.engine.begin() as conn:
            res = conn.execute(
                update(device_certs)
                .where(device_certs.c.device_id == device_id)
                .where(device_certs.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            conn.execute(
                update(devices).where(devices.c.device_id == device_id).values(registered=False)
            )
        n = int(res.rowcount)
        log.warning("revoked %d certificate(s) of %s", n, device_id)
        self.sync_broker()
        return n

    # -- the broker's view ---------------------------------------------------------------

    def active(self, conn: Connection | None = None) -> list[tuple[pki.DeviceName, str]]:
        """Devices with a valid certificate, and its PEM (the newest one)."""
        now = utc_now()
        stmt = (
            select(device_certs)
            .where(device_certs.c.revoked_at.is_(None))
            .where(device_certs.c.not_after > now)
            .order_by(device_certs.c.issued_at)
        )
        if conn is None:
            with self.engine.connect() as c:
                rows = list(c.execute(stmt))
        else:
            rows = list(conn.execute(stmt))
        newest = {r.device_id: r for r in rows}
        return [(pki.DeviceName(r.device_id, r.site, r.role), r.pem) for r in newest.values()]

    def sync_broker(self) -> None:
        """Rewrite the ACL, and the CRL when its revocations changed or it is past half its
        life, from the registry; ask the broker to reload when either changed.

        The CRL is re-signed well before ``next_update``: with CRL checking on, OpenSSL
        refuses every client certificate once the CRL has expired. Central calls this at
        start and every few hours (``refresh_loop``)."""
        with self.engine.connect() as conn:
            revoked = [
                (int(r.serial, 16), r.revoked_at)
                for r in conn.execute(
                    select(device_certs.c.serial, device_certs.c.revoked_at).where(
                        device_certs.c.revoked_at.is_not(None)
                    )
                )
            ]
            active = [name for name, _ in self.active(conn)]
        crl = None if self._crl_current({s for s, _ in revoked}) else self.identity.ca.crl(revoked)
        if self.identity.write_broker_files(active, crl):
            self.identity.reload_broker(self.pid_file)

    def _crl_current(self, serials: set[int]) -> bool:
        path = self.identity.files.crl
        try:
            crl = x509.load_pem_x509_crl(path.read_bytes())
        except (OSError, ValueError):
            return False
        if crl.next_update_utc is None or {c.serial_number for c in crl} != serials:
            return False
        left = crl.next_update_utc - utc_now()
        return left > (crl.next_update_utc - crl.last_update_utc) / 2

    async def refresh_loop(self, every_s: float = 6 * 3600) -> None:
        """Keep the CRL fresh (and the ACL free of expired certificates) while central runs."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await asyncio.to_thread(self.sync_broker)
            except Exception:  # logged, retried next round; never takes central down
                log.exception("refreshing the broker's CRL and ACL failed")

    # -- helpers ---------------------------------------------------------------------------

    def _store_cert(self, conn: Connection, name: pki.DeviceName, cert: Any) -> None:
        conn.execute(
            insert(device_certs).values(
                serial=format(cert.serial_number, "x"),
                device_id=name.device_id,
                site=name.site,
                role=name.role,
                pem=pki.cert_pem(cert).decode(),
                issued_at=utc_now(),
                not_after=cert.not_valid_after_utc,
            )
        )

    def _bundle(self, name: pki.DeviceName, cert: Any) -> dict[str, Any]:
        return {
            "device_id": name.device_id,
            "site": name.site,
            "role": name.role,
            "certificate": pki.cert_pem(cert).decode(),
            "ca": self.identity.ca_pem.decode(),
            "not_after": cert.not_valid_after_utc,
            "broker_url": self.broker_url,
            "central_url": self.central_url,
            "control_keys": self.identity.signer.public_keys,
            "seal_key": self.identity.seal_public,
        }

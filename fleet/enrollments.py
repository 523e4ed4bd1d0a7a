"""Enrollment, renewal and revocation of device certificates: central's device registry.

IT makes a one-time token bound to (device, site, role). The kiosk sends it with a CSR over
HTTPS; central checks the token (known, unused, unexpired, and the CSR names its device),
issues the certificate, marks the token used and the device registered, revokes the device's
earlier certificates (a replaced kiosk's old key must not work), and rewrites the broker's ACL
and CRL. The token string IT copies also carries the SHA-256 pin of the CA, so the kiosk can
trust central's HTTPS before it has anything else (as kubeadm's discovery hash does).

Renewal cannot move a device onto someone else's key: it certifies the key the current
certificate already holds. A request for a new key (a re-key) is refused and kept as a pending
request that IT approves or refuses (``rekey_requests``); until then the kiosk stays on its old
key. A renewal schedules the revocation of the certificate it replaces after
``renew_grace_s`` (time to reconnect with the new one), and a device renews at most once per
``renew_min_interval_s`` unless its certificate has passed two thirds of its life: a stolen key
cannot mint certificate after certificate.
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
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection

from biblioedge.fleet import authz
from biblioedge.fleet.identity import CentralIdentity
from biblioedge.fleet.replicas import DirLock
from biblioedge.fleet.repo import register_in
from biblioedge.fleet.store import Db, Transactions
from biblioedge.fleet.store import enrollments as store
from biblioedge.protocol import utc_now, valid_id
from biblioedge.provisioning import pki
from biblioedge.provisioning.coalesce import Coalesced
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
        db: Db,
        identity: CentralIdentity,
        *,
        cert_days: int,
        broker_url: str,
        central_url: str,
        pid_file: Path | None,
        renew_grace_s: float = 600.0,
        renew_min_interval_s: float = 86400.0,
        cases: authz.SecurityCases | None = None,
    ) -> None:
        #: attention cases for IT (shared with the ingest's, so once per device and reason)
        self.cases = cases or authz.SecurityCases()
        self.renew_grace = dt.timedelta(seconds=renew_grace_s)
        self.renew_min_interval = dt.timedelta(seconds=renew_min_interval_s)
        self.tx = Transactions(db)
        self.identity = identity
        self.cert_days = cert_days
        self.broker_url = broker_url
        self.central_url = central_url
        self.pid_file = pid_file
        #: one ACL rewrite at a time (two at once raced on the file, and the later write could
        #: be the older registry), and one for a burst of enrollments: each call still returns
        #: only after a rewrite that read its change (provisioning/coalesce.py); across
        #: replicas sharing the data directory, under a lock on it
        self._broker_files_lock = DirLock(identity.files.root / "broker-files.lock")
        self._broker_files = Coalesced(self._sync_broker_now)

    # -- tokens --------------------------------------------------------------------------

    def create_token(
        self, device_id: str, site: str, role: str, created_by: str, ttl_s: int
    ) -> dict[str, Any]:
        if not (valid_id(device_id) and valid_id(site)) or pki.is_bridge_name(device_id):
            raise EnrollmentError("invalid_device", "device and site must be lowercase ids", 400)
        if role not in pki.ROLES:
            raise EnrollmentError("invalid_role", f"role must be one of {pki.ROLES}", 400)
        now = utc_now()
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(24)
        with self.tx.begin() as conn:
            registered = store.registered_site(conn, device_id)
            if registered is not None and registered != site:
                raise EnrollmentError(
                    "site_mismatch", f"{device_id} is registered at site {registered}", 409
                )
            store.add_token(
                conn,
                token_id=token_id,
                secret_hash=_hash(secret),
                device_id=device_id,
                site=site,
                role=role,
                created_by=created_by,
                created_at=now,
                expires_at=now + dt.timedelta(seconds=ttl_s),
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
        row = store.token(conn, token_id)
        if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
            raise EnrollmentError("unknown_token", "no such enrollment token", 401)
        if row.used_at is not None:
            raise EnrollmentError("used_token", "this enrollment token was already used")
        if row.expires_at <= now:
            raise EnrollmentError("expired_token", "this enrollment token has expired")
        return row

    def claim(self, token: str) -> dict[str, str]:
        with self.tx.connect() as conn:
            row = self._usable(conn, token, utc_now())
        return {"device_id": row.device_id, "site": row.site, "role": row.role}

    def enroll(self, token: str, csr_pem: bytes) -> dict[str, Any]:
        now = utc_now()
        with self.tx.begin() as conn:
            row = self._usable(conn, token, now)
            token_id = row.token_id
            name = pki.DeviceName(row.device_id, row.site, row.role)
            try:
                cert = self.identity.ca.issue_device(csr_pem, name, self.cert_days)
            except pki.PkiError as exc:
                reason = "mismatched_csr" if "token is for" in str(exc) else "malformed_csr"
                raise EnrollmentError(reason, str(exc), 400) from exc
            if not store.use_token(conn, token_id, now):  # two kiosks racing: only one wins
                raise EnrollmentError("used_token", "this enrollment token was already used")
            # a re-enrolled kiosk (new hardware, wiped disk): its old keys stop working
            store.revoke_certs(conn, name.device_id, now)
            self._store_cert(conn, name, cert)
            store.close_rekeys(conn, name.device_id, "re-enrollment", now)
            try:
                register_in(conn, name.device_id, name.site, name.role)
            except ValueError as exc:  # moved to another site since the token was made
                raise EnrollmentError("site_mismatch", str(exc), 409) from exc
        log.info("enrolled %s (%s at %s)", name.device_id, name.role, name.site)
        self.sync_broker()
        return self._bundle(name, cert)

    def renew(self, cert_pem: bytes, csr_pem: bytes, signature_b64: str) -> dict[str, Any]:
        """A new certificate for the key a kiosk proves it holds with its current certificate.

        Same key: issued (at most once per ``renew_min_interval`` unless the certificate is in
        the last third of its life), the replaced one revoked after ``renew_grace``. A new key:
        refused as ``rekey_pending`` and kept for IT, or the certificate IT approved for it."""
        current, name = self._proven(cert_pem, csr_pem, signature_b64)
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise EnrollmentError(
                "malformed_csr", f"not a PEM certificate request: {exc}", 400
            ) from exc
        serial = format(current.serial_number, "x")
        now = utc_now()
        refusal: EnrollmentError | None = None
        cert: Any = None
        with self.tx.begin() as conn:
            row = store.cert(conn, serial)
            if row is None:
                raise EnrollmentError("revoked", f"{name.device_id}'s certificate is revoked")
            if _key_sha256(csr.public_key()) != _key_sha256(current.public_key()):
                cert, refusal = self._rekey(conn, name, row, csr_pem, csr, now)
            else:
                cert = self._renew_same_key(conn, name, row, current, csr_pem, now)
        if refusal is not None:  # raised after the commit: the pending request is kept
            raise refusal
        log.info("renewed the certificate of %s", name.device_id)
        self.sync_broker()
        return self._bundle(name, cert)

    def _proven(self, cert_pem: bytes, csr_pem: bytes, signature_b64: str) -> tuple[Any, Any]:
        """The current certificate (from this CA) and its name, if the CSR is signed by its key."""
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
        return current, name

    def _renew_same_key(
        self,
        conn: Connection,
        name: pki.DeviceName,
        row: Any,
        current: x509.Certificate,
        csr_pem: bytes,
        now: dt.datetime,
    ) -> x509.Certificate:
        newest = store.newest_cert(conn, name.device_id, now)
        if newest is not None and newest.serial != row.serial:
            # the kiosk asks again with the certificate it renewed: its answer was lost (even
            # after the grace: the answer is a certificate for the key it proved it holds)
            if newest.renewed_from == row.serial and _pem_key(newest.pem) == _key_sha256(
                current.public_key()
            ):
                return pki.load_cert(newest.pem.encode())
            if not _revoked(row, now):
                raise EnrollmentError(
                    "superseded", f"a newer certificate of {name.device_id} replaced this one", 409
                )
        if _revoked(row, now):
            raise EnrollmentError("revoked", f"{name.device_id}'s certificate is revoked")
        last = store.last_renewal(conn, name.device_id)
        if last is not None and now - last < self.renew_min_interval and not _late(current, now):
            raise EnrollmentError(
                "too_soon",
                f"{name.device_id} renewed at {last:%Y-%m-%d %H:%M} UTC; the next renewal is "
                f"accepted from {last + self.renew_min_interval:%Y-%m-%d %H:%M} UTC",
                429,
            )
        try:
            cert = self.identity.ca.issue_device(csr_pem, name, self.cert_days)
        except pki.PkiError as exc:
            raise EnrollmentError("malformed_csr", str(exc), 400) from exc
        new_serial = format(cert.serial_number, "x")
        # every other certificate of the device goes after the grace (the kiosk reconnects
        # with the new one meanwhile); without a grace, at once
        store.retire_others(conn, name.device_id, new_serial, now, self.renew_grace)
        self._store_cert(conn, name, cert, renewed_from=row.serial)
        if not _late(current, now):
            # an honest agent renews at two thirds of the life: earlier is someone else with
            # its key (allowed, as the rate limit allows it, but IT is told)
            detail = (
                f"{name.device_id} renewed certificate {row.serial} before two thirds of its "
                "life; the agent never does: check for a stolen key"
            )
            case = authz.SecurityCase(name.device_id, name.site, "early_renewal", detail)
            if self.cases.raise_in(conn, case, name.role, now):
                log.warning(
                    "early renewal of %s's certificate: attention case raised", name.device_id
                )
        return cert

    def _rekey(
        self,
        conn: Connection,
        name: pki.DeviceName,
        row: Any,
        csr_pem: bytes,
        csr: x509.CertificateSigningRequest,
        now: dt.datetime,
    ) -> tuple[Any, EnrollmentError | None]:
        """(the certificate IT approved for this key, None) or (None, why it is refused)."""
        key = _key_sha256(csr.public_key())
        mine = store.rekey_for_key(conn, name.device_id, key)
        if mine is not None and mine.state == "approved" and mine.cert_serial:
            issued = store.cert(conn, mine.cert_serial)
            if issued is not None and not _revoked(issued, now):
                return pki.load_cert(issued.pem.encode()), None
        if _revoked(row, now):
            raise EnrollmentError("revoked", f"{name.device_id}'s certificate is revoked")
        if mine is not None and mine.state == "refused":
            return None, EnrollmentError(
                "rekey_refused", f"IT refused the new key of {name.device_id}: keep the old one"
            )
        pending = store.pending_rekey(conn, name.device_id)
        if pending is None:
            try:
                self.identity.ca.issue_device(csr_pem, name, 1)  # checks the CSR names the device
            except pki.PkiError as exc:
                raise EnrollmentError("malformed_csr", str(exc), 400) from exc
            request_id = secrets.token_hex(8)
            store.add_rekey(
                conn,
                request_id=request_id,
                device_id=name.device_id,
                site=name.site,
                role=name.role,
                current_serial=row.serial,
                key_sha256=key,
                csr=csr_pem.decode(),
                requested_at=now,
                state="pending",
            )
            log.warning(
                "%s asks for a new key (re-key request %s): refused until IT approves it",
                name.device_id,
                request_id,
            )
        elif pending.key_sha256 != key:
            return None, EnrollmentError(
                "rekey_pending",
                f"another new key of {name.device_id} awaits IT's decision "
                f"(request {pending.request_id})",
            )
        else:
            request_id = pending.request_id
        return None, EnrollmentError(
            "rekey_pending",
            f"a new key needs IT's approval (re-key request {request_id}); "
            f"{name.device_id} keeps its current key until then",
        )

    # -- re-key requests (IT) ----------------------------------------------------------------

    def rekey_requests(self, state: str | None = None) -> list[dict[str, Any]]:
        with self.tx.connect() as conn:
            rows = store.rekeys(conn, state, 500)
        return [_rekey_out(r) for r in rows]

    def decide_rekey(self, request_id: str, approve: bool, by: str) -> dict[str, Any]:
        """IT's answer. Approving issues the certificate for the new key and revokes the
        device's other certificates at once; refusing leaves the device on its old key."""
        now = utc_now()
        with self.tx.begin() as conn:
            req = store.rekey(conn, request_id)
            if req is None:
                raise EnrollmentError("unknown_request", f"no re-key request {request_id}", 404)
            if req.state != "pending":
                raise EnrollmentError("decided", f"request {request_id} is {req.state}", 409)
            values: dict[str, Any] = {"decided_by": by, "decided_at": now}
            if approve:
                asking = store.cert(conn, req.current_serial)
                # the device must still be enrolled on the certificate that asked, or on its
                # renewal; revoked by IT (or re-enrolled) since, the request is void
                replaced = asking is not None and asking.revoke_at is not None
                if asking is None or (_revoked(asking, now) and not replaced):
                    raise EnrollmentError(
                        "revoked", "the certificate that asked has been revoked since", 409
                    )
                if store.newest_cert(conn, req.device_id, now) is None:
                    raise EnrollmentError("revoked", f"{req.device_id} is revoked", 409)
                name = pki.DeviceName(req.device_id, req.site, req.role)
                cert = self.identity.ca.issue_device(req.csr.encode(), name, self.cert_days)
                store.revoke_certs(conn, name.device_id, now)
                self._store_cert(conn, name, cert, renewed_from=req.current_serial)
                values.update(state="approved", cert_serial=format(cert.serial_number, "x"))
            else:
                values.update(state="refused")
            store.decide_rekey(conn, request_id, **values)
            out = store.rekey(conn, request_id)
            assert out is not None  # read back in the same transaction
        log.warning("%s %s the re-key request %s of %s", by, out.state, request_id, out.device_id)
        if approve:
            self.sync_broker()
        return _rekey_out(out)

    def revoke(self, device_id: str) -> int:
        """Revoke every certificate of a device; it is cut off at the broker at once."""
        now = utc_now()
        with self.tx.begin() as conn:
            n = store.revoke_certs(conn, device_id, now)
            store.unregister(conn, device_id)
            store.close_rekeys(conn, device_id, "revocation", now)
        log.warning("revoked %d certificate(s) of %s", n, device_id)
        self.sync_broker()
        return n

    # -- the broker's view ---------------------------------------------------------------

    def active(self, conn: Connection | None = None) -> list[tuple[pki.DeviceName, str]]:
        """Devices with a valid certificate, and its PEM (the newest one)."""
        now = utc_now()
        if conn is None:
            with self.tx.connect() as c:
                rows = store.valid_certs(c, now)
        else:
            rows = store.valid_certs(conn, now)
        newest = {r.device_id: r for r in rows}
        return [(pki.DeviceName(r.device_id, r.site, r.role), r.pem) for r in newest.values()]

    def sync_broker(self) -> None:
        """Rewrite the ACL, and the CRL when its revocations changed or it is past half its
        life, from the registry; ask the broker to reload when either changed.

        The CRL is re-signed well before ``next_update``: with CRL checking on, OpenSSL
        refuses every client certificate once the CRL has expired. Central calls this at
        start and every few hours (``refresh_loop``), and when a replaced certificate's
        grace is over. Calls at once share one rewrite (``Coalesced``)."""
        self._broker_files.request()

    def _sync_broker_now(self) -> None:
        with self._broker_files_lock:  # read what is written, whichever replica writes
            with self.tx.begin() as conn:
                store.revoke_due(conn, utc_now())  # replaced certificates whose grace is over
                revoked = store.revocations(conn)
                active = [name for name, _ in self.active(conn)]
            current = self._crl_current({s for s, _ in revoked})
            crl = None if current else self.identity.ca.crl(revoked)
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

    def revocations_due(self) -> bool:
        """Whether a replaced certificate's grace is over but it is not revoked yet."""
        with self.tx.connect() as conn:
            return store.revocations_due(conn, utc_now())

    async def refresh_loop(self, every_s: float = 6 * 3600) -> None:
        """Keep the CRL fresh (and the ACL free of expired certificates) while central runs,
        and revoke replaced certificates as their grace ends (checked every quarter grace,
        at most every 30 s)."""
        grace = self.renew_grace.total_seconds()
        tick = min(30.0, max(0.5, grace / 4)) if grace else 30.0
        next_full = time.monotonic() + every_s
        while True:
            await asyncio.sleep(min(tick, every_s))
            try:
                if time.monotonic() >= next_full:
                    next_full = time.monotonic() + every_s
                    await asyncio.to_thread(self.sync_broker)
                elif await asyncio.to_thread(self.revocations_due):
                    await asyncio.to_thread(self.sync_broker)
            except Exception:  # logged, retried next round; never takes central down
                log.exception("refreshing the broker's CRL and ACL failed")

    # -- helpers ---------------------------------------------------------------------------

    def _store_cert(
        self, conn: Connection, name: pki.DeviceName, cert: Any, renewed_from: str | None = None
    ) -> None:
        store.add_cert(
            conn,
            renewed_from=renewed_from,
            serial=format(cert.serial_number, "x"),
            device_id=name.device_id,
            site=name.site,
            role=name.role,
            pem=pki.cert_pem(cert).decode(),
            issued_at=utc_now(),
            not_after=cert.not_valid_after_utc,
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


def _key_sha256(key: Any) -> str:
    """SHA-256 of a public key's SubjectPublicKeyInfo: the same key, whatever wraps it."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


def _pem_key(pem: str) -> str:
    return _key_sha256(pki.load_cert(pem.encode()).public_key())


def _revoked(row: Any, now: dt.datetime) -> bool:
    return row.revoked_at is not None or (row.revoke_at is not None and row.revoke_at <= now)


def _late(cert: x509.Certificate, now: dt.datetime) -> bool:
    """Past two thirds of its life: a renewal is due whatever the interval says."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * 2 / 3


def _rekey_out(row: Any) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "device_id": row.device_id,
        "site": row.site,
        "role": row.role,
        "current_serial": row.current_serial,
        "key_sha256": row.key_sha256,
        "requested_at": row.requested_at,
        "state": row.state,
        "decided_by": row.decided_by,
        "decided_at": row.decided_at,
        "cert_serial": row.cert_serial,
    }

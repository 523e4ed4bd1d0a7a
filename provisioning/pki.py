"""The device PKI: central's device CA, kiosk keys and CSRs, certificates and the CRL.

Every kiosk makes its own P-256 key, which never leaves it, and sends a CSR at enrollment.
Central's CA signs a client certificate whose subject CN is the device id (mosquitto takes it
as the user name and the client id) and whose SAN URI names site and role
(``urn:biblioedge:device:{site}:{role}:{device}``), so a certificate states the whole identity
the broker ACL and central need. Central's own MQTT identity (``central-bridge``) and its
HTTPS server certificate come from the same CA. P-256 rather than RSA: a Raspberry Pi signs
and verifies it an order of magnitude faster, and every TLS stack speaks it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from biblioedge.protocol import valid_id

URN_PREFIX = "urn:biblioedge:device:"
#: The client id and certificate CN of central's MQTT bridge; no device may take it.
BRIDGE_ID = "central-bridge"


def is_bridge_name(name: str) -> bool:
    """Central's own MQTT names (``central-bridge``, and ``central-bridge-<id>`` of each
    replica): never a device's, or a kiosk's certificate would read every kiosk's events."""
    return name == BRIDGE_ID or name.startswith(BRIDGE_ID + "-")


ROLES = ("gate", "selfcheck", "desk", "exitgate")


class PkiError(ValueError):
    """A CSR, certificate or key that cannot be used; the message says why."""


@dataclass(frozen=True)
class DeviceName:
    device_id: str
    site: str
    role: str

    @property
    def uri(self) -> str:
        return f"{URN_PREFIX}{self.site}:{self.role}:{self.device_id}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(data: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"not a PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the key is not an EC key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from exc


def write_private(path: Path, data: bytes) -> None:
    """Write a secret 0600 in a 0700 directory, atomically (rename) and durably (fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of this writer's own: two writers of one file must not rename each other's copy
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def spki_sha256(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's public key: the pin an enrollment token carries."""
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def server_names(cert: x509.Certificate) -> set[str]:
    """The DNS names and IP addresses a server certificate is for (lowercase text)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    return names | {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


# -- the kiosk side ----------------------------------------------------------------------


def make_csr(key: ec.EllipticCurvePrivateKey, name: DeviceName) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name.device_id)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(name.uri)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def device_name(cert: x509.Certificate) -> DeviceName:
    """The identity a device certificate states; PkiError if it states none."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise PkiError("the certificate names no site and role") from exc
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    for uri in uris:
        if uri.startswith(URN_PREFIX):
            parts = uri[len(URN_PREFIX) :].split(":")
            if len(parts) == 3 and cns and parts[2] == cns[0].value:
                return DeviceName(device_id=parts[2], site=parts[0], role=parts[1])
    raise PkiError("the certificate names no device identity")


# -- the CA (central) ----------------------------------------------------------------------


class DeviceCA:
    """Central's device CA. The private key is held by the caller (sealed at rest)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def create(cls, name: str = "biblioedge device CA", years: int = 20) -> DeviceCA:
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def _leaf(
        self,
        subject_cn: str,
        public_key: ec.EllipticCurvePublicKey,
        days: int,
        san: list[x509.GeneralName],
        usage: list[x509.ObjectIdentifier],
    ) -> x509.Certificate:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue_device(self, csr_pem: bytes, expected: DeviceName, days: int) -> x509.Certificate:
        """Sign a kiosk's CSR, but only for the identity its enrollment token was made for."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PkiError(f"not a PEM certificate request: {exc}") from exc
        if not csr.is_signature_valid:
            raise PkiError("the request's signature does not verify")
        pub = csr.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(
            pub.curve, ec.SECP256R1
        ):
            raise PkiError("the request's key must be EC P-256")
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(cns) != 1 or cns[0].value != expected.device_id:
            named = cns[0].value if cns else "nothing"
            raise PkiError(f"the request names {named!r}, the token is for {expected.device_id!r}")
        if not (valid_id(expected.device_id) and valid_id(expected.site)):
            raise PkiError("device and site must be lowercase ids")
        if expected.role not in ROLES or is_bridge_name(expected.device_id):
            raise PkiError(f"cannot issue a device certificate for {expected.device_id}")
        return self._leaf(
            expected.device_id,
            pub,
            days,
            [x509.UniformResourceIdentifier(expected.uri)],
            [ExtendedKeyUsageOID.CLIENT_AUTH],
        )

    def issue_client(
        self, cn: str, public_key: ec.EllipticCurvePublicKey, days: int
    ) -> x509.Certificate:
        """A client certificate for central's own MQTT bridge."""
        return self._leaf(
            cn,
            public_key,
            days,
            [x509.UniformResourceIdentifier(f"urn:biblioedge:central:{cn}")],
            [ExtendedKeyUsageOID.CLIENT_AUTH],
        )

    def issue_server(
        self, public_key: ec.EllipticCurvePublicKey, hosts: list[str], days: int
    ) -> x509.Certificate:
        """A TLS server certificate (central's HTTPS API, the broker's listener)."""
        san: list[x509.GeneralName] = []
        for host in hosts:
            try:
                san.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                san.append(x509.DNSName(host))
        return self._leaf(hosts[0], public_key, days, san, [ExtendedKeyUsageOID.SERVER_AUTH])

    def crl(self, revoked: list[tuple[int, dt.datetime]], days: int = 30) -> bytes:
        """The CRL (PEM) listing ``(serial, revoked_at)``; re-signed whenever it changes."""
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=days))
        )
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def verify(self, cert: x509.Certificate) -> None:
        """PkiError unless ``cert`` was signed by this CA and is within its validity."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise PkiError("the certificate was not issued by this CA") from exc
        now = _now()
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            raise PkiError("the certificate is expired or not yet valid")

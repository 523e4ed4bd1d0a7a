"""Enrollment and certificate renewal, kiosk side.

``biblioedge enroll --central URL --token T`` makes the kiosk's key (it never leaves the
kiosk), learns from central which device the token is for, sends a CSR for exactly that
device, and writes ``<data>/identity/{device.key,device.crt,ca.crt}`` and the agent config
(broker URL, central's public keys). Until it holds the CA, the kiosk trusts central's HTTPS
only through the CA pin inside the token.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import ssl
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from biblioedge.provisioning import pki
from biblioedge.settings import deep_merge, to_toml

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("biblioedge.provisioning.enroll")

RENEW_DOMAIN = b"biblioedge-renew-v1\x00"
Progress = Callable[[str], None]


class EnrollError(RuntimeError):
    """Enrollment or renewal failed; the message says why in words IT can act on."""


@dataclass(frozen=True)
class IdentityFiles:
    root: Path

    @property
    def key(self) -> Path:
        return self.root / "device.key"

    @property
    def cert(self) -> Path:
        return self.root / "device.crt"

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    @property
    def pending_key(self) -> Path:
        """A new key asked for (a re-key) and not yet approved by IT: kept until it is
        approved (then it becomes device.key) or refused (then it goes)."""
        return self.root / "device.key.pending"

    def present(self) -> bool:
        self.recover()
        return self.key.exists() and self.cert.exists() and self.ca.exists()

    def recover(self) -> None:
        """Finish a renewal cut between its two renames (key first, then certificate)."""
        for new, final in (
            (self.root / "device.key.new", self.key),
            (self.root / "device.crt.new", self.cert),
        ):
            if new.exists():
                new.replace(final)

    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def parse_token(token: str) -> tuple[str, str]:
    """(``id.secret`` for central, the CA pin)."""
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts) or len(parts[2]) != 64:
        raise EnrollError("that is not an enrollment token (biblioedge provision token makes one)")
    return f"{parts[0]}.{parts[1]}", parts[2].lower()


def _refusal(resp: httpx.Response) -> EnrollError:
    try:
        doc = resp.json()
        detail, reason = doc.get("detail"), doc.get("reason")
    except (ValueError, AttributeError):
        detail = reason = None
    if reason:
        return EnrollError(f"central refused: {reason}: {detail}")
    return EnrollError(f"central answered {resp.status_code}: {detail or resp.text[:200]}")


def fetch_ca(central: str, pin: str, timeout: float = 10.0) -> bytes:
    """Central's CA, accepted only if its key matches the pin the token carries."""
    import httpx  # only enrollment and renewal speak HTTP: the running agent never loads it

    try:
        # verify=False is safe here: what arrives is checked against the pin before any use
        resp = httpx.get(f"{central}/api/v1/enroll/ca", verify=False, timeout=timeout)  # noqa: S501
    except httpx.HTTPError as exc:
        raise EnrollError(f"cannot reach central at {central}: {exc}") from exc
    if resp.status_code != 200:
        raise _refusal(resp)
    try:
        ca = pki.load_cert(resp.content)
    except pki.PkiError as exc:
        raise EnrollError(f"central sent no CA certificate: {exc}") from exc
    if pki.spki_sha256(ca) != pin:
        raise EnrollError(
            "central's CA does not match the token's pin: wrong central, or someone in between"
        )
    return resp.content


def enroll(
    central: str,
    token: str,
    data_dir: Path,
    config_path: Path | None = None,
    progress: Progress = lambda _msg: None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Enroll this kiosk; returns central's answer (device, site, role, not_after, …)."""
    import httpx

    central = central.rstrip("/")
    secret, pin = parse_token(token)
    progress("checking central's identity against the token")
    ca_pem = fetch_ca(central, pin, timeout)
    files = IdentityFiles(data_dir / "identity")
    files.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki.write_public(files.ca, ca_pem)
    with httpx.Client(
        base_url=f"{central}/api/v1",
        verify=ssl.create_default_context(cafile=files.ca),
        timeout=timeout,
    ) as api:
        resp = api.post("/enroll/claim", json={"token": secret})
        if resp.status_code != 200:
            raise _refusal(resp)
        claim = resp.json()
        name = pki.DeviceName(claim["device_id"], claim["site"], claim["role"])
        progress(f"making the key of {name.device_id} ({name.role} at {name.site})")
        key = pki.new_key()
        resp = api.post("/enroll", json={"token": secret, "csr": pki.make_csr(key, name).decode()})
        if resp.status_code != 200:
            raise _refusal(resp)
        bundle: dict[str, Any] = resp.json()
    pki.write_private(files.key, pki.key_pem(key))
    pki.write_public(files.cert, bundle["certificate"].encode())
    root = fetch_release_root(central, ssl.create_default_context(cafile=files.ca), timeout)
    if root is not None:
        progress("trusting central's release root (TUF root version 1)")
        (data_dir / "tuf").mkdir(parents=True, exist_ok=True)
        pki.write_public(data_dir / "tuf" / "root.json", root)
    config_path = config_path or data_dir / "agent.toml"
    write_agent_config(config_path, data_dir, bundle)
    progress(f"enrolled: identity in {files.root}, config in {config_path}")
    return bundle


def fetch_release_root(
    central: str, context: ssl.SSLContext, timeout: float = 10.0
) -> bytes | None:
    """The first TUF root central serves, over HTTPS checked against central's CA: the
    anchor the kiosk verifies every release with (later roots must be signed by it). None
    while IT has not set up release signing yet; the agent asks again when it needs one."""
    import httpx

    try:
        resp = httpx.get(
            f"{central.rstrip('/')}/tuf/metadata/1.root.json", verify=context, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise EnrollError(f"cannot reach central at {central}: {exc}") from exc
    return resp.content if resp.status_code == 200 else None


def write_agent_config(path: Path, data_dir: Path, bundle: dict[str, Any]) -> None:
    """Merge the enrollment into the agent's TOML (comments in an existing file are lost)."""
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise EnrollError(f"{path} is not valid TOML: {exc}") from exc
    doc = deep_merge(
        doc,
        {
            "device_id": bundle["device_id"],
            "site": bundle["site"],
            "role": bundle["role"],
            "data_dir": str(data_dir),
            "broker": {"url": bundle["broker_url"]},
            "security": {
                "central_url": bundle["central_url"],
                "control_keys": bundle["control_keys"],
                "seal_key": bundle["seal_key"],
            },
        },
    )
    pki.write_public(path, to_toml(doc).encode())


def cert_lifetime(files: IdentityFiles) -> tuple[dt.datetime, dt.datetime]:
    cert = pki.load_cert(files.cert.read_bytes())
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def due_for_renewal(
    files: IdentityFiles, after: float = 2 / 3, now: dt.datetime | None = None
) -> bool:
    """Due once ``after`` of the lifetime has passed (two thirds: a year's is renewed four
    months ahead)."""
    start, end = cert_lifetime(files)
    now = now or dt.datetime.now(dt.UTC)
    return now >= start + (end - start) * after


def renew(
    central: str, files: IdentityFiles, timeout: float = 10.0, rekey: bool = False
) -> dt.datetime:
    """A new certificate for the current key, proven with the current certificate; returns
    the new expiry.

    Central certifies only the key the kiosk already holds. With ``rekey`` it asks for a new
    one (made once and kept in ``device.key.pending``), which waits for IT's approval: this
    raises ``EnrollError`` saying so until then, and a plain renewal meanwhile keeps the old
    key working. Files are replaced atomically, so a failed renewal leaves the working
    identity in place."""
    import httpx

    current = files.cert.read_bytes()
    old_key = pki.load_key(files.key.read_bytes())
    name = pki.device_name(pki.load_cert(current))
    if rekey and not files.pending_key.exists():
        pki.write_private(files.pending_key, pki.key_pem(pki.new_key()))
    new_key = pki.load_key(files.pending_key.read_bytes()) if rekey else None
    csr = pki.make_csr(new_key or old_key, name)
    proof = old_key.sign(RENEW_DOMAIN + csr, ec.ECDSA(hashes.SHA256()))
    try:
        resp = httpx.post(
            f"{central.rstrip('/')}/api/v1/renewals",
            json={
                "certificate": current.decode(),
                "csr": csr.decode(),
                "proof": base64.b64encode(proof).decode(),
            },
            verify=ssl.create_default_context(cafile=files.ca),
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise EnrollError(f"cannot reach central at {central}: {exc}") from exc
    if resp.status_code != 200:
        refusal = _refusal(resp)
        if new_key is not None and "rekey_refused" in str(refusal):
            files.pending_key.unlink(missing_ok=True)  # IT said no: stay on the old key
        raise refusal
    cert = pki.load_cert(resp.json()["certificate"].encode())
    if cert.public_key() != (new_key or old_key).public_key():
        raise EnrollError("central answered with a certificate for another key: not installed")
    if new_key is not None:
        pki.write_private(files.key.with_name("device.key.new"), pki.key_pem(new_key))
    pki.write_public(files.cert.with_name("device.crt.new"), pki.cert_pem(cert))
    files.recover()
    if new_key is not None:
        files.pending_key.unlink(missing_ok=True)
    return cert.not_valid_after_utc

"""Passive authentication (ICAO 9303-11, 5.1): is what the chip gave us what the state signed?

EF.SOD is a CMS SignedData (wrapped in tag 77) whose content is the LDSSecurityObject: a hash
algorithm and the hash of every data group. Three checks, each reported on its own:

1. **hashes**: every data group read hashes to its value in the SOD;
2. **signature**: the SignerInfo's message digest is the hash of the LDSSecurityObject and
   its signature verifies with the document signer (DS) certificate carried in the SOD;
3. **chain**: the DS certificate was issued by a CSCA in the configured trust store (and is
   within its validity), else ``unknown_csca`` when no trust store knows the issuer.

A hash mismatch or a bad signature means the data may be forged: the desk blocks registration
unless a librarian overrides, and the override is logged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from asn1crypto import cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from biblioedge.drivers.cccd.lds import LdsError, unwrap

DG_NUMBERS = {"DG1": 1, "DG2": 2, "DG13": 13, "DG14": 14, "DG15": 15}
_HASHES = {
    "sha1": hashlib.sha1,
    "sha224": hashlib.sha224,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}
_CRYPTO_HASHES: dict[str, Any] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class DataGroupHash(core.Sequence):  # type: ignore[misc]
    _fields = [("data_group_number", core.Integer), ("data_group_hash_value", core.OctetString)]


class DataGroupHashValues(core.SequenceOf):  # type: ignore[misc]
    _child_spec = DataGroupHash


class LDSSecurityObject(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("version", core.Integer),
        ("hash_algorithm", cms.DigestAlgorithm),
        ("data_group_hash_values", DataGroupHashValues),
    ]


Outcome = Literal["ok", "mismatch", "missing", "bad", "unknown_csca", "expired", "not_checked"]


@dataclass
class PassiveAuth:
    hashes: dict[str, Outcome] = field(default_factory=dict)
    signature: Outcome = "not_checked"
    chain: Outcome = "not_checked"
    signer: str = ""
    detail: str = ""

    @property
    def forgery_suspected(self) -> bool:
        return "mismatch" in self.hashes.values() or self.signature == "bad" or self.chain == "bad"

    @property
    def verified(self) -> bool:
        return (
            bool(self.hashes)
            and all(v == "ok" for v in self.hashes.values())
            and self.signature == "ok"
            and self.chain == "ok"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "hashes": self.hashes,
            "signature": self.signature,
            "chain": self.chain,
            "signer": self.signer,
            "forgery_suspected": self.forgery_suspected,
            "verified": self.verified,
            "detail": self.detail,
        }


def _verify(public_key: Any, signature: bytes, data: bytes, hash_name: str, algo: str) -> None:
    h = _CRYPTO_HASHES[hash_name]()
    if isinstance(public_key, rsa.RSAPublicKey):
        pad: Any = (
            padding.PSS(padding.MGF1(h), padding.PSS.AUTO)
            if algo == "rsassa_pss"
            else padding.PKCS1v15()
        )
        public_key.verify(signature, data, pad, h)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(h))
    else:
        raise InvalidSignature(f"unsupported key type {type(public_key).__name__}")


def passive_authentication(
    sod: bytes,
    files: dict[str, bytes],
    csca: list[x509.Certificate] | None = None,
    now: datetime | None = None,
) -> PassiveAuth:
    result = PassiveAuth()
    try:
        info = cms.ContentInfo.load(unwrap(sod, 0x77, "SOD"))
        signed = info["content"]
        # asn1crypto parses lazily: a field never read is never checked. Read the whole
        # structure once, so that damage outside what the signature covers (the version,
        # the digest algorithm set) is refused rather than silently skipped.
        _ = info.native
        if signed["version"].native not in ("v1", "v3"):
            raise ValueError(f"SignedData version {signed['version'].native!r}")
        encap = signed["encap_content_info"]
        econtent = bytes(encap["content"].native)  # the LDSSecurityObject's DER
        lds = LDSSecurityObject.load(econtent)
        hash_name = lds["hash_algorithm"]["algorithm"].native
        expected = {
            int(i["data_group_number"].native): bytes(i["data_group_hash_value"].native)
            for i in lds["data_group_hash_values"]
        }
    except (LdsError, ValueError, KeyError, TypeError) as exc:
        result.detail = f"SOD unreadable: {exc}"
        result.signature = result.chain = "bad"
        return result
    if hash_name not in _HASHES:
        result.detail = f"unsupported hash {hash_name}"
        return result
    for name, number in DG_NUMBERS.items():
        if name not in files:
            continue
        if number not in expected:
            result.hashes[name] = "missing"
            continue
        ok = _HASHES[hash_name](files[name]).digest() == expected[number]
        result.hashes[name] = "ok" if ok else "mismatch"
    # -- signature ------------------------------------------------------------------------
    try:
        signer_info = signed["signer_infos"][0]
        certs = [c.chosen for c in signed["certificates"]]
        if not certs:
            raise ValueError("no document signer certificate in the SOD")
        ds = x509.load_der_x509_certificate(certs[0].dump())
        result.signer = ds.subject.rfc4514_string()
        attrs = signer_info["signed_attrs"]
        digest_algo = signer_info["digest_algorithm"]["algorithm"].native
        digest = next(a["values"][0].native for a in attrs if a["type"].native == "message_digest")
        if _HASHES[digest_algo](econtent).digest() != digest:
            raise InvalidSignature("message digest does not match the security object")
        sig_algo = signer_info["signature_algorithm"].signature_algo
        # the signature covers the attributes DER-encoded as a SET (tag 31), not as [0]
        signed_bytes = b"\x31" + attrs.dump()[1:]
        _verify(
            ds.public_key(), signer_info["signature"].native, signed_bytes, digest_algo, sig_algo
        )
        result.signature = "ok"
    except (InvalidSignature, ValueError, KeyError, IndexError, StopIteration) as exc:
        result.signature = "bad"
        result.detail = f"signature: {exc}"
        return result
    # -- chain ----------------------------------------------------------------------------
    now = now or datetime.now(UTC)
    issuers = [c for c in (csca or []) if c.subject == ds.issuer]
    if not issuers:
        result.chain = "unknown_csca"
        return result
    for issuer in issuers:
        try:
            ds.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            continue
        within = ds.not_valid_before_utc <= now <= ds.not_valid_after_utc
        result.chain = "ok" if within else "expired"
        return result
    result.chain = "bad"
    result.detail = "DS certificate not signed by the CSCA that bears its issuer name"
    return result

"""A wallet pass of the library card (Apple's ``.pkpass``), only where the library configures
its pass-signing certificate (``[prereg] wallet_*``).

A ``.pkpass`` is a zip: ``pass.json`` (the card: her name, number, expiry and the QR with the
same signed token as the printed card), an icon, ``manifest.json`` (the SHA-1 of every file,
as the format requires) and ``signature``: a detached PKCS #7 signature of the manifest by the
library's Pass Type ID certificate, with Apple's intermediate (WWDR) certificate included.
The phone checks that chain; central only signs, with cryptography's PKCS #7 builder (no
hand-rolled crypto). Without a certificate no pass is offered: the card page and its image
work on any phone.

The pass is made when her phone asks for it, from the card her link opens: central keeps no
token to make it from otherwise (fleet/phonecard.py).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from biblioedge.fleet.phonecard import PhoneCard


class WalletError(ValueError):
    """The configured certificate, key or chain cannot sign passes."""


@dataclass(frozen=True)
class WalletSigner:
    pass_type: str
    team: str
    organization: str
    cert: x509.Certificate
    key: Any
    chain: list[x509.Certificate]

    @classmethod
    def load(
        cls, pass_type: str, team: str, organization: str, cert: Path, key: Path, chain: Path
    ) -> WalletSigner:
        try:
            certificate = x509.load_pem_x509_certificate(cert.read_bytes())
            private = serialization.load_pem_private_key(key.read_bytes(), password=None)
            intermediates = x509.load_pem_x509_certificates(chain.read_bytes())
        except (OSError, ValueError) as exc:
            raise WalletError(f"wallet pass signing files: {exc}") from exc
        return cls(pass_type, team, organization, certificate, private, intermediates)

    def make(self, card: PhoneCard, lang: str = "vi") -> bytes:
        """The ``.pkpass`` file of ``card``."""
        vi = lang == "vi"
        doc = {
            "formatVersion": 1,
            "passTypeIdentifier": self.pass_type,
            "teamIdentifier": self.team,
            "serialNumber": card.jti or card.patron_id,
            "organizationName": self.organization,
            "description": "Thẻ bạn đọc" if vi else "Library card",
            "generic": {
                "primaryFields": [
                    {"key": "name", "label": "Họ tên" if vi else "Name", "value": card.name}
                ],
                "secondaryFields": [
                    {
                        "key": "patron",
                        "label": "Số thẻ" if vi else "Card number",
                        "value": card.patron_id,
                    },
                    {
                        "key": "expires",
                        "label": "Hết hạn" if vi else "Expires",
                        "value": card.expires_at,
                    },
                ],
            },
            "barcodes": [
                {
                    "format": "PKBarcodeFormatQR",
                    "message": card.token,
                    "messageEncoding": "iso-8859-1",
                }
            ],
        }
        files = {"pass.json": orjson.dumps(doc), "icon.png": _icon(), "icon@2x.png": _icon(58)}
        manifest = orjson.dumps({n: hashlib.sha1(b).hexdigest() for n, b in files.items()})  # noqa: S324 - the format's own choice
        builder = pkcs7.PKCS7SignatureBuilder().set_data(manifest)
        builder = builder.add_signer(self.cert, self.key, hashes.SHA256())
        for extra in self.chain:
            builder = builder.add_certificate(extra)
        signature = builder.sign(
            serialization.Encoding.DER,
            [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
        )
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in {**files, "manifest.json": manifest, "signature": signature}.items():
                z.writestr(name, data)
        return out.getvalue()


def _icon(size: int = 29) -> bytes:
    """A plain square in the library's blue (a pass needs an icon; the library may want its
    logo here: not configurable yet)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), (20, 69, 107)).save(out, "PNG")
    return out.getvalue()

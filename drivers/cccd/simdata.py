"""A simulated citizen for the chip simulator: data groups and an SOD signed by a test CSCA.

The CSCA and document signer here are throwaway test keys (EC P-256), generated per citizen
unless handed in, and never trusted by default: a desk must be configured with this CSCA to
see ``chain: ok``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from biblioedge.drivers.cccd.chip import FILES
from biblioedge.drivers.cccd.lds import build_dg13
from biblioedge.drivers.cccd.mrz import check_digit
from biblioedge.drivers.cccd.pa import DG_NUMBERS, LDSSecurityObject
from biblioedge.drivers.cccd.sm import tlv

LDS_OID = "2.23.136.1.1.1"


@dataclass
class TestPki:
    csca_key: ec.EllipticCurvePrivateKey
    csca: x509.Certificate
    ds_key: ec.EllipticCurvePrivateKey
    ds: x509.Certificate


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_pki(now: datetime | None = None, csca_name: str = "Test CSCA VN") -> TestPki:
    now = now or datetime.now(UTC)
    csca_key = ec.generate_private_key(ec.SECP256R1())
    csca = (
        x509.CertificateBuilder()
        .subject_name(_name(csca_name))
        .issuer_name(_name(csca_name))
        .public_key(csca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(csca_key, hashes.SHA256())
    )
    ds_key = ec.generate_private_key(ec.SECP256R1())
    ds = (
        x509.CertificateBuilder()
        .subject_name(_name("Test Document Signer"))
        .issuer_name(csca.subject)
        .public_key(ds_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(csca_key, hashes.SHA256())
    )
    return TestPki(csca_key, csca, ds_key, ds)


def build_sod(files: dict[str, bytes], pki: TestPki) -> bytes:
    lds = LDSSecurityObject(
        {
            "version": 0,
            "hash_algorithm": {"algorithm": "sha256"},
            "data_group_hash_values": [
                {
                    "data_group_number": n,
                    "data_group_hash_value": hashlib.sha256(files[name]).digest(),
                }
                for name, n in DG_NUMBERS.items()
                if name in files
            ],
        }
    )
    econtent = lds.dump()
    attrs = cms.CMSAttributes(
        [
            {"type": "content_type", "values": [LDS_OID]},
            {"type": "message_digest", "values": [hashlib.sha256(econtent).digest()]},
        ]
    )
    signature = pki.ds_key.sign(attrs.dump(), ec.ECDSA(hashes.SHA256()))
    cert = asn1_x509.Certificate.load(pki.ds.public_bytes(serialization.Encoding.DER))
    signer = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": {
                        "issuer": cert.issuer,
                        "serial_number": cert.serial_number,
                    }
                }
            ),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": signature,
        }
    )
    signed = cms.SignedData(
        {
            "version": "v3",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {"content_type": LDS_OID, "content": econtent},
            "certificates": [cert],
            "signer_infos": [signer],
        }
    )
    return tlv(0x77, cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


@dataclass
class Citizen:
    id_number: str
    full_name: str
    mrz_name: str  # SURNAME<<GIVEN<NAMES
    born: date
    expires: date
    gender: str  # "Nam" | "Nữ"
    photo_jpeg: bytes

    def mrz(self) -> str:
        number = self.id_number[-9:]
        dob, doe = self.born.strftime("%y%m%d"), self.expires.strftime("%y%m%d")
        l1 = "IDVNM" + number + check_digit(number) + self.id_number.ljust(15, "<")
        l2 = (
            dob
            + check_digit(dob)
            + ("F" if self.gender == "Nữ" else "M")
            + doe
            + check_digit(doe)
            + "VNM"
            + "<" * 11
        )
        l2 += check_digit(l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29])
        return l1 + l2 + self.mrz_name.ljust(30, "<")[:30]

    @property
    def can(self) -> str:
        return self.id_number[-6:]

    def qr(self, issued: date, address: str = "Số 1 Tràng Tiền, Hà Nội") -> str:
        """The payload of the card's QR (``issued`` should derive ``expires`` by the rules)."""
        return "|".join(
            [
                self.id_number,
                "",
                self.full_name,
                self.born.strftime("%d%m%Y"),
                self.gender,
                address,
                issued.strftime("%d%m%Y"),
            ]
        )

    def mrz_information(self) -> str:
        from biblioedge.drivers.cccd.mrz import bac_mrz_information

        return bac_mrz_information(
            self.id_number[-9:], self.born.strftime("%y%m%d"), self.expires.strftime("%y%m%d")
        )

    def files(self, pki: TestPki, extra_dg13: dict[str, str] | None = None) -> dict[str, bytes]:
        mrz = self.mrz().encode()
        dg13 = {
            "id_number": self.id_number,
            "full_name": self.full_name,
            "date_of_birth": self.born.strftime("%d/%m/%Y"),
            "gender": self.gender,
            "nationality": "Việt Nam",
            "ethnicity": "Kinh",
            "religion": "Không",
            "place_of_origin": "Hoàn Kiếm, Hà Nội",
            "place_of_residence": "Số 1 Tràng Tiền, Hà Nội",
            "identifying_marks": "Nốt ruồi trên mép trái",
            "expiry_date": self.expires.strftime("%d/%m/%Y"),
            **(extra_dg13 or {}),
        }
        out = {
            "COM": tlv(0x60, b"\x5f\x01\x040107\x5f\x36\x06040000" + tlv(0x5C, b"\x61\x75\x6d")),
            "DG1": tlv(0x61, b"\x5f\x1f" + bytes([len(mrz)]) + mrz),
            # DG2: face info (7F61 > 7F60 > 5F2E biometric data block) with the JPEG inside
            "DG2": tlv(
                0x75,
                b"\x7f\x61"
                + _len(len(self.photo_jpeg) + 8)
                + b"\x02\x01\x01\x5f\x2e"
                + _len(len(self.photo_jpeg))
                + self.photo_jpeg,
            ),
            "DG13": build_dg13(dg13, father="Nguyễn Văn Ba", mother="Lê Thị Tư"),
        }
        out["SOD"] = build_sod(out, pki)
        return out


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82, n >> 8, n & 0xFF])


def chip_files(files: dict[str, bytes]) -> dict[int, bytes]:
    return {FILES[name]: data for name, data in files.items()}


def demo_citizen(photo_jpeg: bytes) -> tuple[Citizen, str]:
    """The demo's citizen and the QR on her card (keys derive from it: issued 2021, age 31,
    so the card expires at 40)."""
    citizen = Citizen(
        "001190012345",
        "Nguyễn Thị Bình",
        "NGUYEN<<THI<BINH",
        date(1990, 3, 15),
        date(2030, 3, 15),
        "Nữ",
        photo_jpeg,
    )
    return citizen, citizen.qr(date(2021, 5, 20))

"""One call for the desk: read a CCCD chip, parse what it holds, check it is genuine.

Keys come from the MRZ information, or from the card's QR: the document number and date of
birth are on it, the expiry is derived (see ``qr.expiry_candidates``) and at most three
candidates are tried, in order, each with a fresh challenge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from biblioedge.drivers.cccd.chip import (
    CardRemoved,
    ChipRead,
    ChipReader,
    PaceRefused,
    Progress,
    WrongKeys,
)
from biblioedge.drivers.cccd.errors import CccdError
from biblioedge.drivers.cccd.lds import dg2_image, parse_dg1, parse_dg13
from biblioedge.drivers.cccd.mrz import TD1, bac_mrz_information, parse_td1
from biblioedge.drivers.cccd.pa import PassiveAuth, passive_authentication
from biblioedge.drivers.cccd.qr import CccdQr, expiry_candidates

MAX_KEY_TRIES = 3


@dataclass
class CardData:
    mrz: TD1
    personal: dict[str, str]
    photo: bytes = field(repr=False)
    photo_format: str
    passive_auth: PassiveAuth
    read: ChipRead = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """What the desk shows and logs: no image bytes, no raw data groups."""
        return {
            "id_number": self.mrz.id_number or self.personal.get("id_number", ""),
            "personal": self.personal,
            "photo": {"format": self.photo_format, "bytes": len(self.photo)},
            "passive_authentication": self.passive_auth.as_dict(),
            "seconds": round(self.read.seconds, 3),
            "access": self.read.access,
            "apdus": self.read.apdus,
            "files": {k: len(v) for k, v in self.read.files.items()},
        }


def keys_from_qr(qr: CccdQr) -> list[str]:
    if qr.issue_date is None:
        return []
    out = []
    for expiry in expiry_candidates(qr.date_of_birth, qr.issue_date)[:MAX_KEY_TRIES]:
        if expiry is None:
            continue  # a card that does not expire: its MRZ carries no usable date to try
        out.append(
            bac_mrz_information(
                qr.document_number, qr.date_of_birth.strftime("%y%m%d"), expiry.strftime("%y%m%d")
            )
        )
    return out


def read_card(
    mrz_informations: list[str],
    *,
    can: str | None = None,
    reader: str | None = None,
    csca: list[x509.Certificate] | None = None,
    progress: Progress | None = None,
) -> CardData:
    """PACE with the CAN first when given (the chip decides whether it offers it), then BAC
    with up to three MRZ candidates. Each refusal costs the chip one try, so no more."""
    last: WrongKeys | None = None
    result: ChipRead | None = None
    if can is not None:
        try:
            first = mrz_informations[0] if mrz_informations else None
            result = ChipReader(reader, progress).read(first, can=can)
        except PaceRefused as exc:
            last = exc  # BAC keeps its own counter: the MRZ data may still open the chip
        except WrongKeys as exc:
            last = exc
            mrz_informations = mrz_informations[1:]  # the first candidate was just refused
    if result is None:
        for info in mrz_informations[:MAX_KEY_TRIES]:
            try:
                result = ChipReader(reader, progress).read(info)
                break
            except WrongKeys as exc:
                last = exc
    if result is None:
        raise last or WrongKeys("check the card: no keys to try")
    files = result.files
    mrz_text = parse_dg1(files["DG1"])
    mrz = parse_td1("\n".join(mrz_text[i : i + 30] for i in (0, 30, 60)))
    personal = parse_dg13(files["DG13"]).fields if "DG13" in files else {}
    photo, kind = dg2_image(files["DG2"])
    pa = (
        passive_authentication(files["SOD"], files, csca)
        if "SOD" in files
        else PassiveAuth(detail="no EF.SOD on the chip")
    )
    return CardData(mrz, personal, photo, kind, pa, result)


class PcscChip:
    """The desk's chip source: card presence and a whole read, keys from the card's QR."""

    def __init__(self, reader: str | None = None, csca: list[x509.Certificate] | None = None):
        self.reader = reader
        self.csca = csca

    def present(self) -> bool:
        """A card on the reader? DeviceUnavailable when there is no reader or no pcscd."""
        probe = ChipReader(self.reader)
        try:
            probe.connect()
        except CardRemoved:
            return False
        probe.close()
        return True

    def read(self, qr: CccdQr, progress: Progress) -> CardData:
        keys = keys_from_qr(qr)  # for BAC; PACE needs only the CAN (last six ID digits)
        return read_card(keys, can=qr.can, reader=self.reader, csca=self.csca, progress=progress)


def load_trust_store(folder: Path | None) -> list[x509.Certificate]:
    """Every PEM or DER certificate in ``folder``; a file that is neither is an error."""
    if folder is None:
        return []
    if not folder.is_dir():
        raise CccdError(f"csca_dir {folder} is not a directory of CSCA certificates")
    out = []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                out += x509.load_pem_x509_certificates(data)
            else:
                out.append(x509.load_der_x509_certificate(data))
        except ValueError as exc:
            raise CccdError(f"{path}: not a PEM or DER certificate") from exc
    return out

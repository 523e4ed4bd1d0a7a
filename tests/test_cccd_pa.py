from datetime import UTC, date, datetime, timedelta

import cv2
import numpy as np
from samples import astronaut

from biblioedge.drivers.cccd.lds import dg2_image, parse_dg1, parse_dg13
from biblioedge.drivers.cccd.mrz import parse_td1
from biblioedge.drivers.cccd.pa import passive_authentication
from biblioedge.drivers.cccd.simdata import Citizen, make_pki


def citizen() -> Citizen:
    ok, jpeg = cv2.imencode(
        ".jpg", cv2.resize(astronaut()[30:330, 130:330], (240, 320)), [cv2.IMWRITE_JPEG_QUALITY, 80]
    )
    assert ok
    return Citizen(
        "001090012345",
        "Nguyễn Văn An",
        "NGUYEN<<VAN<AN",
        date(1990, 3, 15),
        date(2030, 3, 15),
        "Nam",
        jpeg.tobytes(),
    )


def test_simulated_citizen_is_consistent_and_verifies() -> None:
    pki = make_pki()
    c = citizen()
    files = c.files(pki)
    td1 = parse_td1("\n".join(parse_dg1(files["DG1"])[i : i + 30] for i in (0, 30, 60)))
    assert td1.id_number == c.id_number and td1.mrz_information() == c.mrz_information()
    assert parse_dg13(files["DG13"]).fields["full_name"] == "Nguyễn Văn An"
    image, kind = dg2_image(files["DG2"])
    assert (
        kind == "jpeg"
        and cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR) is not None
    )
    assert 8_000 < len(files["DG2"]) < 40_000
    pa = passive_authentication(files["SOD"], files, [pki.csca])
    assert pa.verified and pa.hashes == {"DG1": "ok", "DG2": "ok", "DG13": "ok"}
    assert pa.signer.startswith("CN=Test Document Signer")


def test_forgery_unknown_csca_and_broken_sod_are_reported_per_step() -> None:
    pki = make_pki()
    files = citizen().files(pki)
    forged = dict(
        files, DG13=files["DG13"].replace("Nguyễn Văn An".encode(), "Nguyễn Văn Em".encode())
    )
    pa = passive_authentication(files["SOD"], forged, [pki.csca])
    assert pa.hashes["DG13"] == "mismatch" and pa.forgery_suspected and not pa.verified
    other = make_pki(csca_name="Some Other CSCA")
    pa = passive_authentication(files["SOD"], files, [other.csca])
    assert pa.signature == "ok" and pa.chain == "unknown_csca"
    assert not pa.verified and not pa.forgery_suspected
    # a CSCA bearing the issuer's name but not the key that signed: a broken chain
    impostor = make_pki()
    assert passive_authentication(files["SOD"], files, [impostor.csca]).chain == "bad"
    assert passive_authentication(files["SOD"], files, []).chain == "unknown_csca"
    # an SOD re-signed by someone else's document signer claiming the same issuer
    rogue = make_pki()
    resigned = citizen().files(rogue)["SOD"]
    pa = passive_authentication(
        resigned, {k: v for k, v in files.items() if k != "DG2"}, [pki.csca]
    )
    assert pa.chain == "bad" and not pa.verified
    broken = bytearray(files["SOD"])
    broken[-10] ^= 0xFF
    assert passive_authentication(bytes(broken), files, [pki.csca]).signature == "bad"
    assert passive_authentication(b"\x77\x03abc", files, [pki.csca]).signature == "bad"
    later = datetime.now(UTC) + timedelta(days=400)
    assert passive_authentication(files["SOD"], files, [pki.csca], now=later).chain == "expired"


def test_damage_outside_the_signed_part_of_the_sod_is_refused() -> None:
    """Found by the fuzz test: the SignedData version's length byte raised from 1 to 3
    swallows the start of the digest algorithm set. Nothing the signature covers changed,
    and asn1crypto, parsing lazily, never looked at either field: the SOD verified."""
    pki = make_pki()
    files = citizen().files(pki)
    sod = bytearray(files["SOD"])
    at = bytes(sod).index(b"\x02\x01\x03\x31")  # version INTEGER 3, then the SET OF
    sod[at + 1] = 3
    pa = passive_authentication(bytes(sod), files, [pki.csca])
    assert not pa.verified and pa.signature == "bad" and "unreadable" in pa.detail
    assert passive_authentication(files["SOD"], files, [pki.csca]).verified

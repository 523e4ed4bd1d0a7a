from datetime import date

import pytest

from biblioedge.drivers.cccd.bac import bac_keys
from biblioedge.drivers.cccd.errors import CccdError, NotACccdQr
from biblioedge.drivers.cccd.mrz import (
    bac_mrz_information,
    check_digit,
    parse_mrz_information,
    parse_td1,
)
from biblioedge.drivers.cccd.qr import check_id, expiry_candidates, parse_qr

QR = "001090012345|123456789|Nguyễn Văn An|15031990|Nam|Số 1 Tràng Tiền, Hoàn Kiếm, Hà Nội|20052021"


def test_qr_fields_and_derived_values() -> None:
    q = parse_qr(QR)
    assert q.id_number == "001090012345" and q.old_id == "123456789" and q.province == "Hà Nội"
    assert q.full_name == "Nguyễn Văn An" and q.gender == "Nam"
    assert q.date_of_birth == date(1990, 3, 15) and q.issue_date == date(2021, 5, 20)
    assert q.document_number == "090012345" and q.can == "012345"


@pytest.mark.parametrize(
    "variant",
    [
        "\ufeff" + QR + "\r\n",
        QR + "||",
        QR.replace("|123456789|", "|"),  # six fields: no old CMND
        QR.replace("Nguyễn", "Nguye\u0302\u0303n"),  # decomposed text
        QR.encode("utf-8"),
    ],
)
def test_known_qr_variants_are_tolerated(variant: str | bytes) -> None:
    q = parse_qr(variant)
    assert q.id_number == "001090012345" and q.full_name == "Nguyễn Văn An"


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (QR.replace("001090", "999090"), "not a province code"),
        (QR.replace("001090", "001190"), "does not match gender"),  # 1 = female 1900s
        (QR.replace("001090", "001290"), "born 2000s"),
        (QR.replace("001090", "001091"), "year of birth"),
        (QR.replace("15031990", "31021990"), "not a date"),
        (QR.replace("|Nam|", "|Khác|"), "neither Nam nor Nữ"),
        (QR.replace("20052021", "20051980"), "before the date of birth"),
        (QR.replace("123456789", "12345"), "old ID"),
    ],
)
def test_bad_cccd_qr_says_why(payload: str, match: str) -> None:
    with pytest.raises(CccdError, match=match):
        parse_qr(payload)


@pytest.mark.parametrize(
    "payload", ["https://thuvien.gov.vn", "BE1.abc.def", "", "a|b|c", "x" * 5000, b"\xff\xfe"]
)
def test_a_qr_that_is_not_a_cccd(payload: str | bytes) -> None:
    with pytest.raises(NotACccdQr):
        parse_qr(payload)


def test_id_check_for_a_woman_born_2005() -> None:
    assert check_id("079305001234", date(2005, 1, 2), "Nữ") == "Hồ Chí Minh"


def test_expiry_follows_the_renewal_ages() -> None:
    born = date(1990, 3, 15)
    assert expiry_candidates(born, date(2021, 5, 20))[0] == date(2030, 3, 15)  # age 31 -> 40
    assert expiry_candidates(born, date(2012, 6, 1))[0] == date(2015, 3, 15)  # age 22 -> 25
    assert expiry_candidates(born, date(2013, 6, 1))[0] == date(
        2030, 3, 15
    )  # within 2 y of 25 -> 40
    assert expiry_candidates(born, date(2049, 1, 1))[0] is None  # within 2 y of 60: no expiry
    assert expiry_candidates(date(1950, 1, 1), date(2021, 1, 1)) == [None]
    cands = expiry_candidates(born, date(2013, 6, 1))
    assert date(2015, 3, 15) in cands and None in cands  # fallbacks for BAC to try


def test_check_digits_and_icao_bac_vector() -> None:
    # ICAO 9303-11 worked example
    assert check_digit("L898902C<") == "3" and check_digit("690806") == "1"
    info = bac_mrz_information("L898902C", "690806", "940623")
    assert info == "L898902C<369080619406236"
    keys = bac_keys(info)
    assert keys.k_seed.hex().upper() == "239AB9CB282DAF66231DC5A4DF6BFBAE"
    assert keys.k_enc.hex().upper() == "AB94FDECF2674FDFB9B391F85D7F76F2"
    assert keys.k_mac.hex().upper() == "7962D9ECE03D1ACD4C76089DCE131543"
    assert parse_mrz_information(info) == ("L898902C<", "690806", "940623")
    with pytest.raises(CccdError, match="check digit"):
        parse_mrz_information("L898902C<469080619406236")


def make_td1(
    number: str = "090012345",
    id12: str = "001090012345",
    dob: str = "900315",
    doe: str = "300315",
    sex: str = "M",
) -> str:
    l1 = "IDVNM" + number + check_digit(number) + id12.ljust(15, "<")
    l2_head = dob + check_digit(dob) + sex + doe + check_digit(doe) + "VNM" + "<" * 11
    composite = check_digit(l1[5:30] + l2_head[0:7] + l2_head[8:15] + l2_head[18:29])
    l3 = "NGUYEN<<VAN<AN".ljust(30, "<")
    return "\n".join([l1, l2_head + composite, l3])


def test_td1_parse_and_every_check_digit() -> None:
    td1 = parse_td1(make_td1())
    assert td1.document_number == "090012345" and td1.id_number == "001090012345"
    assert (td1.surname, td1.given_names, td1.sex) == ("NGUYEN", "VAN AN", "M")
    assert td1.mrz_information() == bac_mrz_information("090012345", "900315", "300315")
    good = make_td1()
    for pos, what in [
        (14, "document number"),
        (37, "date of birth"),
        (45, "date of expiry"),
        (60, "composite"),
    ]:
        broken = list(good)
        broken[pos] = "0" if good[pos] != "0" else "1"
        with pytest.raises(CccdError, match=what):
            parse_td1("".join(broken))
    with pytest.raises(CccdError, match="3 lines of 30"):
        parse_td1("IDVNM123")
    with pytest.raises(CccdError, match="offset"):
        parse_td1(good.replace("NGUYEN", "NGUYỄN"))


def test_cccd_commands_json_and_refusals() -> None:
    import json
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "biblioedge", "cccd", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    keys = json.loads(run("bac-keys", "--mrz-info", "L898902C<369080619406236", "--json").stdout)
    assert keys["k_enc"] == "ab94fdecf2674fdfb9b391f85d7f76f2"
    qr = json.loads(run("parse-qr", QR, "--json").stdout)
    assert qr["full_name"] == "Nguyễn Văn An" and qr["expiry_candidates"][0] == "2030-03-15"
    mrz = json.loads(run("parse-mrz", make_td1(), "--json").stdout)
    assert mrz["id_number"] == "001090012345" and len(mrz["mrz_information"]) == 24
    for args, reason in [
        (("parse-qr", "https://x.vn"), "not a CCCD QR"),
        (("bac-keys", "--mrz-info", "L898902C<469080619406236"), "check digit"),
    ]:
        out = run(*args)
        assert out.returncode == 2 and reason in out.stderr and "Traceback" not in out.stderr

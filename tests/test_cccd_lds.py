import pytest

from biblioedge.drivers.cccd.lds import (
    LdsError,
    build_dg13,
    dg2_image,
    parse_dg1,
    parse_dg13,
    read_ber,
)
from biblioedge.drivers.cccd.sm import tlv

FIELDS = {
    "id_number": "001090012345",
    "full_name": "Nguyễn Văn An",
    "date_of_birth": "15/03/1990",
    "gender": "Nam",
    "nationality": "Việt Nam",
    "ethnicity": "Kinh",
    "religion": "Không",
    "place_of_origin": "Hoàn Kiếm, Hà Nội",
    "place_of_residence": "Số 1 Tràng Tiền, Hà Nội",
    "identifying_marks": "Nốt ruồi cách 2cm trên mép trái",
    "issue_date": "20/05/2021",
    "expiry_date": "15/03/2030",
    "spouse_name": "Trần Thị Bình",
    "old_id_number": "123456789",
}


def test_dg13_named_fields_parents_and_unknown_indices() -> None:
    data = build_dg13(FIELDS, father="Nguyễn Văn Ba", mother="Lê Thị Tư")
    dg = parse_dg13(data)
    assert dg.fields == {**FIELDS, "father_name": "Nguyễn Văn Ba", "mother_name": "Lê Thị Tư"}
    # a newer card's extra field is kept, not refused
    extra = tlv(0x30, b"\x02\x01\x10" + tlv(0x0C, b"ABC"))
    body = data[2:] if data[1] < 0x80 else data[4:]
    more = tlv(0x6D, tlv(0x30, read_ber(body, 0, "t")[1] + extra))
    assert parse_dg13(more).extra == {16: "ABC"}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated at offset 0"),
        (b"\x6d\x05\x30\x03", "past the end"),
        (b"\x61\x02\x30\x00", "expected tag 0x6d"),
        (tlv(0x6D, tlv(0x30, tlv(0x30, b"\x04\x01\x01" + tlv(0x0C, b"x")))), "not INTEGER index"),
        (tlv(0x6D, tlv(0x30, tlv(0x30, b"\x02\x01\x02" + tlv(0x04, b"x")))), "expected a string"),
        (tlv(0x6D, tlv(0x30, tlv(0x30, b"\x02\x01\x02" + tlv(0x0C, b"\xff\xfe")))), "not UTF-8"),
        (b"\x6d\x84\x00\x00\x00\x01", "bad length at offset 1"),
    ],
)
def test_malformed_dg13_is_an_error_with_a_place(data: bytes, match: str) -> None:
    with pytest.raises(LdsError, match=match):
        parse_dg13(data)


def test_dg1_and_dg2() -> None:
    mrz = (
        "IDVNM0900123451001090012345<<<9003151M3003150VNM<<<<<<<<<<<6NGUYEN<<VAN<AN<<<<<<<<<<<<<<<<"
    )
    assert parse_dg1(tlv(0x61, b"\x5f\x1f" + bytes([len(mrz)]) + mrz.encode())) == mrz
    with pytest.raises(LdsError, match="no MRZ"):
        parse_dg1(tlv(0x61, tlv(0x04, b"x")))
    jpeg = b"\xff\xd8\xff\xe0rest-of-jpeg"
    assert dg2_image(tlv(0x75, tlv(0x7F, b"\x61" + b"header" + jpeg))) == (
        b"\xff\xd8\xff\xe0rest-of-jpeg",
        "jpeg",
    )
    with pytest.raises(LdsError, match="no JPEG"):
        dg2_image(tlv(0x75, b"nothing"))

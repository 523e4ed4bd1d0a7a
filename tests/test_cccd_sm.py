"""Secure messaging against ICAO 9303-11's worked example (Appendix D)."""

import pytest

from biblioedge.drivers.cccd.bac import bac_keys
from biblioedge.drivers.cccd.errors import CccdError
from biblioedge.drivers.cccd.sm import (
    Apdu,
    BacChallenge,
    SecureMessaging,
    SecureMessagingError,
    external_authenticate_data,
    pad,
    read_tlv,
    session_from_icc,
    unpad,
)

H = bytes.fromhex
KEYS = bac_keys("L898902C<369080619406236")
CH = BacChallenge(
    rnd_ifd=H("781723860C06C226"),
    k_ifd=H("0B795240CB7049B01C19B33E32804F0B"),
    rnd_icc=H("4608F91988702212"),
)
ICC_ANSWER = H("46B9342A41396CD7386BF5803104D7CEDC122B9132139BAF2EEDC94EE178534F2F2D235D074D7449")


def session() -> SecureMessaging:
    return session_from_icc(KEYS.k_enc, KEYS.k_mac, CH, ICC_ANSWER)


def test_mutual_authentication_and_session_keys() -> None:
    data = external_authenticate_data(KEYS.k_enc, KEYS.k_mac, CH)
    assert data.hex().upper() == (
        "72C29C2371CC9BDB65B779B8E8D37B29ECC154AA56A8799FAE2F498F76ED92F25F1448EEA8AD90A7"
    )
    sm = session()
    assert sm.ks_enc.hex().upper() == "979EC13B1CBFE9DCD01AB0FED307EAE5"
    assert sm.ks_mac.hex().upper() == "F1CB1F1FB5ADF208806B89DC579DC1F8"
    assert sm.ssc == 0x887022120C06C226


def test_select_and_read_binary_are_protected_as_in_the_standard() -> None:
    sm = session()
    select = sm.protect(Apdu.parse(H("00A4020C02011E")))
    assert select.hex().upper() == "0CA4020C158709016375432908C044F68E08BF8B92D635FF24F800"
    assert sm.unprotect(H("990290008E08FA855A5D4C50A8ED9000")) == (b"", H("9000"))
    read = sm.protect(Apdu.parse(H("00B0000004")))
    assert read.hex().upper() == "0CB000000D9701048E08ED6705417E96BA5500"
    data, sw = sm.unprotect(H("8709019FF0EC34F9922651990290008E08AD55CC17140B2DED9000"))
    assert data == H("60145F01") and sw == H("9000")


def test_tampered_or_replayed_responses_are_refused() -> None:
    sm = session()
    sm.protect(Apdu.parse(H("00A4020C02011E")))
    with pytest.raises(SecureMessagingError, match="MAC"):
        sm.unprotect(H("990290008E08FA855A5D4C50A8EE9000"))  # one bit off
    sm2 = session()
    sm2.protect(Apdu.parse(H("00A4020C02011E")))
    sm2.protect(Apdu.parse(H("00A4020C02011E")))  # counter moved on: the old answer is stale
    with pytest.raises(SecureMessagingError):
        sm2.unprotect(H("990290008E08FA855A5D4C50A8ED9000"))
    with pytest.raises(SecureMessagingError, match="lacks"):
        session().unprotect(H("99029000") + H("9000"))
    with pytest.raises(SecureMessagingError, match="answer is 40 bytes"):
        session_from_icc(KEYS.k_enc, KEYS.k_mac, CH, ICC_ANSWER[:39])
    bad = bytearray(ICC_ANSWER)
    bad[0] ^= 1
    with pytest.raises(SecureMessagingError, match="does not verify"):
        session_from_icc(KEYS.k_enc, KEYS.k_mac, CH, bytes(bad))


def test_chip_side_mirrors_the_reader() -> None:
    reader, chip = session(), session()
    raw = reader.protect(Apdu(0x00, 0xB0, 0x01, 0x20, le=0xDF))
    cmd = chip.open_command(raw)
    assert (cmd.ins, cmd.p1, cmd.p2, cmd.le) == (0xB0, 0x01, 0x20, 0xDF)
    payload = bytes(range(200))
    assert reader.unprotect(chip.seal_response(payload, H("9000"))) == (payload, H("9000"))
    with pytest.raises(SecureMessagingError, match="not protected"):
        chip.open_command(H("00B0000004"))


def test_padding_and_tlv_errors_name_the_place() -> None:
    assert unpad(pad(b"abc")) == b"abc" and len(pad(b"12345678")) == 16
    with pytest.raises(SecureMessagingError, match="padding"):
        unpad(b"abc\x00\x00")
    with pytest.raises(SecureMessagingError, match="offset 3 runs past the end"):
        read_tlv(H("8701FF870AFF"), 3)
    with pytest.raises(SecureMessagingError, match="length byte 0x83 at offset 1"):
        read_tlv(H("8783010203"), 0)
    assert read_tlv(H("8781020102") + bytes(0x100), 0)[0] == 0x87


def test_extended_apdus_round_trip_and_through_secure_messaging() -> None:
    read = Apdu(0x00, 0xB0, 0x01, 0x00, le=1024, extended=True)
    assert read.to_bytes() == bytes.fromhex("00B00100000400")
    assert Apdu.parse(read.to_bytes()) == read
    put = Apdu(0x00, 0xD6, 0, 0, bytes(300), 0, extended=True)
    assert Apdu.parse(put.to_bytes()) == put and put.expected == 65536
    with pytest.raises(CccdError, match="does not fit"):
        Apdu.parse(bytes.fromhex("00B0000000050102"))
    reader = SecureMessaging(bytes(range(16)), bytes(range(16, 32)), bytes(8))
    chip = SecureMessaging(bytes(range(16)), bytes(range(16, 32)), bytes(8))
    opened = chip.open_command(reader.protect(read))
    assert (opened.ins, opened.le, opened.extended) == (0xB0, 1024, True)
    data = bytes(range(256)) * 4
    assert reader.unprotect(chip.seal_response(data, b"\x90\x00")) == (data, b"\x90\x00")

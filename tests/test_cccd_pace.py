"""PACE against ICAO 9303-11 Appendix G.1 (ECDH generic mapping, brainpoolP256r1, AES-128)."""

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from biblioedge.drivers.cccd.mrz import bac_mrz_information
from biblioedge.drivers.cccd.pace import (
    CURVES,
    PACE_ECDH_GM_AES_128,
    PASSWORD_CAN,
    PASSWORD_MRZ,
    AesSecureMessaging,
    IcPace,
    PaceError,
    PaceInfo,
    PcdPace,
    card_access,
    decode_point,
    encode_point,
    mse_set_at,
    mul,
    parse_card_access,
    password_key,
)
from biblioedge.drivers.cccd.sm import Apdu

H = bytes.fromhex
MRZ = bac_mrz_information("T22000129", "640812", "101031")
SK_MAP_IFD = 0x7F4EF07B9EA82FD78AD689B38D0BC78CF21F249D953BC46F4C6E19259C010F99
SK_MAP_IC = 0x498FF49756F2DC1587840041839A85982BE7761D14715FB091EFA7BCE9058560
SK_DH_IFD = 0xA73FB703AC1436A18E0CFA5ABB3F7BEC7A070E7A6788486BEE230C4A22762595
PK_MAP_IFD = H(
    "047ACF3EFC982EC45565A4B155129EFBC74650DCBFA6362D896FC70262E0C2CC5E"
    "544552DCB6725218799115B55C9BAA6D9F6BC3A9618E70C25AF71777A9C4922D"
)
PK_MAP_IC = H(
    "04824FBA91C9CBE26BEF53A0EBE7342A3BF178CEA9F45DE0B70AA601651FBA3F57"
    "30D8C879AAA9C9F73991E61B58F4D52EB87A0A0C709A49DC63719363CCD13C54"
)
PK_DH_IFD = H(
    "042DB7A64C0355044EC9DF190514C625CBA2CEA48754887122F3A5EF0D5EDD301C"
    "3556F3B3B186DF10B857B58F6A7EB80F20BA5DC7BE1D43D9BF850149FBB36462"
)
PK_DH_IC = H(
    "049E880F842905B8B3181F7AF7CAA9F0EFB743847F44A306D2D28C1D9EC65DF6DB"
    "7764B22277A2EDDC3C265A9F018F9CB852E111B768B326904B59A0193776F094"
)
G_HAT = H(
    "048CED63C91426D4F0EB1435E7CB1D74A46723A0AF21C89634F65A9AE87A9265E2"
    "8C879506743F8611AC33645C5B985C80B5F09A0B83407C1B6A4D857AE76FE522"
)
INFO = PaceInfo(PACE_ECDH_GM_AES_128, 2, 13)


def test_icao_g1_reader_side_byte_for_byte() -> None:
    assert hashlib.sha1(MRZ.encode()).hexdigest().upper() == (
        "7E2D2A41C74EA0B38CD36F863939BFA8E9032AAD"
    )
    assert password_key(MRZ, PASSWORD_MRZ) == H("89DED1B26624EC1E634C1989302849DD")
    pcd = PcdPace(INFO, MRZ, PASSWORD_MRZ, keys=(SK_MAP_IFD, SK_DH_IFD))
    assert pcd.map_key(H("95A3A016522EE98D01E76CB6B98B42C3")) == PK_MAP_IFD
    assert pcd.nonce == 0x3F00C4D39D153F2B2A214A078D899B22
    assert pcd.ephemeral_key(PK_MAP_IC) == PK_DH_IFD
    assert encode_point(pcd.curve, pcd.g_hat) == G_HAT
    assert pcd.token(PK_DH_IC) == H("C2B0BD78D94BA866")
    assert pcd.ks_enc == H("F5F0E35C0D7161EE6724EE513A0D9A7F")
    assert pcd.ks_mac == H("FE251C7858B356B24514B3BD5F4297D1")
    sm = pcd.finish(H("3ABB9674BCE93C08"))
    # the first protected command of the example: SELECT of the eMRTD application
    select = Apdu(0x00, 0xA4, 0x04, 0x0C, H("A0000002471001"))
    assert sm.protect(select) == H(
        "0CA4040C1D871101752F676B09FAC86A87D632749A49C7CC8E08C18BA1FCE707BD9F00"
    )
    assert sm.unprotect(H("990290008E08BEA7B381C494A0799000")) == (b"", H("9000"))
    again = PcdPace(INFO, MRZ, PASSWORD_MRZ, keys=(SK_MAP_IFD, SK_DH_IFD))
    again.map_key(H("95A3A016522EE98D01E76CB6B98B42C3"))
    again.ephemeral_key(PK_MAP_IC)
    again.token(PK_DH_IC)
    with pytest.raises(PaceError, match="token does not verify"):
        again.finish(b"\0" * 8)


def test_icao_g1_chip_mapping_key_and_mse_set_at() -> None:
    c = CURVES[13]
    assert encode_point(c, mul(c, SK_MAP_IC, c.g)) == PK_MAP_IC
    assert mse_set_at(INFO, PASSWORD_MRZ) == H("800A04007F00070202040202830101" + "84010D")
    assert parse_card_access(H("31143012060A04007F0007020204020202010202010D")) == [INFO]
    assert parse_card_access(card_access(12)) == [PaceInfo(PACE_ECDH_GM_AES_128, 2, 12)]


@pytest.mark.parametrize("param", [12, 13])
def test_curve_parameters_agree_with_openssl(param: int) -> None:
    c = CURVES[param]
    named = {12: ec.SECP256R1(), 13: ec.BrainpoolP256R1()}[param]
    key = ec.generate_private_key(named)
    k = key.private_numbers().private_value
    pub = key.public_key().public_numbers()
    assert mul(c, k, c.g) == (pub.x, pub.y)
    assert mul(c, c.n, c.g) is None


@pytest.mark.parametrize("param", [12, 13])
def test_both_sides_agree_with_the_can_and_refuse_a_wrong_one(param: int) -> None:
    info = PaceInfo(PACE_ECDH_GM_AES_128, 2, param)
    chip, reader = IcPace(info, "012345", PASSWORD_CAN), PcdPace(info, "012345", PASSWORD_CAN)
    pk_map = reader.map_key(chip.encrypted_nonce())
    pk_eph = reader.ephemeral_key(chip.map_key(pk_map))
    token = reader.token(chip.ephemeral_key(pk_eph))
    answer = chip.check_token(token)
    assert answer is not None
    sm = reader.finish(answer)
    chip_sm = AesSecureMessaging(chip.ks_enc, chip.ks_mac)
    cmd = chip_sm.open_command(sm.protect(Apdu(0, 0xB0, 0, 0, le=4)))
    assert (cmd.ins, cmd.le) == (0xB0, 4)
    assert sm.unprotect(chip_sm.seal_response(b"\x60\x14abc", H("9000"))) == (
        b"\x60\x14abc",
        H("9000"),
    )
    chip2, wrong = IcPace(info, "012345", PASSWORD_CAN), PcdPace(info, "999999", PASSWORD_CAN)
    pk_map = wrong.map_key(chip2.encrypted_nonce())
    pk_eph = wrong.ephemeral_key(chip2.map_key(pk_map))
    assert chip2.check_token(wrong.token(chip2.ephemeral_key(pk_eph))) is None


def test_bad_points_and_card_access_are_clear_errors() -> None:
    c = CURVES[13]
    bad = bytearray(PK_MAP_IC)
    bad[-1] ^= 1
    with pytest.raises(PaceError, match="not on the curve"):
        decode_point(c, bytes(bad))
    with pytest.raises(PaceError, match="uncompressed"):
        decode_point(c, PK_MAP_IC[:-1])
    with pytest.raises(PaceError, match="offset"):
        parse_card_access(H("3114301206"))
    with pytest.raises(PaceError, match="CAN is six digits"):
        password_key("12345", PASSWORD_CAN)

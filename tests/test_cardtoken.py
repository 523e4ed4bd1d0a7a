import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from biblioedge.cardtoken import (
    CardTokenError,
    CardVerifier,
    issue,
    load_public_key,
    looks_like_card,
    public_key_b64,
)
from biblioedge.drivers.codes import ZxingDecoder

NOW = 1_795_000_000.0
OLD, NEW = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def verifier(revoked: tuple[str, ...] = ()) -> CardVerifier:
    keys = {
        "k2025": load_public_key(public_key_b64(OLD)),
        "k2026": load_public_key(public_key_b64(NEW)),
    }
    return CardVerifier(keys, revoked)


def reason(token: str, v: CardVerifier | None = None, now: float = NOW) -> str:
    with pytest.raises(CardTokenError) as err:
        (v or verifier()).verify(token, now)
    return err.value.reason


def test_issue_and_verify_offline_with_rotated_keys() -> None:
    t_old = issue(OLD, "k2025", "c-1", "P000123", valid_days=365, now=NOW - 100 * 86400)
    t_new = issue(NEW, "k2026", "c-2", "P000456", valid_days=1460, now=NOW)
    assert looks_like_card(t_new) and len(t_new) < 256  # fits a version-11 QR at level M
    assert verifier().verify(t_old, NOW).pid == "P000123"
    claims = verifier().verify(t_new, NOW)
    assert (claims.pid, claims.jti, claims.kid) == ("P000456", "c-2", "k2026")


def test_every_bad_card_has_its_reason() -> None:
    good = issue(NEW, "k2026", "c-9", "P000789", valid_days=30, now=NOW)
    head, sig = good.split(".")[0] + ".", good.split(".")[2]
    forged_claims = (
        base64.urlsafe_b64encode(
            json.dumps(
                {
                    "v": 1,
                    "kid": "k2026",
                    "jti": "c-9",
                    "pid": "P000001",
                    "iat": int(NOW),
                    "exp": int(NOW) + 999,
                }
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    stranger = Ed25519PrivateKey.generate()
    cases = {
        "not_a_card": "https://example.com/qr",
        "malformed": "BE1.only-two",
        "bad_signature": f"{head}{forged_claims}.{sig}",
        "unknown_key": issue(stranger, "k1999", "c-1", "P1", valid_days=1, now=NOW),
        "expired": issue(NEW, "k2026", "c-3", "P1", valid_days=30, now=NOW - 40 * 86400),
        "not_yet_valid": issue(NEW, "k2026", "c-4", "P1", valid_days=30, now=NOW + 3600),
    }
    for want, token in cases.items():
        assert reason(token) == want, want
    assert reason(good, verifier(revoked=("c-9",))) == "revoked"
    # a key id that is known but signed by someone else is a forgery, not an unknown key
    assert reason(issue(stranger, "k2026", "c-5", "P1", valid_days=1, now=NOW)) == "bad_signature"
    for garbage in [
        "BE1.%%%.!!!",
        "BE1." + "A" * 600,
        "BE1.e30.AAAA",
        "BE1..",
        "BE1.bnVsbA.AA",
        "\x00BE1.x.y",
    ]:
        assert reason(garbage) in ("malformed", "not_a_card")


def test_card_qr_roundtrip_through_the_camera_decoder() -> None:
    import io

    import cv2
    import numpy as np
    import segno

    token = issue(NEW, "k2026", "c-77", "P000777", valid_days=30, now=NOW)
    buf = io.BytesIO()
    segno.make(token, error="m").save(buf, kind="png", scale=5, border=4)
    image = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    (code,) = ZxingDecoder().decode(image)
    assert verifier().verify(code.text, NOW).pid == "P000777"


def test_bad_public_key_is_refused() -> None:
    with pytest.raises(CardTokenError, match="bad_key"):
        load_public_key("not-a-key")

from biblioedge.agent.gate.policy import GatePolicy, PatronInfo

PATRONS = {
    "P1": PatronInfo("P1", "Nguyễn Văn An", "active", "2099-01-01"),
    "P2": PatronInfo("P2", "Trần Thị Bình", "blocked", "2099-01-01"),
    "P3": PatronInfo("P3", "Lê Văn Cường", "active", "2001-01-01"),
}


def policy(**kw: float) -> GatePolicy:
    return GatePolicy(PATRONS.get, **kw)  # type: ignore[arg-type]


def test_grant_then_cooldown_then_passback_then_grant_again() -> None:
    p = policy(passback_s=300, cooldown_s=4)
    v = p.decide("P1", "face", now=1000)
    assert v.grant and v.reason == "ok" and v.patron and v.patron.display_name == "Nguyễn Văn An"
    again = p.decide("P1", "face", now=1002)  # still standing there
    assert again.grant and again.repeat
    back = p.decide("P1", "card_qr", now=1100)  # card passed back to a friend
    assert not back.grant and back.reason == "passback" and not back.repeat
    assert p.decide("P1", "face", now=1100 + 301).grant


def test_blocked_expired_and_unknown_are_refused() -> None:
    p = policy()
    assert p.decide("P2", "face", now=1).reason == "blocked"
    assert p.decide("P3", "card_qr", now=1).reason == "expired"
    assert p.decide("P404", "barcode", now=1).reason == "unknown_patron"
    lenient = GatePolicy(lambda _: None, allow_unknown_patrons=True)
    assert lenient.decide("P404", "card_qr", now=1).grant


def test_a_refusal_is_not_repeated_as_a_new_event_within_cooldown() -> None:
    p = policy(cooldown_s=4)
    first = p.decide("P2", "face", now=10)
    second = p.decide("P2", "face", now=12)
    assert not first.repeat and second.repeat and not second.grant
    # the cooldown slides while the reader stays in view
    assert p.decide("P2", "face", now=15.5).repeat
    assert not p.decide("P2", "face", now=20).repeat

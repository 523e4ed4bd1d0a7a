"""Central's API and dashboard against abuse, on a real central (uvicorn, TLS) and httpx:
wrong tokens and sign-ins throttled per address, sessions revoked at sign-out, slow headers
and silent bodies cut off, /metrics behind a token, revoked kiosks shown as revoked, and the
release floor at central and on a kiosk's updater."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tuf_kit import TufServer, tuf_server

from biblioedge.agent.release_client import ReleaseClient
from biblioedge.agent.update_loop import UpdateSettings
from biblioedge.agent.updater import Updater
from biblioedge.cli.release import software_targets
from biblioedge.demo.launch import CentralProcess, wait_until
from biblioedge.fleet.auth import Tokens
from biblioedge.fleet.central import open_identity
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.floor import ReleaseFloor
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.rollouts import RolloutError, RolloutPlan, Rollouts, Selector
from biblioedge.fleet.throttle import FailureThrottle, client_key
from biblioedge.provisioning import pki
from biblioedge.provisioning.bootguard import Layout
from biblioedge.provisioning.broker import BrokerProcess
from biblioedge.provisioning.enroll import parse_token
from biblioedge.provisioning.release_build import native_arch
from biblioedge.provisioning.release_install import build_release
from biblioedge.releases import SoftwareRelease, below_floor

LIMITS = {
    "auth_failures": 5,
    "signin_failures": 3,
    "auth_lockout_s": 600,  # far longer than any test: a lockout never ends mid-assertion
    "header_timeout_s": 2,
    "body_timeout_s": 2,
}


@pytest.fixture
def hardened(tmp_path: Path, broker: BrokerProcess) -> Iterator[CentralProcess]:
    """Central with small failure limits and short HTTP deadlines."""
    proc = CentralProcess(tmp_path / "central", broker, extra={"http": LIMITS})
    broker.start()
    proc.start()
    yield proc
    if proc.alive():
        assert proc.stop() == 0, proc.log_tail()


def _from(central: CentralProcess, address: str, token: str | None = None) -> httpx.Client:
    """A client whose connections come from ``address`` (any of 127.0.0.0/8 reaches central)."""
    verify = ssl.create_default_context(cafile=central.ca_file)
    return httpx.Client(
        base_url=central.url,
        transport=httpx.HTTPTransport(local_address=address, verify=verify),
        headers={"Authorization": f"Bearer {token}"} if token else {},
        timeout=30,
    )


def _token(central: CentralProcess, name: str, role: str) -> str:
    repo = Repo(f"sqlite:///{central.data_dir / 'central.sqlite3'}")
    try:
        return Tokens(repo.engine).create(name, role)[1]
    finally:
        repo.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- failed authentication ----------------------------------------------------------------


@pytest.mark.integration
def test_wrong_tokens_are_throttled_per_address_and_metrics_need_a_token(
    hardened: CentralProcess,
) -> None:
    c = hardened
    with _from(c, "127.0.0.2") as attacker, _from(c, "127.0.0.1", c.token) as user:
        codes = [
            attacker.get("/api/v1/devices", headers=_bearer(f"bet_{i}_guess")).status_code
            for i in range(LIMITS["auth_failures"])
        ]
        assert codes == [401] * (LIMITS["auth_failures"] - 1) + [429]
        # locked out: even the right token is not looked at, nor is a body read
        r = attacker.get("/api/v1/devices", headers=_bearer(c.token))
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        r = attacker.put("/api/v1/releases/floor", content=b"{" * 500_000)
        assert r.status_code == 429 and len(r.content) < 200
        # a real user from another address is not affected, nor is the open health route
        assert user.get("/api/v1/devices").status_code == 200
        assert attacker.get("/api/v1/health").status_code in (200, 503)
        # metrics: nothing for an anonymous caller, everything for any valid token
        with _from(c, "127.0.0.3") as anonymous:
            assert anonymous.get("/metrics").status_code == 401
        scraper = _token(c, "prometheus", "viewer")
        with _from(c, "127.0.0.1", scraper) as prometheus:
            text = prometheus.get("/metrics").text
        assert 'central_api_denied_total{reason="throttled"}' in text
        assert 'central_api_denied_total{reason="unauthenticated"}' in text


def test_failing_enrollment_proofs_are_throttled_like_wrong_tokens(
    hardened: CentralProcess,
) -> None:
    """Found by a red-team run: 1,440 bogus enrollment claims in seconds were all answered
    401, and a viewer's requests slowed 3.5 times. Their failures now count as wrong tokens."""
    c = hardened
    with _from(c, "127.0.0.4") as attacker, _from(c, "127.0.0.1", c.token) as user:
        codes = [
            attacker.post("/api/v1/enroll/claim", json={"token": f"x{i}.guess.pin"}).status_code
            for i in range(LIMITS["auth_failures"] + 1)
        ]
        assert codes == [401] * LIMITS["auth_failures"] + [429]
        r = attacker.post("/api/v1/renewals", json={"certificate": "", "csr": "", "proof": ""})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert user.get("/api/v1/devices").status_code == 200  # another address: unaffected
        assert attacker.get("/api/v1/enroll/ca").status_code == 200  # the CA stays public


def test_the_throttle_backs_off_forgives_success_and_stays_bounded() -> None:
    now = [0.0]
    t = FailureThrottle(3, 60.0, 10.0, 100.0, max_entries=1000, clock=lambda: now[0])
    assert [t.failed("a"), t.failed("a"), t.failed("a")] == [None, None, 10]
    assert t.retry_after("a") == 10 and t.retry_after("b") is None
    lockouts = [10]
    for _ in range(4):  # failing again right after each lockout: each one doubles, up to the cap
        now[0] += lockouts[-1] + 0.5
        assert t.retry_after("a") is None
        lockouts.append([t.failed("a") for _ in range(3)][-1])
    assert lockouts == [10, 20, 40, 80, 100]
    now[0] += 100 + 101  # well behaved for longer than the cap: the back-off starts over
    assert [t.failed("a") for _ in range(3)][-1] == 10
    t.succeeded("a")
    assert t.retry_after("a") is None and t.failed("a") is None
    # failures within the window only: spread out, they never lock
    for _ in range(10):
        now[0] += 61.0
        assert t.failed("slow") is None
    # an attacker with many addresses costs a bounded amount of memory
    for i in range(50_000):
        t.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(t) <= 1000
    # one IPv6 host owns its /64: counted as one address
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"


@pytest.mark.integration
def test_dashboard_sign_in_locks_a_guessing_address_out(hardened: CentralProcess) -> None:
    c = hardened
    with _from(c, "127.0.0.4") as guesser, _from(c, "127.0.0.1") as librarian:
        codes = [
            guesser.post("/dashboard/login", data={"token": f"bet_nope{i}"}).status_code
            for i in range(LIMITS["signin_failures"])
        ]
        assert codes == [401] * (LIMITS["signin_failures"] - 1) + [429]
        r = guesser.post("/dashboard/login", data={"token": c.token})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "Thử lại sau" in r.text  # said in Vietnamese first
        assert "be_session" not in r.headers.get("set-cookie", "")
        assert librarian.post("/dashboard/login", data={"token": c.token}).status_code == 303


# -- sessions -------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_copied_session_cookie_stops_working_at_sign_out(hardened: CentralProcess) -> None:
    c = hardened
    with _from(c, "127.0.0.1") as owner, _from(c, "127.0.0.5") as thief:
        r = owner.post("/dashboard/login", data={"token": c.token})
        assert r.status_code == 303
        copy = {"Cookie": f"be_session={r.cookies['be_session']}"}
        page = thief.get("/dashboard", headers=copy)
        assert page.status_code == 200  # a copy works while the session lives
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        assert owner.post("/dashboard/logout", data={"csrf": csrf}, headers=copy).status_code == 303
        assert thief.get("/dashboard", headers=copy).status_code == 303  # to the sign-in page
        assert thief.get("/dashboard/stream", headers=copy).status_code == 401
        audit = owner.get("/api/v1/audit", headers=_bearer(c.token)).json()
        assert any(a["path"] == "/dashboard/logout" for a in audit)


# -- slow clients ---------------------------------------------------------------------------


def _tls(central: CentralProcess) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=central.ca_file)
    raw = socket.create_connection(("127.0.0.1", central.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def _until_closed(sock: ssl.SSLSocket, drip: bytes = b"", rounds: int = 240) -> bytes:
    """Send ``drip`` every half second (or nothing) until central closes the connection;
    what it sent back. Fails if it is still open after ``rounds`` (two minutes)."""
    got = b""
    sock.settimeout(0.5)
    for _ in range(rounds):
        try:
            if drip:
                sock.sendall(drip)
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return got  # reset, or TLS cut short: closed
        if not data:
            return got
        got += data
    raise AssertionError(f"still open after {rounds} rounds; got {got[:200]!r}")


@pytest.mark.integration
def test_slow_headers_and_silent_bodies_are_cut_off(hardened: CentralProcess) -> None:
    c = hardened
    # a header byte every half second: closed, and nothing was answered
    sock = _tls(c)
    sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    assert _until_closed(sock, drip=b"a") == b""
    sock.close()
    # connected and silent: closed too
    sock = _tls(c)
    assert _until_closed(sock) == b""
    sock.close()
    # a body that stops coming: closed, and the route never ran
    sock = _tls(c)
    head = (
        "PUT /api/v1/releases/floor HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {c.token}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"software": "9')
    assert _until_closed(sock) == b""
    sock.close()
    # a body that trickles, a byte every half second: closed too
    sock = _tls(c)
    sock.sendall(head.encode() + b'{"software": "9')
    assert _until_closed(sock, drip=b" ") == b""
    sock.close()
    # central serves as before
    with c.client() as api:
        assert api.get("/releases/floor").json()["software"] is None
        assert api.get("/health").status_code in (200, 503)


# -- devices --------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_revoked_kiosk_is_shown_revoked_never_online(
    make_agent: Any, central: CentralProcess
) -> None:
    gate = make_agent("gate-01")
    gate.start()
    with central.client() as api:
        wait_until(lambda: api.get("/devices/gate-01").json()["online"], 60, what="online")
        assert api.get("/devices/gate-01").json()["revoked"] is False
        assert api.post("/devices/gate-01/revoke").status_code == 200
        one = api.get("/devices/gate-01").json()
        listed = {d["device_id"]: d for d in api.get("/devices").json()}["gate-01"]
    assert (one["revoked"], one["online"]) == (True, False)
    assert (listed["revoked"], listed["online"]) == (True, False)
    verify = ssl.create_default_context(cafile=central.ca_file)
    with httpx.Client(base_url=central.url, verify=verify) as http:
        assert http.post("/dashboard/login", data={"token": central.token}).status_code == 303
        page = http.get("/dashboard").text
    row = page.split('id="kiosk-gate-01"')[1].split("</tr>")[0]
    assert row.startswith(' class="revoked"')
    assert "Đã thu hồi" in row and "Trực tuyến" not in row


def test_a_revoked_kiosk_is_never_chosen_for_a_rollout(tmp_path: Path) -> None:
    """It would never report, and its silence would count against the wave."""
    cfg = CentralConfig(data_dir=tmp_path, security={"require": False})  # type: ignore[arg-type]
    repo = Repo(cfg.db_url)
    repo.migrate()
    try:
        _, registry = open_identity(cfg, repo)
        for device in ("gate-01", "gate-02"):
            token = registry.create_token(device, "tv-tinh", "gate", "it", 600)["token"]
            secret, _ = parse_token(token)
            name = pki.DeviceName(device, "tv-tinh", "gate")
            registry.enroll(secret, pki.make_csr(pki.new_key(), name))
        assert registry.revoke("gate-02") >= 1
        engine = Rollouts(repo, None, None, floor=ReleaseFloor(tmp_path / "floor.json"))
        r = engine.create("software", "2.0", Selector(), RolloutPlan(), "it")
        assert {t["device_id"] for t in r["targets"]} == {"gate-01"}
        with pytest.raises(RolloutError) as refused:
            engine.create("software", "2.1", Selector(devices=["gate-02"]), RolloutPlan(), "it")
        assert refused.value.status == 404
    finally:
        repo.close()


# -- the release floor ------------------------------------------------------------------------


@pytest.mark.integration
def test_the_release_floor_is_set_by_admins_and_refuses_releases_below_it(
    hardened: CentralProcess,
) -> None:
    c = hardened
    viewer = _token(c, "watcher", "viewer")
    with c.client() as admin, c.client(viewer) as watcher:
        gate = {"device_id": "gate-01", "site": "tv-tinh", "role": "gate"}
        assert admin.post("/devices", json=gate).status_code == 201
        r = admin.put("/devices/gate-01/desired", json={"base_version": 0, "software": "0.1.2"})
        assert r.status_code == 200 and "software_floor" not in r.json()["desired"]
        assert watcher.put("/releases/floor", json={"software": "0.1.3"}).status_code == 403
        assert admin.put("/releases/floor", json={"software": "latest"}).status_code == 422
        r = admin.put("/releases/floor", json={"software": "0.1.3"})
        assert r.status_code == 200, r.text
        assert (r.json()["republished"], r.json()["below"]) == (1, ["gate-01"])
        # every desired state is signed again with the floor in it
        device = admin.get("/devices/gate-01").json()
        assert device["desired_version"] == 2
        assert device["desired"]["software_floor"] == "0.1.3"
        # below it: refused, for a device and for a rollout; at or above: fine
        low = {"base_version": 2, "software": "0.1.2"}
        assert admin.put("/devices/gate-01/desired", json=low).status_code == 409
        assert admin.post("/rollouts", json={"release": "0.1.2"}).status_code == 409
        r = admin.put("/devices/gate-01/desired", json={"base_version": 2, "software": "0.1.10"})
        assert r.status_code == 200 and r.json()["desired"]["software_floor"] == "0.1.3"
        assert watcher.get("/releases/floor").json()["software"] == "0.1.3"
        trail = {(a["actor"], a["path"], a["status"]) for a in admin.get("/audit").json()}
        assert ("launcher", "/api/v1/releases/floor", 200) in trail
        assert ("watcher", "/api/v1/releases/floor", 403) in trail
    # the command IT uses
    cli = [sys.executable, "-m", "biblioedge", "release", "floor", "--central", c.url]
    cli += ["--api-token", c.token, "--cacert", str(c.ca_file), "--json"]
    out = subprocess.run([*cli, "--clear"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["software"] is None
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["set_by"] == "launcher"


def test_release_versions_order_against_the_floor() -> None:
    assert below_floor("0.1.2", "0.1.3") and not below_floor("0.1.3", "0.1.3")
    assert not below_floor("0.1.10", "0.1.9")  # numbers, not text
    assert not below_floor("1.3", "1.3.0") and not below_floor("1.3.0+pi", "1.3.0")
    assert below_floor("1.3.0rc1", "1.3.0") and below_floor("main", "1.0")
    assert not below_floor("0.0.1", None)


class _Kiosk:
    """One kiosk's software updater at 0.1.1, with what it noted and restarts it asked."""

    def __init__(self, srv: TufServer, tmp: Path, releases: dict[str, Path]) -> None:
        self.layout = Layout(tmp / "prefix")
        first = releases["0.1.1"]
        rel = SoftwareRelease.model_validate_json((first / "release.json").read_text())
        wheels = [first / "wheels" / f for f in rel.files(native_arch(), "gate")]
        build_release(self.layout, "0.1.1", wheels, first / "wheels" / rel.pip)
        self.layout.adopt("0.1.1")
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.restarts = 0
        root = srv.repo.root_bytes(1)

        def client() -> ReleaseClient:
            return ReleaseClient(tmp / "tuf", srv.url, None, bootstrap=root)

        async def note(etype: str, payload: dict[str, Any]) -> None:
            self.events.append((etype, payload))

        def restart() -> None:
            self.restarts += 1

        settings = UpdateSettings(arch=native_arch(), role="gate", retry_s=0.1)
        self.updater = Updater(self.layout, client, settings, note, restart)


@pytest.mark.integration
async def test_a_kiosk_refuses_releases_below_its_floor_but_its_own_previous(
    tmp_path: Path, built_releases: dict[str, Path]
) -> None:
    with tuf_server(tmp_path) as srv:
        for version in ("0.1.1", "0.1.2", "0.1.3"):
            srv.sign(software_targets(built_releases[version]))
        kiosk = _Kiosk(srv, tmp_path, built_releases)
        # 0.1.2 is signed, but below the floor: refused before anything is fetched
        kiosk.updater.want("0.1.2", floor="0.1.3")
        await kiosk.updater.step()
        report = kiosk.updater.report
        assert (report.phase, report.reason) == ("failed", "below_floor")
        assert kiosk.updater.bytes_downloaded == 0 and kiosk.restarts == 0
        assert kiosk.events == [
            (
                "device.update_failed",
                {
                    "version": "0.1.2",
                    "reason": "below_floor",
                    "detail": "release 0.1.2 is below the release floor 0.1.3",
                },
            )
        ]
        await kiosk.updater.step()  # said once, not at every look
        assert len(kiosk.events) == 1
        # at the floor: installed, then committed (the health gate's part, done by hand)
        kiosk.updater.want("0.1.3", floor="0.1.3")
        await kiosk.updater.step()
        assert kiosk.restarts == 1 and kiosk.layout.state()["pending"] == "0.1.3"
        assert kiosk.layout.commit("0.1.3")
        assert kiosk.layout.state()["previous"] == "0.1.1"
        # another old release stays refused; going back to its own previous one is allowed
        kiosk.updater.want("0.1.2", floor="0.1.3")
        await kiosk.updater.step()
        assert kiosk.updater.report.reason == "below_floor" and kiosk.restarts == 1
        kiosk.updater.want("0.1.1", floor="0.1.3")
        await kiosk.updater.step()
        assert kiosk.restarts == 2 and kiosk.layout.state()["pending"] == "0.1.1"

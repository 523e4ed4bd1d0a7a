"""``biblioedge demo``: a whole fleet on one machine, no hardware.

A broker, central with SQLite, and one simulated kiosk of each role, each a real process.
The exit gate runs its real flow on a reader whose field the demo fills (docs/exitgate.md).
The desk runs its real flow: a simulated citizen's CCCD lies on a virtual PC/SC reader (pcscd
+ vpcd + the chip simulator), its QR comes through a simulated hand scanner, a demo librarian
taps consent; central issues the card; the new reader's face then opens the simulated gate.
The desk stands at the district branch and the gate at the main building: a reader registered
at one branch enters the other (readers are the library's, fleet/readers.py).
"""

from __future__ import annotations

import fcntl
import logging
import signal
import sys
import threading
import time
import unicodedata
from pathlib import Path
from typing import IO, Any

import httpx
from cryptography.hazmat.primitives import serialization

from biblioedge.agent.gallery_store import GalleryStore, load_or_create_key
from biblioedge.agent.store import Patron, Store
from biblioedge.demo.exitgate import DemoExit, follow_exit
from biblioedge.demo.fleet import SITES as FLEET_SITES
from biblioedge.demo.fleet import FleetStory, kiosk_names
from biblioedge.demo.keeper import Keeper
from biblioedge.demo.launch import AgentProcess, CentralProcess, Child, agent_config, wait_until
from biblioedge.fleet.ils.settings import parse_url
from biblioedge.names import greeting_name
from biblioedge.procs import free_port, port_free, wait_port
from biblioedge.provisioning.broker import BrokerProcess
from biblioedge.provisioning.pcsc import PcscdProcess, PcscUnavailable

log = logging.getLogger("biblioedge.demo")

# cv2, the face engine, the sample faces and the device simulators (kiosk extras) load inside
# the functions that film, enroll and simulate: demo.launch, which the tests and the benchmarks
# of central import, imports this package first.

SITE = "tv-tinh"  # the provincial library's main building
BRANCH = "tv-huyen"  # a district branch: the demo's card desk stands there
DEVICES = (
    ("gate-01", "gate"),
    ("selfcheck-01", "selfcheck"),
    ("desk-01", "desk"),
    ("exitgate-01", "exitgate"),
)


#: Demo readers: who the sample people are at the library (names are invented).
DEMO_READERS = {
    "t1-0": ("P000101", "Nguyễn Văn An"),
    "t1-2": ("P000102", "Trần Thị Bình"),
    "t1-4": ("P000103", "Lê Hoàng Cường"),
    "tom": ("P000104", "Phạm Minh Đức"),
}


def prepare_gate(agent_dir: Path) -> Path | None:
    """Enroll the demo readers into the gate's gallery and film the camera's loop: enrolled
    readers and strangers walking up one after another. None when no sample faces exist."""
    import cv2
    import numpy as np

    from biblioedge.demo.samples import people_in_samples, portrait, scene_frame
    from biblioedge.models.engine import FaceEngine

    people = [p for p in people_in_samples() if not p[0].startswith("astronaut")]
    if not people:
        log.warning("no sample faces installed: the demo gate only simulates its events")
        return None
    engine = FaceEngine()
    store = Store(agent_dir / "agent.sqlite3")
    templates = GalleryStore(store, load_or_create_key(agent_dir / "keys" / "template.key"))
    camera = agent_dir / "camera"
    camera.mkdir(parents=True, exist_ok=True)
    for old in camera.glob("*.jpg"):
        old.unlink()
    rng = np.random.default_rng(2026)
    blank = np.full((720, 1280, 3), 110, np.uint8)
    n = 0
    try:
        for name, image, det in people:
            if name in DEMO_READERS:
                pid, display = DEMO_READERS[name]
                vec = engine.embed_detections(image, [det])
                templates.put(pid, vec, engine.embedder.name)
                store.upsert_patrons(
                    [
                        Patron(  # the gate keeps the given name only
                            pid,
                            pid,
                            greeting_name(unicodedata.normalize("NFC", display)),
                            "active",
                            "2099-12-31",
                        )
                    ]
                )
            face = portrait(image, det.box, 170)
            for frame in [scene_frame(face, rng) for _ in range(10)] + [blank] * 8:
                cv2.imwrite(str(camera / f"{n:05d}.jpg"), frame)
                n += 1
    finally:
        store.close()
    return camera


def prepare_desk(agent_dir: Path) -> tuple[Path, bytes] | None:
    """(the desk camera's folder, the chip photo) of the demo citizen, or None without
    sample faces."""
    import cv2

    from biblioedge.demo.samples import desk_person

    try:
        photo, frames = desk_person(frames=12)
    except (IndexError, ValueError):
        return None
    camera = agent_dir / "camera"
    camera.mkdir(parents=True, exist_ok=True)
    for old in camera.glob("*.jpg"):
        old.unlink()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(camera / f"{i:05d}.jpg"), frame)
    return camera, photo


class DemoDesk:
    """The props around the demo desk: the card on the virtual reader, the hand scanner."""

    def __init__(self, data: Path, photo: bytes, csca_dir: Path) -> None:
        from biblioedge.drivers.cccd.simdata import make_pki
        from biblioedge.drivers.sim_serial import ScannerSimulator

        self.photo = photo
        # the demo country's signing authority: the desk trusts it from the start
        self.pki = make_pki()
        csca_dir.mkdir(parents=True, exist_ok=True)
        (csca_dir / "demo-csca.pem").write_bytes(
            self.pki.csca.public_bytes(serialization.Encoding.PEM)
        )
        self.scanner = ScannerSimulator()
        self.scanner.start()
        self.pcscd: PcscdProcess | None = PcscdProcess(data / "pcsc")
        self.card: object = None
        try:
            self.pcscd.start()
        except PcscUnavailable as exc:
            log.warning("no virtual card reader (%s): the demo desk registers from the QR", exc)
            _say(f"desk: no virtual card reader ({exc}); the desk registers from the QR alone")
            self.pcscd = None

    @property
    def chip(self) -> bool:
        return self.pcscd is not None

    def present_citizen(self) -> None:
        """Put the citizen's card on the reader and scan its QR."""
        from biblioedge.drivers.cccd.chipsim import VPCD_PORT, CccdChip, VpcdCard
        from biblioedge.drivers.cccd.simdata import chip_files, demo_citizen

        citizen, qr = demo_citizen(self.photo)
        if self.chip:
            files = chip_files(citizen.files(self.pki))
            chip = CccdChip(citizen.mrz_information(), files, can=citizen.can)
            card = VpcdCard(chip, port=self.pcscd.port if self.pcscd else VPCD_PORT)
            card.insert()
            self.card = card
        if not self.scanner.wait_opened(120):
            log.warning("the desk never opened its scanner port: no registration in this demo")
        self.scanner.scan(qr)

    def stop(self) -> None:
        card: Any = self.card
        if card is not None:
            card.remove()
        self.scanner.stop()
        if self.pcscd is not None:
            self.pcscd.stop()


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _follow_desk(central: CentralProcess, stop: threading.Event) -> None:
    """Tell the demo's story on stdout: the registration, then the gate letting her in, by
    patron number only (a console is no place for a reader's name, even an invented one).
    Central may be restarted meanwhile (the keeper does that): the story waits for it."""
    while not stop.is_set():
        try:
            _story(central, stop)
            return
        except (httpx.HTTPError, KeyError, ValueError):
            stop.wait(2.0)


def _story(central: CentralProcess, stop: threading.Event) -> None:
    with central.client() as api:
        patron = ""
        while not stop.wait(1.0):
            if not patron:
                items = api.get("/events", params={"type": "desk.registration"}).json()["items"]
                if items:
                    patron = items[0]["payload"]["patron_id"]
                    _say(f"desk-01 at {BRANCH} registered a reader as {patron}; card printed")
                continue
            items = api.get("/events", params={"type": "gate.decision", "limit": 200}).json()
            if any(
                i["payload"].get("patron_id") == patron and i["payload"]["decision"] == "grant"
                for i in items["items"]
            ):
                _say(
                    f"gate-01 at {SITE} recognized {patron} by face: gate opened "
                    f"(registered at {BRANCH}: one reader, every branch)"
                )
                return


def _circ_line(e: dict[str, Any]) -> str | None:
    """One story line for a self-check event (ids only: events carry no names or titles)."""
    p = e["payload"]
    if e["type"] == "circ.checkout":
        if p.get("result") != "ok":
            return f"selfcheck-01 did not lend {p['item_id']}: {p.get('result')}"
        how = "OFFLINE, recorded for later" if p.get("offline") else "security off, read back"
        return (
            f"selfcheck-01 lent {p['item_id']} to {p.get('patron_id')} "
            f"(due {p.get('due_date', '?')}; {how})"
        )
    if e["type"] == "circ.renew":
        if p.get("result") != "ok":
            return f"selfcheck-01 could not renew {p['item_id']}: {p.get('result')}"
        return (
            f"selfcheck-01 renewed {p['item_id']} for {p.get('patron_id')} "
            f"(renew {p.get('renewal', 'one')}, from the reader's own account screen)"
        )
    if e["type"] == "circ.checkin":
        where = f"bin {p['sort_bin']}" if p.get("sort_bin") else "offline"
        return f"selfcheck-01 took back {p['item_id']} ({where}; security on, read back)"
    if e["type"] == "circ.reconciled":
        return (
            f"selfcheck-01 reconciled with the library system: {p['done']} offline "
            f"transactions recorded, {p['refused']} refused (sent to staff)"
        )
    if e["type"] == "circ.attention":
        return f"selfcheck-01 needs staff: {p.get('reason')} for {p.get('item_id')}"
    return None


def _follow_selfcheck(central: CentralProcess, ils: Child, stop: threading.Event) -> None:
    """Print the self-check's loans and returns; after the first return, stop the library
    system for a while so the demo shows offline lending and the reconciliation."""
    seen: set[str] = set()
    returns = 0
    down_until: float | None = None
    told = False  # after the reconciliation the story is told: only staff cases from then on
    while not stop.wait(2.0):
        try:
            with central.client() as api:
                items = api.get(
                    "/events", params={"device_id": "selfcheck-01", "limit": 200}
                ).json()["items"]
        except (httpx.HTTPError, KeyError, ValueError):
            continue
        for e in sorted(items, key=lambda e: e["seq"]):
            if e["event_id"] in seen or not e["type"].startswith("circ."):
                continue
            seen.add(e["event_id"])
            line = _circ_line(e)
            if line and (not told or e["type"] == "circ.attention"):
                _say(line)
            if e["type"] == "circ.reconciled":
                told = True
            if e["type"] == "circ.checkin":
                returns += 1
        if returns and down_until is None:
            _say("demo: stopping the library system for 30 s (the self-check lends offline)")
            ils.stop()
            down_until = time.monotonic() + 30
        elif down_until is not None and down_until > 0 and time.monotonic() > down_until:
            _say("demo: the library system is back (the self-check forwards what it lent)")
            ils.start()
            down_until = 0


def ils_section(ils_url: str | None, dummy_port: int) -> dict[str, object]:
    """Central's ``[ils]``: the dummy's Koha-shaped patron API, or the library system of
    ``--ils-url``, with the demo's branches and categories mapped to Koha's sample data (so
    the flag alone is enough)."""
    return {
        "ils": {
            "url": ils_url or f"koha+http://koha:koha@127.0.0.1:{dummy_port}/",
            "libraries": dict(zip(FLEET_SITES, ("CPL", "MPL"), strict=True)),
            "category_adult": "PT",
            "category_child": "J",
            "status_poll_s": 5.0,
        }
    }


class _Demo:
    """The pieces of one demo run: made in this order, started, watched, stopped together."""

    def __init__(self, data: Path, rate: float, port: int, ils_url: str | None = None) -> None:
        self.data = data
        self.desk_kit = prepare_desk(data / "agents" / "desk-01")
        self.ils_port, self.ils_rest = free_port(), free_port()
        self.patrons_api = ils_url  # None: the dummy's Koha-shaped patron API
        self.ils = Child(
            "ils",
            ["sip", "serve", "--port", str(self.ils_port), "--rest-port", str(self.ils_rest)]
            + ["--patrons-file", str(data / "ils" / "patrons.json")],
            data / "ils" / "ils.log",
            {},
        )
        self.password = data / "ils" / "kiosk.password"  # the SIP2 secret, out of the config
        self.password.parent.mkdir(parents=True, exist_ok=True)
        self.password.write_text("kiosk\n")
        self.password.chmod(0o600)
        self.csca_dir = data / "csca"
        self.desk = (
            DemoDesk(data, self.desk_kit[1], self.csca_dir) if self.desk_kit is not None else None
        )
        self.exit_kit = DemoExit()
        self.broker = BrokerProcess(data / "broker")
        # central first: it makes the device CA and writes the broker's TLS files and ACL
        self.central = CentralProcess(
            data / "central",
            self.broker,
            port=port or free_port(),
            extra=ils_section(ils_url, self.ils_rest),
        )
        if not self.broker.secure:
            log.warning(
                "mosquitto is not installed: the demo runs the embedded broker WITHOUT TLS, "
                "client certificates or ACLs (security.require off). apt-get install mosquitto."
            )
        self.token = self.central.token
        self.token_file = data / "admin-token"
        self.token_file.write_text(self.token)
        self.token_file.chmod(0o600)
        self.agents = [self._agent(device_id, role, rate) for device_id, role in DEVICES]
        self.fleet_child: Child | None = None

    @property
    def ils_url(self) -> str:
        return f"sip2://kiosk@127.0.0.1:{self.ils_port}?institution=TVTN&timeout=3"

    def _agent(self, device_id: str, role: str, rate: float) -> AgentProcess:
        agent_dir = self.data / "agents" / device_id
        sections = self._sections(agent_dir, role) or {
            "simulator": {"enabled": True, "rate_per_s": rate}
        }
        return AgentProcess(
            agent_dir,
            agent_config(
                agent_dir,
                device_id,
                role,
                BRANCH if role == "desk" else SITE,
                self.broker.url,
                **sections,
            ),
            self.central,
        )

    def _sections(self, agent_dir: Path, role: str) -> dict[str, dict[str, object]] | None:
        """The role's real flow on simulated devices; None: only simulated events."""
        if role == "gate":
            return _gate_sections(agent_dir)
        if role == "selfcheck":  # the real flow: dummy library system, simulated RFID pad
            return {
                "simulator": {"enabled": False},
                "selfcheck": {
                    "enabled": True,
                    "ils": self.ils_url,
                    "password_file": str(self.password),
                    "rfid": "sim",
                    "receipt": f"dir:{self.data / 'receipts'}",
                    "probe_s": 5.0,
                    "demo_reader": True,
                },
            }
        if role == "exitgate":  # the real flow: its reader's field simulated here
            return self.exit_kit.sections(self.ils_url, str(self.password))
        if role == "desk" and self.desk is not None and self.desk_kit is not None:
            return _desk_sections(self.data, self.desk, self.desk_kit[0], self.csca_dir)
        return None

    def start(self) -> None:
        self.ils.start()
        wait_port("127.0.0.1", self.ils_port, 20)
        self.broker.start()
        self.central.start()
        for agent in self.agents:
            agent.start()
        with self.central.client() as api:
            wait_until(
                lambda: (
                    all(d["online"] for d in api.get("/devices").json())
                    and len(api.get("/devices").json()) == len(self.agents)
                ),
                timeout=30,
                what="all demo kiosks online",
            )

    def tell(self, stop: threading.Event, fleet: bool) -> None:
        """The story threads: the desk's registration, the self-check, the exit, the fleet."""
        central = self.central
        if self.desk is not None:

            def story(kit: DemoDesk = self.desk) -> None:
                try:
                    kit.present_citizen()
                except (OSError, RuntimeError) as exc:  # TimeoutError is an OSError
                    log.warning("demo desk story: %r", exc)
                    _say(
                        "desk story stopped: the citizen's card could not be put on the "
                        f"virtual card reader ({exc}); no reader is registered in this demo. "
                        "Another pcscd may hold the reader: stop it and start the demo again."
                    )
                    return
                _follow_desk(central, stop)

            threading.Thread(target=story, daemon=True, name="demo-story").start()
        threading.Thread(
            target=_follow_selfcheck, args=(central, self.ils, stop), daemon=True, name="demo-circ"
        ).start()
        threading.Thread(
            target=follow_exit,
            args=(self.exit_kit, central.client, _say, stop),
            daemon=True,
            name="demo-exit",
        ).start()
        self.fleet_child = Child(
            "fleet",
            [
                "demo-fleet",
                "--data",
                str(self.data),
                "--central",
                central.url,
                "--token-file",
                str(self.token_file),
                "--ca",
                str(central.ca_file),
            ],
            self.data / "fleet" / "fleet.log",
            {},
        )
        if fleet:
            narrator = FleetStory(central, self.data, _say, stop, self.fleet_child)
            threading.Thread(target=narrator.run, daemon=True, name="demo-fleet").start()

    def banner(self, fleet: bool) -> str:
        central, broker, data = self.central, self.broker, self.data
        api_url = central.url + "/api/v1"
        return "\n".join(
            [
                "",
                "biblioedge demo is running",
                f"  broker   {broker.kind} at {broker.url}"
                + ("   (mutual TLS, per-kiosk ACLs)" if broker.secure else "   (INSECURE)"),
                f"  API      {api_url}   (OpenAPI docs: {central.url}/docs)",
                f"  CA       {central.ca_file}   (curl --cacert)",
                f"  token    {self.token}   (admin; also in {self.token_file})",
                f"  kiosks   {', '.join(a.device_id for a in self.agents)} at site {SITE}"
                f" (desk-01 at the branch {BRANCH})",
                (
                    f"  fleet    {len(kiosk_names())} simulated kiosks at "
                    f"{', '.join(FLEET_SITES)} (releases built, signed and rolled out "
                    "in a minute or two)"
                )
                if fleet
                else "  fleet    off (--fleet)",
                f"  dashboard {central.url}/dashboard   (sign in with the admin token above)",
                (
                    f"  cards    {data / 'cards'} (the desk prints each card it issues here)"
                    if self.desk is not None
                    else "  cards    none: no desk in this demo (see the log for why)"
                ),
                f"  library  dummy SIP2 library system at 127.0.0.1:{self.ils_port}"
                f"   (receipts in {data / 'receipts'})",
                "  patrons  central pushes readers to "
                + (
                    self.patrons_api.split("@")[-1]
                    if self.patrons_api
                    else f"the dummy's Koha-shaped API at 127.0.0.1:{self.ils_rest}"
                ),
                f"  data     {data}",
                "",
                f'  curl --cacert {central.ca_file} -H "Authorization: Bearer {self.token}" '
                f"{api_url}/events?limit=5",
                "",
                "Ctrl-C stops everything.",
                "",
            ]
        )

    def keep(self, stop: threading.Event, duration: float | None) -> int | None:
        """Keep every process up until stopped or --duration ends; 1 when the keeper gives up."""
        keeper = Keeper([self.broker, self.central, *self.agents], _say)
        end = None if duration is None else time.monotonic() + duration
        while not stop.wait(1.0):
            if end is not None and time.monotonic() > end:
                break
            reason = keeper.check()
            if reason is not None:
                log.error("giving up: %s", reason)
                _say(f"demo stopping: {reason}")
                return 1
        return None

    def log_tails(self) -> None:
        for child in (self.central, *self.agents):
            if child.log_tail():
                log.error("%s log:\n%s", child.name, child.log_tail(15))

    def stop(self) -> None:
        log.info("stopping the demo fleet")
        if self.fleet_child is not None:
            self.fleet_child.stop()
        for agent in self.agents:
            agent.stop()
        self.central.stop()
        self.broker.stop()
        self.ils.stop()
        if self.desk is not None:
            self.desk.stop()
        self.exit_kit.stop()


def _gate_sections(agent_dir: Path) -> dict[str, dict[str, object]] | None:
    camera = prepare_gate(agent_dir)
    if camera is None:
        return None
    return {  # the real gate flow on a simulated camera and turnstile
        "simulator": {"enabled": False},
        "gate": {
            "enabled": True,
            "camera": f"sim:{camera}",
            "camera_fps": 10.0,
            "relay": "sim",
            "passback_s": 60.0,
            "pulse_ms": 800,
        },
    }


def _desk_sections(
    data: Path, desk: DemoDesk, camera: Path, csca_dir: Path
) -> dict[str, dict[str, object]]:
    return {
        "simulator": {"enabled": False},
        "desk": {
            "enabled": True,
            "camera": f"sim:{camera}",
            "camera_fps": 10.0,
            "qr_from_camera": False,
            "scanner": f"serial:{desk.scanner.port}",
            "chip": desk.chip,
            "csca_dir": str(csca_dir),
            "printer": f"dir:{data / 'cards'}",
            "library_name": "Thư viện tỉnh (demo)",
            "demo_librarian": True,
        },
    }


def run_demo(
    data: Path,
    *,
    rate: float = 0.5,
    port: int = 8080,
    duration: float | None = None,
    fleet: bool = True,
    ils_url: str | None = None,
) -> int:
    if ils_url is not None:
        try:
            parse_url(ils_url)
        except ValueError as exc:
            sys.stderr.write(f"biblioedge: --ils-url: {exc}\n")
            return 2
    data = data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    lock = _lock(data)
    if lock is None:
        sys.stderr.write(f"biblioedge: another demo is running with {data}; stop it first\n")
        return 2
    if port and not port_free(port):
        sys.stderr.write(
            f"biblioedge: port {port} is in use (another demo or central?): stop it, "
            "or pass --port with a free one (0 picks one)\n"
        )
        lock.close()
        return 2

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    demo = _Demo(data, rate, port, ils_url)
    try:
        demo.start()
        demo.tell(stop, fleet)
        sys.stdout.write(demo.banner(fleet))
        sys.stdout.flush()
        if demo.keep(stop, duration) is not None:
            return 1
    except (TimeoutError, OSError) as exc:
        log.error("demo could not start: %s", exc)
        demo.log_tails()
        return 1
    finally:
        demo.stop()
        lock.close()
    sys.stdout.write("demo stopped\n")
    return 0


def _lock(data: Path) -> IO[str] | None:
    """An exclusive lock on the data dir for as long as the demo runs (None: held)."""
    f = (data / "demo.lock").open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f

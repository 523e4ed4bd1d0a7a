"""The demo's exit gate: its reader's field and its passage counter are simulated here, in the
demo process, on ptys the kiosk opens as it would /dev/ttyUSB0 (as the desk's scanner is), so
the demo can carry books through and tell what happened.

The story: a reader walks out with a book nobody lent (the gate alarms: light, buzzer, the
screen names the book, central's dashboard shows it), then one with a book on loan (no alarm).
After that, people keep coming and going now and then, so the counts and the dashboard move.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import httpx

DEVICE = "exitgate-01"
UNBORROWED = "30000007"  # on the shelf, secured
BORROWED = "30000003"  # lent: its security switched off by the self-check
DWELL_S = 0.6  # a tag in the field at walking speed


# The simulated reader and the dummy library system's catalogue (pysip2, a kiosk extra) load
# inside the functions: demo.launch, which benchmarks of central import, imports this package.


class DemoExit:
    def __init__(self) -> None:
        from biblioedge.drivers.passage import PassageCounterSimulator
        from biblioedge.drivers.rfid.sim import M810Simulator

        self.field = M810Simulator(air_s=0.004).start()
        self.counter = PassageCounterSimulator().start()

    def sections(self, ils_url: str, password_file: str) -> dict[str, dict[str, object]]:
        return {
            "simulator": {"enabled": False},
            "exitgate": {
                "enabled": True,
                "rfid": f"m810:{self.field.port}",
                "relay": "sim",
                "counter": f"serial:{self.counter.port}",
                "ils": ils_url,  # titles on the alarm screen
                "password_file": password_file,
                "realarm_s": 5.0,
            },
        }

    def carry(self, item: str, afi: int, stop: threading.Event) -> None:
        from biblioedge.drivers.rfid.sim import catalogue_tags
        from biblioedge.drivers.sip2.dummy import CATALOGUE

        tags = catalogue_tags({item: CATALOGUE[item]})[item]
        for tag in tags:
            tag.afi = afi
        self.counter.walk("out")
        self.field.place(*tags)
        stop.wait(DWELL_S)
        self.field.lift(*(t.uid for t in tags))

    def stop(self) -> None:
        self.field.stop()
        self.counter.stop()


def follow_exit(
    kit: DemoExit, client: Callable[[], Any], say: Callable[[str], None], stop: threading.Event
) -> None:
    """Carry the two books out, tell what the gate did, then keep people walking."""
    from biblioedge.drivers.sip2.dummy import CATALOGUE

    def alarmed(item: str) -> bool:
        with client() as api:
            got = api.get("/events", params={"device_id": DEVICE, "type": "exit.alarm"})
            return any(
                i.get("item_id") == item
                for e in got.json()["items"]
                for i in e["payload"].get("items", [])
            )

    try:
        stop.wait(20.0)  # the kiosk opens its reader first
        kit.carry(UNBORROWED, 0x07, stop)
        for _ in range(30):
            if stop.wait(1.0) or alarmed(UNBORROWED):
                break
        if alarmed(UNBORROWED):
            say(
                f"{DEVICE} alarmed: {UNBORROWED} ({CATALOGUE[UNBORROWED]}) was carried out "
                "unborrowed: light, buzzer, the screen names it, the dashboard shows it"
            )
        stop.wait(5.0)
        kit.carry(BORROWED, 0xC2, stop)
        stop.wait(10.0)
        if not alarmed(BORROWED):
            say(f"{DEVICE} let {BORROWED} ({CATALOGUE[BORROWED]}) through: it is lent, no alarm")
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        say(f"demo: the exit gate's story could not be told ({exc})")
    rng = random.Random(20)
    while not stop.wait(rng.uniform(5, 15)):
        kit.counter.walk(rng.choice(("in", "out")), rng.randint(1, 3))

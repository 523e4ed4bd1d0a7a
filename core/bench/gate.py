"""``biblioedge bench gate``: the whole gate, people walking up one after another.

People are the real faces shipped inside installed packages (six in insightface's ``t1.jpg``,
its Tom Hanks crop, scikit-image's astronaut). Half are enrolled, from their original photo;
the other half are strangers. Each approach shows one person to the simulated camera in
frames augmented with scale, in-plane rotation and a yaw-like squeeze, lighting, blur, sensor
noise and sometimes a scarf over the lower face, through the real gate flow, the dlib engine
and the turnstile simulator on a real pty. Reported: frame-to-relay latency, time from
approach to decision, people per minute, false accepts (a stranger let in, or someone let in
as somebody else) and false rejects (an enrolled reader not let in within the time limit).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from biblioedge.demo.samples import people_in_samples, portrait, scene_frame


async def _run(people: int, rounds: int, frames: int, seed: int, say: Any) -> dict[str, Any]:
    import numpy as np
    from prometheus_client import CollectorRegistry

    from biblioedge.agent.gate import GateFlow, GateMetrics, GateSettings
    from biblioedge.agent.gate_policy import GatePolicy, PatronInfo
    from biblioedge.agent.supervisor import Context
    from biblioedge.cardtoken import CardVerifier
    from biblioedge.drivers.camera import SimulatedCamera
    from biblioedge.drivers.codes import ZxingDecoder
    from biblioedge.drivers.gate import LineGate
    from biblioedge.drivers.sim_serial import TurnstileSimulator
    from biblioedge.models.engine import AsyncFaceEngine, FaceEngine
    from biblioedge.models.gallery import Gallery

    rng = np.random.default_rng(seed)
    everyone = people_in_samples()
    if len(everyone) < 2:
        raise RuntimeError("bench gate needs the sample images of insightface and scikit-image")
    chosen = everyone[: min(people, len(everyone))]
    enrolled = {name for i, (name, _, _) in enumerate(chosen) if i % 2 == 0}
    face = await AsyncFaceEngine.load(FaceEngine)
    gallery = Gallery(face.engine.dim)
    portraits = {}
    for name, image, det in chosen:
        portraits[name] = portrait(image, det.box, 170)
        if name in enrolled:  # from the person's own face in the original photo
            gallery.add(name, face.engine.embed_detections(image, [det])[0])
    say(f"{len(chosen)} people, {len(enrolled)} enrolled, {rounds} approaches each")
    patrons = {n: PatronInfo(n, n, "active", "2099-01-01") for n in enrolled}
    turnstile = TurnstileSimulator().start()
    relay = LineGate(turnstile.port)
    events: list[tuple[int, dict[str, Any]]] = []  # (scene, payload)

    async def emit(etype: str, payload: dict[str, Any]) -> None:
        if etype == "gate.decision" and flow.current is not None:
            events.append((flow.current.scene, payload))
            arrived.set()

    arrived = asyncio.Event()

    blank = np.full((720, 1280, 3), 120, np.uint8)
    camera = SimulatedCamera([blank], fps=15)
    flow = GateFlow(
        camera=camera,
        face=face,
        gallery=gallery,
        decoder=ZxingDecoder(),
        gate=relay,
        verifier=CardVerifier({}),
        policy=GatePolicy(patrons.get, passback_s=0, cooldown_s=0),
        barcode_to_patron=lambda _: None,
        emit=emit,
        metrics=GateMetrics(CollectorRegistry()),
        settings=GateSettings(pulse_ms=200, unknown_cooldown_s=0),
    )
    task = asyncio.create_task(flow.run(Context("gate", 60)))
    outcomes: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    try:
        order = [(name, r) for r in range(rounds) for name, _, _ in chosen]
        for name, _ in order:
            camera.show([scene_frame(portraits[name], rng) for _ in range(frames)])
            scene = camera.scene

            def mine(scene: int = scene) -> list[dict[str, Any]]:
                return [payload for s, payload in events if s == scene]

            t0 = time.perf_counter()
            while not mine() and (left := 3.0 - (time.perf_counter() - t0)) > 0:
                arrived.clear()
                try:
                    async with asyncio.timeout(left):
                        await arrived.wait()
                except TimeoutError:
                    break
            took = time.perf_counter() - t0
            decided = mine()
            camera.show([blank])
            await asyncio.sleep(0.15)  # the next person steps up
            outcomes.append(
                {
                    "person": name,
                    "enrolled": name in enrolled,
                    "decision": decided[0] if decided else None,
                    "took_s": took,
                }
            )
        elapsed = time.perf_counter() - t_all
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        relay.close()
        turnstile.stop()
        face.close()
    return _summary(outcomes, elapsed)


def _summary(outcomes: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    import numpy as np

    grants = [o for o in outcomes if o["decision"] and o["decision"]["decision"] == "grant"]
    fa = sum(1 for o in grants if not o["enrolled"] or o["decision"]["patron_id"] != o["person"])
    enrolled = [o for o in outcomes if o["enrolled"]]
    fr = sum(
        1
        for o in enrolled
        if not (
            o["decision"]
            and o["decision"]["decision"] == "grant"
            and o["decision"]["patron_id"] == o["person"]
        )
    )
    lat = np.array([o["decision"]["latency_ms"] for o in grants]) if grants else np.zeros(1)
    took = (
        np.array([o["took_s"] * 1000 for o in outcomes if o["decision"]])
        if outcomes
        else np.zeros(1)
    )
    strangers = [o for o in outcomes if not o["enrolled"]]
    return {
        "bench": "gate",
        "backend": "dlib",
        "people": len({o["person"] for o in outcomes}),
        "approaches": len(outcomes),
        "enrolled_approaches": len(enrolled),
        "stranger_approaches": len(strangers),
        "frame_to_relay_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p95": round(float(np.percentile(lat, 95)), 1),
        },
        "approach_to_decision_ms": {
            "p50": round(float(np.percentile(took, 50)), 1),
            "p95": round(float(np.percentile(took, 95)), 1),
        },
        "people_per_minute": round(len(outcomes) / elapsed * 60, 1),
        "false_accepts": fa,
        "false_rejects": fr,
        "false_reject_rate": round(fr / max(len(enrolled), 1), 4),
        "strangers_refused": sum(
            1 for o in strangers if o["decision"] and o["decision"]["decision"] == "deny"
        ),
        "no_decision": sum(1 for o in outcomes if o["decision"] is None),
        "closest_stranger_score": max(
            (o["decision"].get("score", 0.0) for o in strangers if o["decision"]), default=None
        ),
        "targets": {
            "p95_frame_to_relay_ms<=300": float(np.percentile(lat, 95)) <= 300,
            "people_per_minute>=30": len(outcomes) / elapsed * 60 >= 30,
            "false_accepts==0": fa == 0,
        },
    }


def bench_gate(
    people: int = 8, rounds: int = 5, frames: int = 6, seed: int = 7, progress: bool = True
) -> dict[str, Any]:
    def say(msg: str) -> None:
        if progress:
            sys.stderr.write(msg + "\n")

    return asyncio.run(_run(people, rounds, frames, seed, say))

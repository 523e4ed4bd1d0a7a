"""Build the gate flow from the agent's config: drivers, face engine, gallery, policy.

Kept apart from :mod:`biblioedge.agent.gate.flow` so the flow stays testable with hand-made parts
and this module is the only place that knows config strings like ``line:/dev/ttyUSB0``.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.face_build import load_face
from biblioedge.agent.gallery_sync import GallerySync
from biblioedge.agent.gate.flow import Emit, GateFlow, GateMetrics, GateSettings
from biblioedge.agent.gate.policy import GatePolicy, PatronInfo
from biblioedge.agent.store import Store
from biblioedge.cardtoken import CardVerifier, load_public_key
from biblioedge.drivers.camera import Camera, open_camera
from biblioedge.drivers.codes import frame_decoder
from biblioedge.drivers.gate import CH340Relay, GateController, LineGate
from biblioedge.drivers.sim_serial import TurnstileSimulator
from biblioedge.models.gallery import Gallery
from biblioedge.models.liveness import MotionLiveness
from biblioedge.models.quality import QualityConfig

log = logging.getLogger("biblioedge.agent.gate")


def make_camera(cfg: AgentConfig) -> Camera:
    g = cfg.gate
    return open_camera(g.camera, fps=g.camera_fps, width=g.camera_width, height=g.camera_height)


class NoRelay:
    """relay = none: decisions are made and logged, nothing is switched (a display-only gate)."""

    def open(self, pulse_ms: int) -> None:
        pass

    def alarm(self, on: bool) -> None:
        pass

    def close(self) -> None:
        pass


def make_relay(cfg: AgentConfig) -> tuple[GateController, Any]:
    """(controller, simulator or None). A simulator lives as long as the controller."""
    spec = cfg.gate.relay
    if spec == "none":
        return NoRelay(), None
    if spec == "sim":
        sim = TurnstileSimulator().start()
        return LineGate(sim.port), sim
    kind, _, port = spec.partition(":")
    if kind == "line" and port:
        return LineGate(port), None
    if kind == "ch340" and port:
        return CH340Relay(port), None
    raise ValueError(f"gate.relay: {spec!r} is not none, sim, line:<port> or ch340:<port>")


def patron_lookup(store: Store) -> Any:
    def lookup(patron_id: str) -> PatronInfo | None:
        row = store.conn.execute(
            "SELECT patron_id, display_name, status, expires_at FROM patron_cache"
            " WHERE patron_id = ?",
            (patron_id,),
        ).fetchone()
        return PatronInfo(*row) if row else None

    return lookup


async def build_gate(
    cfg: AgentConfig,
    store: Store,
    synced: GallerySync,
    emit: Emit,
    registry: CollectorRegistry,
) -> tuple[GateFlow, list[Any]]:
    """The gate flow and the resources to close when it is done. ``synced`` holds what central
    sent: the encrypted templates, the card keys and the revoked cards."""
    face = await load_face(cfg)
    gallery = Gallery(
        face.dim, fast_from=cfg.face.gallery_fast_from, rerank=cfg.face.gallery_rerank
    )
    synced.dims[face.embedder_name] = face.dim  # deltas are checked against it from now
    ids, matrix = synced.templates.load(face.embedder_name, face.dim)
    if ids:
        gallery.add_matrix(ids, matrix)
    log.info(
        "gallery: %d templates of %d readers (%s)",
        len(gallery),
        gallery.identities,
        face.embedder_name,
    )
    relay, sim = make_relay(cfg)
    g = cfg.gate
    flow = GateFlow(
        camera=make_camera(cfg),
        face=face,
        gallery=gallery,
        decoder=frame_decoder(g.decoder),
        gate=relay,
        verifier=CardVerifier(
            {kid: load_public_key(k) for kid, k in {**synced.card_keys(), **g.card_keys}.items()},
            revoked=synced.revoked(),
        ),
        policy=GatePolicy(
            patron_lookup(store),
            passback_s=g.passback_s,
            cooldown_s=g.cooldown_s,
            allow_unknown_patrons=g.allow_unknown_patrons,
        ),
        barcode_to_patron=lambda code: (
            p.patron_id if (p := store.patron_by_barcode(code)) else None
        ),
        emit=emit,
        metrics=GateMetrics(registry),
        settings=GateSettings(
            pulse_ms=g.pulse_ms,
            quality=QualityConfig(min_eye_distance_px=g.min_eye_distance_px),
            idle_after_s=g.idle_after_s,
        ),
        liveness=MotionLiveness() if g.liveness == "motion" else None,
    )
    return flow, [c for c in (face, relay, sim) if c is not None]

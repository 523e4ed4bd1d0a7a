"""Build the self-check station from the agent's config: library system, RFID reader,
scanner, receipt printer, and the synced gallery that says who a card or a CCCD belongs to.

Kept apart from the flow so the flow stays testable with hand-made parts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.gallery_sync import GallerySync
from biblioedge.agent.selfcheck.card_numbers import speak_card_numbers
from biblioedge.agent.selfcheck.station import AsyncEmit, SelfcheckStation
from biblioedge.agent.store import Store
from biblioedge.agent.supervisor import serial_scanner
from biblioedge.cardtoken import CardTokenError, CardVerifier, load_public_key
from biblioedge.drivers.rfid.reader import TagReader
from biblioedge.settings import ConfigError

log = logging.getLogger("biblioedge.agent.selfcheck")


def open_reader(cfg: AgentConfig) -> tuple[TagReader, Any]:
    """(reader, simulator or None): ``m810:<port>`` or ``sim`` (the demo catalogue's tags on a
    simulated pad, at the real line speed)."""
    from biblioedge.drivers.rfid.m810 import M810Reader

    spec = cfg.selfcheck.rfid
    if spec == "sim":
        from biblioedge.drivers.rfid.sim import M810Simulator

        sim = M810Simulator(air_s=0.004).start()
        return M810Reader(sim.port), sim
    if spec.startswith("m810:"):
        return M810Reader(spec[5:]), None
    raise ConfigError(
        "selfcheck.rfid: the self-check reads items by RFID: m810:<serial port> or sim"
    )


def card_identifier(synced: GallerySync | None, cfg: AgentConfig) -> Any:
    """Library-card QR → patron id, verified offline with central's keys (as at the gate)."""

    def identify(token: str) -> str | None:
        if synced is None:
            return None
        keys = {**synced.card_keys(), **cfg.gate.card_keys}
        verifier = CardVerifier(
            {kid: load_public_key(k) for kid, k in keys.items()}, revoked=synced.revoked()
        )
        try:
            return verifier.verify(token).pid
        except CardTokenError as exc:
            log.info("card QR refused: %s", exc)
            return None

    return identify


def cccd_identifier(synced: GallerySync | None, cfg: AgentConfig) -> Any:
    """CCCD QR → patron id, by the keyed hash of the ID number (the desks' pepper)."""
    pepper_file = cfg.selfcheck.pepper_file
    pepper = pepper_file.read_bytes() if pepper_file is not None else None

    def identify(payload: str) -> str | None:
        from biblioedge.agent.citizen import citizen_ref
        from biblioedge.drivers.cccd.errors import CccdError
        from biblioedge.drivers.cccd.qr import parse_qr

        if synced is None or pepper is None:
            return None
        try:
            qr = parse_qr(payload)
        except CccdError:
            return None
        found = synced.reader(citizen_ref=citizen_ref(pepper, qr.id_number))
        return found[0] if found else None

    return identify


async def build_face_watch(cfg: AgentConfig, synced: GallerySync, station: Any) -> Any:
    """The camera, the face engine and the gallery of readers who consented to being
    recognised at a self-check (the only templates a self-check keeps)."""
    from biblioedge.agent.face_build import load_face
    from biblioedge.agent.selfcheck.face import FaceWatch
    from biblioedge.drivers.camera import open_camera
    from biblioedge.models.gallery import Gallery
    from biblioedge.models.liveness import MotionLiveness

    face = await load_face(cfg)
    gallery = Gallery(face.dim)
    synced.dims[face.embedder_name] = face.dim
    ids, matrix = synced.templates.load(face.embedder_name, face.dim)
    if ids:
        gallery.add_matrix(ids, matrix)
    sc = cfg.selfcheck
    log.info("self-check face identification: %d readers consented", gallery.identities)
    return FaceWatch(
        open_camera(sc.camera, fps=sc.camera_fps),
        face,
        gallery,
        station,
        threshold=sc.face_threshold,
        liveness=MotionLiveness() if sc.liveness == "motion" else None,
    )


async def build_selfcheck(
    cfg_ref: Any, emit: AsyncEmit, synced: GallerySync | None, can_record: Any
) -> tuple[SelfcheckStation, list[Any]]:
    from biblioedge.drivers.sip2.library import Sip2Library

    cfg: AgentConfig = cfg_ref()
    sc = cfg.selfcheck
    reader, sim = await asyncio.to_thread(open_reader, cfg)
    library = Sip2Library(sc.account())
    if synced is not None:  # SIP2 names a reader by the library system's number
        speak_card_numbers(library, synced.card_number, synced.patron_of)
    offline_store = await asyncio.to_thread(Store, cfg.store_path)  # its own connection

    def blocked(patron_id: str) -> bool:
        found = synced.reader(patron_id=patron_id) if synced is not None else None
        return found is not None and found[1] != "active"

    station = SelfcheckStation(
        cfg_ref,
        emit,
        reader=reader,
        library=library,
        offline_store=offline_store,
        identify_card=card_identifier(synced, cfg),
        identify_cccd=cccd_identifier(synced, cfg),
        blocked=blocked,
        can_record=can_record,
    )
    closables: list[Any] = [station, reader, library, offline_store]
    if sc.camera != "none" and synced is not None:
        watch = await build_face_watch(cfg, synced, lambda: station)
        station.face_watch = watch
        closables.append(watch.face)
    if sim is not None:
        station.simulator = sim
        closables.append(sim)
    scanner = serial_scanner(sc.scanner, station.scanned)
    if scanner is not None:
        closables.append(scanner)
    log.info(
        "self-check ready: library system %s:%d, RFID %s, receipt %s",
        library.account.host,
        library.account.port,
        sc.rfid,
        sc.receipt,
    )
    return station, closables

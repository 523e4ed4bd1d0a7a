"""Build the desk flow from the agent's config: camera, chip reader, scanner, printer, face.

Kept apart from :mod:`biblioedge.agent.desk.flow` so the flow stays testable with hand-made parts.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.desk.flow import DeskFlow, DeskMetrics, DeskSettings, Emit
from biblioedge.agent.desk.guardian import MinorPolicy
from biblioedge.agent.face_build import load_face
from biblioedge.agent.store import AsyncStore
from biblioedge.agent.supervisor import serial_scanner
from biblioedge.drivers.camera import open_camera
from biblioedge.drivers.cardprint import CardPrinter
from biblioedge.drivers.codes import frame_decoder
from biblioedge.keys import load_or_create_key
from biblioedge.provisioning.sealing import load_x25519_public

log = logging.getLogger("biblioedge.agent.desk")


def desk_settings(cfg: AgentConfig) -> DeskSettings:
    d = cfg.desk
    return DeskSettings(
        librarian=d.librarian,
        library_name=d.library_name,
        consent_version=d.consent_version,
        keep_fields=tuple(d.keep_fields),
        card_photo=d.card_photo,
        card_valid_days=d.card_valid_days,
        templates=d.templates,
        face_threshold=d.face_threshold,
        seal_key=load_x25519_public(cfg.security.seal_key) if cfg.security.seal_key else None,
        device_id=cfg.device_id,
        minors=MinorPolicy(d.majority_age, d.own_consent_from, d.face_for_minors, d.timezone),
    )


async def build_desk(
    cfg: AgentConfig, store: AsyncStore, emit: Emit, registry: CollectorRegistry
) -> tuple[DeskFlow, list[Any]]:
    d = cfg.desk
    chip = None
    if d.chip:
        from biblioedge.drivers.cccd.card import PcscChip, load_trust_store

        chip = PcscChip(d.reader, load_trust_store(d.csca_dir) or None)
    face = await load_face(cfg)
    pepper = load_or_create_key(d.pepper_file or cfg.data_dir / "keys" / "citizen.pepper")
    flow = DeskFlow(
        chip=chip,
        camera=open_camera(d.camera, fps=d.camera_fps),
        face=face,
        decoder=frame_decoder("zxing") if d.qr_from_camera else None,
        emit=emit,
        store=store,
        printer=CardPrinter(d.printer),
        pepper=pepper,
        settings=desk_settings(cfg),
        metrics=DeskMetrics(registry),
    )
    closables: list[Any] = [face]
    scanner = serial_scanner(d.scanner, flow.scanned)
    if scanner is not None:
        closables.append(scanner)
    log.info(
        "desk ready: chip %s, printer %s, keeps %s",
        "on" if chip else "off",
        d.printer,
        ",".join(d.keep_fields) or "name only",
    )
    return flow, closables

"""``biblioedge cccd …``: CCCD diagnostics for the desk and IT (QR, MRZ, BAC keys)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

# what a command runs is imported inside its function (why: cli/agent.py)


def _out(doc: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    else:
        for key, value in doc.items():
            sys.stdout.write(f"{key:>16}: {value}\n")


def cmd_cccd(args: argparse.Namespace) -> int:
    from biblioedge.drivers.cccd.bac import bac_keys
    from biblioedge.drivers.cccd.mrz import parse_mrz_information, parse_td1
    from biblioedge.drivers.cccd.qr import expiry_candidates, parse_qr

    if args.cccd_cmd == "parse-qr":
        q = parse_qr(args.payload)
        doc: dict[str, Any] = q.as_dict() | {
            "document_number": q.document_number,
            "can": q.can,
            "expiry_candidates": [
                d.isoformat() if d else "none"
                for d in expiry_candidates(q.date_of_birth, q.issue_date)
            ]
            if q.issue_date
            else [],
        }
        _out(doc, args.json)
    elif args.cccd_cmd == "parse-mrz":
        td1 = parse_td1(args.text)
        _out(td1.as_dict() | {"mrz_information": td1.mrz_information()}, args.json)
    elif args.cccd_cmd == "read":
        return _read(args)
    elif args.cccd_cmd == "simulate":
        return _simulate(args)
    elif args.cccd_cmd == "bac-keys":
        number, birth, expiry = parse_mrz_information(args.mrz_info)
        info = args.mrz_info.strip().upper()
        _out(
            {
                "mrz_information": info,
                "document_number": number,
                "date_of_birth": birth,
                "date_of_expiry": expiry,
            }
            | bac_keys(info).as_hex(),
            args.json,
        )
    return 0


def _read(args: argparse.Namespace) -> int:
    from cryptography import x509

    from biblioedge.drivers.cccd.card import keys_from_qr, read_card

    can = args.can
    if args.mrz_info:
        infos = [args.mrz_info.strip().upper()]
    else:
        from biblioedge.drivers.cccd.qr import parse_qr

        qr = parse_qr(args.qr)
        infos = keys_from_qr(qr)
        can = can or qr.can
    csca = [x509.load_pem_x509_certificate(Path(p).read_bytes()) for p in args.csca or []]
    last = [""]

    def progress(name: str, done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if name != last[0] or pct == 100:
            sys.stderr.write(f"reading {name}: {done}/{total} bytes\n")
            last[0] = name if pct < 100 else ""

    card = read_card(infos, can=can, reader=args.reader, csca=csca, progress=progress)
    doc = card.summary()
    if args.json:
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    else:
        pa = doc["passive_authentication"]
        sys.stdout.write(
            f"read in {doc['seconds']} s ({doc['access']}, {doc['apdus']} APDUs): "
            f"{doc['id_number']} "
            f"{doc['personal'].get('full_name', '')}\n"
            f"passive authentication: hashes {pa['hashes']}, signature {pa['signature']}, "
            f"chain {pa['chain']}\n"
        )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    """Put the demo citizen's card on the virtual reader until Ctrl-C."""

    from cryptography.hazmat.primitives import serialization

    from biblioedge.drivers.cccd.chipsim import CccdChip, VpcdCard
    from biblioedge.drivers.cccd.simdata import chip_files, demo_citizen, make_pki

    photo = args.photo.read_bytes() if args.photo else _demo_photo()
    citizen, qr = demo_citizen(photo)
    pki = make_pki()
    files = citizen.files(pki)
    if args.csca_out:
        args.csca_out.write_bytes(pki.csca.public_bytes(serialization.Encoding.PEM))
    chip = CccdChip(
        citizen.mrz_information(), chip_files(files), can=None if args.bac_only else citizen.can
    )
    card = VpcdCard(chip, port=args.port)
    card.insert()
    sys.stdout.write(f"card on the reader. --mrz-info {citizen.mrz_information()}\n--qr '{qr}'\n")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    card.remove()
    return 0


def _demo_photo() -> bytes:
    import cv2
    import numpy as np

    img = np.full((320, 240, 3), 200, np.uint8)
    cv2.circle(img, (120, 150), 70, (150, 170, 200), -1)
    ok, jpeg = cv2.imencode(".jpg", img)
    return jpeg.tobytes()


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cccd",
        help="citizen ID card (CCCD) diagnostics",
        description="Parse a CCCD QR payload or TD1 MRZ (every check digit verified), or derive "
        "the BAC keys a chip read would use.",
    )
    c = p.add_subparsers(dest="cccd_cmd", required=True, metavar="ACTION")
    a = c.add_parser("parse-qr", help="parse the QR payload on the back of a CCCD")
    a.add_argument("payload", help="the text the QR code holds")
    a.add_argument("--json", action="store_true")
    a = c.add_parser("parse-mrz", help="parse a TD1 MRZ (3 x 30 characters, newline-separated)")
    a.add_argument("text", help="the MRZ lines (TD1), newline-separated")
    a.add_argument("--json", action="store_true")
    a = c.add_parser("read", help="read the chip: PACE or BAC, data groups, passive authentication")
    a.add_argument("--reader", help="part of the PC/SC reader name (default: first with a card)")
    keys = a.add_mutually_exclusive_group(required=True)
    keys.add_argument("--mrz-info", help="document number+cd, birth+cd, expiry+cd (24 chars)")
    keys.add_argument(
        "--qr", help="the card's QR payload: CAN for PACE, BAC keys with expiry candidates"
    )
    a.add_argument("--can", help="card access number for PACE (default: last 6 ID digits)")
    a.add_argument("--csca", action="append", type=Path, help="trusted CSCA certificate (PEM)")
    a.add_argument("--json", action="store_true")
    a = c.add_parser("simulate", help="put a simulated citizen's card on the vpcd virtual reader")
    a.add_argument("--port", type=int, default=35963, help="vpcd port (default 35963)")
    a.add_argument("--photo", type=Path, help="JPEG for DG2 (default: a drawn face)")
    a.add_argument("--csca-out", type=Path, help="write the test CSCA certificate here (PEM)")
    a.add_argument("--bac-only", action="store_true", help="a chip without PACE (older cards)")
    a = c.add_parser("bac-keys", help="K_seed, K_enc, K_mac from the MRZ information")
    a.add_argument(
        "--mrz-info",
        required=True,
        help="document number + check digit + YYMMDD birth + cd + YYMMDD expiry + cd",
    )
    a.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cccd)

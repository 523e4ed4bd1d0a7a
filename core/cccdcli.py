"""``biblioedge cccd …``: CCCD diagnostics for the desk and IT (QR, MRZ, BAC keys)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


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


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cccd",
        help="citizen ID card (CCCD) diagnostics",
        description="Parse a CCCD QR payload or TD1 MRZ (every check digit verified), or derive "
        "the BAC keys a chip read would use.",
    )
    c = p.add_subparsers(dest="cccd_cmd", required=True, metavar="ACTION")
    a = c.add_parser("parse-qr", help="parse the QR payload on the back of a CCCD")
    a.add_argument("payload")
    a.add_argument("--json", action="store_true")
    a = c.add_parser("parse-mrz", help="parse a TD1 MRZ (3 x 30 characters, newline-separated)")
    a.add_argument("text")
    a.add_argument("--json", action="store_true")
    a = c.add_parser("bac-keys", help="K_seed, K_enc, K_mac from the MRZ information")
    a.add_argument(
        "--mrz-info",
        required=True,
        help="document number + check digit + YYMMDD birth + cd + YYMMDD expiry + cd",
    )
    a.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cccd)

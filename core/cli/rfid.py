"""``biblioedge rfid …``: read what a library tag says, make the bytes for one, and see what
a reader has on its pad, for IT and librarians at install and tagging time."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# what a command runs is imported inside its function (why: cli/agent.py)


def _out(doc: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
        return
    for entry in doc if isinstance(doc, list) else [doc]:
        for key, value in entry.items():
            sys.stdout.write(f"{key:>20}: {value}\n")
        sys.stdout.write("\n" if isinstance(doc, list) else "")


def _usage(text: str) -> int:
    from biblioedge.drivers.rfid.iso28560 import USAGE

    names = {v: k for k, v in USAGE.items()}
    if text in names:
        return names[text]
    try:
        return _byte(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a byte (0x10) or one of {', '.join(sorted(names))}"
        ) from None


def _byte(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number like 0x07") from None
    if not 0 <= value <= 0xFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not one byte")
    return value


def cmd_decode(args: argparse.Namespace) -> int:
    from biblioedge.drivers.rfid.iso28560 import TagDataError, decode

    text = "".join(args.hex.split()).removeprefix("0x")
    try:
        memory = bytes.fromhex(text)
    except ValueError:
        sys.stderr.write("biblioedge: tag memory is hex digits, two per byte\n")
        return 2
    try:
        data = decode(memory, dsfid=args.dsfid, model=args.model)
    except TagDataError as exc:
        doc = {"ok": False, "error": str(exc), "offset": exc.offset}
        _out(doc, args.json)
        return 4
    _out({"ok": True, **data.to_json()}, args.json)
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from biblioedge.drivers.rfid.iso28560 import TagData, decode, encode

    elements = {}
    for pair in args.element or []:
        name, sep, value = pair.partition("=")
        if not sep:
            sys.stderr.write(f"biblioedge: --element {pair!r}: NAME=VALUE\n")
            return 2
        elements[name] = value
    if args.title:
        elements["title"] = args.title
    parts, part = 1, 1
    if args.set:
        total, sep, ordinal = args.set.partition("/")
        if not (sep and total.isdigit() and ordinal.isdigit()):
            sys.stderr.write(f"biblioedge: --set {args.set!r}: PARTS/PART, like 2/1\n")
            return 2
        parts, part = int(total), int(ordinal)
    try:
        tag = TagData(
            args.item,
            model=args.model,
            owner_institution=args.owner,
            parts=parts,
            part=part,
            type_of_usage=args.usage,
            elements=elements,
        )
        memory = encode(tag)
    except ValueError as exc:
        sys.stderr.write(f"biblioedge: {exc}\n")
        return 2
    doc = {
        "hex": memory.hex().upper(),
        "bytes": len(memory),
        "blocks": len(memory) // 4,
        "decoded": decode(memory, model=args.model).to_json(),
    }
    _out(doc, args.json)
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from biblioedge.drivers.errors import DriverError
    from biblioedge.drivers.rfid.m810 import M810Reader
    from biblioedge.drivers.rfid.reader import AfiScheme, read_item

    sim = None
    port = args.port
    if port == "sim":
        from biblioedge.drivers.rfid.sim import M810Simulator, catalogue_tags
        from biblioedge.drivers.sip2.dummy import CATALOGUE, NOT_OFFLINE, SETS

        tags = catalogue_tags(CATALOGUE, sets=SETS, not_offline=NOT_OFFLINE)
        sim = M810Simulator([t for item in list(tags)[:3] for t in tags[item]]).start()
        port = sim.port
    scheme = AfiScheme(secured=args.afi_secured, loaned=args.afi_loaned)
    try:
        reader = M810Reader(port)
        try:
            found = []
            for uid in reader.inventory():
                item = read_item(reader, uid, scheme)
                found.append(
                    {
                        "uid": item.uid,
                        "item": item.item_id,
                        "security": item.security,
                        "afi": f"0x{item.afi:02X}" if item.afi is not None else None,
                        "error": item.error,
                        "data": item.data.to_json() if item.data else None,
                    }
                )
        finally:
            reader.close()
    except DriverError as exc:
        sys.stderr.write(f"biblioedge: {exc}\n")
        return 1
    finally:
        if sim is not None:
            sim.stop()
    _out(found, args.json)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "rfid",
        help="RFID item tags: decode, encode, scan a reader's pad",
        description="ISO 28560 library tags (part 2, ISO/IEC 15962 data sets; part 3, the "
        "fixed 32-byte model) and the 3M 810 reader. Exit 0 when done, 4 when the tag data "
        "is not valid (the message names the byte), 1 when the reader cannot be used, 2 for "
        "bad arguments.",
    )
    c = p.add_subparsers(dest="rfid_cmd", required=True, metavar="ACTION")
    d = c.add_parser("decode", help="tag memory (hex) → item id, owner ISIL, set, usage, …")
    d.add_argument("hex", help="the tag's user memory as hex digits (spaces allowed)")
    d.add_argument("--model", choices=["28560-2", "28560-3"], help="default: detect")
    d.add_argument("--dsfid", type=_byte, help="the tag's DSFID (0x06: ISO 28560-2)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_decode)
    e = c.add_parser("encode", help="the tag memory for an item")
    e.add_argument("--item", required=True, help="primary item id (the barcode)")
    e.add_argument("--owner", help="owner institution ISIL, like VN-TVTN")
    e.add_argument("--set", help="PARTS/PART for a multi-part item, like 2/1")
    e.add_argument(
        "--usage",
        type=_usage,
        help="type of usage (ISO 28560-1): circulation, circulation_not_offline, "
        "not_for_circulation, discarded, patron_card, … or a byte like 0x15",
    )
    e.add_argument("--title", help="title (UTF-8)")
    e.add_argument(
        "--element", action="append", help="any other element, NAME=VALUE (shelf_location=…)"
    )
    e.add_argument(
        "--model",
        choices=["28560-2", "28560-3"],
        default="28560-2",
        help="the data model (default 28560-2)",
    )
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_encode)
    s = c.add_parser("scan", help="every tag on a reader's pad, decoded, with its security")
    s.add_argument(
        "--port",
        default="/dev/ttyUSB0",
        help="the 3M 810 reader's serial port; 'sim' for a simulated pad with demo items",
    )
    s.add_argument("--afi-secured", type=_byte, default=0x07, help="AFI on the shelf (0x07)")
    s.add_argument("--afi-loaned", type=_byte, default=0xC2, help="AFI when lent (0xC2)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_scan)

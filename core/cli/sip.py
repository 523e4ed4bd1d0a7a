"""``biblioedge sip …``: talk SIP2 to the library system as a self-check would, for IT at
install time (is the account right? does a loan go through?), and ``sip serve`` for the dummy
library system the demo and the tests use."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

# what a command runs is imported inside its function (why: cli/agent.py)

ENV_URL = "BIBLIOEDGE_ILS"


def _out(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
        return
    for key, value in doc.items():
        sys.stdout.write(f"{key:>16}: {value}\n")


def cmd_sip(args: argparse.Namespace) -> int:
    from biblioedge.drivers.sip2.client import Account, LoginRefused
    from biblioedge.drivers.sip2.codec import Sip2Error
    from biblioedge.drivers.sip2.library import Sip2Library, as_json

    if args.sip_cmd == "serve":
        from biblioedge.drivers.sip2.dummy import serve

        sys.stdout.write(f"dummy library system (SIP2, UTF-8) on {args.host}:{args.port}\n")
        sys.stdout.flush()
        try:
            if args.rest_port is not None:
                sys.stdout.write(
                    f"Koha-shaped patron API on http://{args.host}:{args.rest_port}/api/v1 "
                    "(koha / koha)\n"
                )
                sys.stdout.flush()
            asyncio.run(
                serve(
                    args.port,
                    args.host,
                    patron_info=args.patron_info,
                    rest_port=args.rest_port,
                    patrons_file=args.patrons_file,
                    summary=not args.without_summary,
                    renew_all=not args.without_renew_all,
                )
            )
        except KeyboardInterrupt:
            pass
        except OSError as exc:  # the port is taken, the address is not ours
            sys.stderr.write(f"biblioedge: cannot serve on {args.host}:{args.port}: {exc}\n")
            return 1
        return 0
    url = args.ils or os.environ.get(ENV_URL)
    if not url:
        return _fail(args, 2, f"--ils sip2://USER:PASSWORD@HOST:PORT (or ${ENV_URL})")
    try:
        account = Account.from_url(url)
    except ValueError as exc:
        return _fail(args, 2, str(exc))
    if not args.verbose:  # the answer (or the one line of its failure) says what matters
        logging.getLogger("biblioedge.drivers.sip2").setLevel(logging.ERROR)
    lib = Sip2Library(account)
    try:
        if args.sip_cmd == "status":
            doc = as_json(lib.status())
        elif args.sip_cmd == "patron":
            doc = as_json(lib.patron(args.patron, args.patron_password))
        elif args.sip_cmd == "checkout":
            doc = as_json(lib.checkout(args.patron, args.item, fee_ack=args.fee_ack))
        elif args.sip_cmd == "checkin":
            doc = as_json(lib.checkin(args.item))
        elif args.sip_cmd == "renew":
            doc = as_json(lib.renew(args.patron, args.item))
        elif args.sip_cmd == "account":
            doc = as_json(lib.patron_account(args.patron, args.patron_password))
        elif args.sip_cmd == "renew-all":
            doc = as_json(lib.renew_all(args.patron, args.patron_password))
        else:
            doc = as_json(lib.item(args.item))
    except LoginRefused as exc:
        return _fail(args, 3, f"{exc} (check the account's user and password)")
    except Sip2Error as exc:
        return _fail(args, 1, str(exc))
    except Exception as exc:  # noqa: BLE001 - a diagnostic prints one line, never a traceback
        return _fail(args, 1, f"the library system exchange failed: {exc!r}")
    finally:
        lib.close()
    doc["round_trips"] = lib.client.round_trips
    _out(doc, args.json)
    ok = doc.get("ok", doc.get("online", doc.get("valid", True)))
    return 0 if ok or args.sip_cmd in ("item",) else 4


def _fail(args: argparse.Namespace, code: int, message: str) -> int:
    """One line on stderr; with --json also a document on stdout, so that a script reading
    stdout learns of the failure too."""
    sys.stderr.write(f"biblioedge: {message}\n")
    if args.json:
        _out({"ok": False, "error": message, "exit_code": code}, True)
    return code


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sip",
        help="SIP2 diagnostics against the library system",
        description="Talk SIP2 to the library system as a self-check does. The account is "
        "--ils sip2://USER:PASSWORD@HOST:PORT?institution=I&location=L&encoding=E "
        "(sip2s:// for TLS; also error_detection=0|1, terminator=cr|crlf, timeout=S, "
        f"cafile=PATH, patron=auto|63|23), or ${ENV_URL}. Exit 0 when the answer is yes, 4 "
        "when the library system says no, 3 when it refuses the login, 1 when it cannot be "
        "reached or gives no usable answer, 2 for bad arguments; a failure is one line on "
        "stderr.",
    )
    c = p.add_subparsers(dest="sip_cmd", required=True, metavar="ACTION")

    def action(name: str, text: str, *args: str) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = c.add_parser(name, help=text)
        for arg in args:
            a.add_argument(arg, help=f"the {arg}'s barcode")
        a.add_argument("--ils", help="the account URL (default $BIBLIOEDGE_ILS)")
        a.add_argument("--json", action="store_true")
        a.add_argument("--verbose", action="store_true", help="log the exchange's detours")
        a.set_defaults(func=cmd_sip)
        return a

    action("status", "is the library system online, and what does it support (99/98)")
    a = action(
        "patron",
        "the reader's status: valid, name, blocks, fees (63/64; 23/24 where the library "
        "system cannot answer 63)",
        "patron",
    )
    a.add_argument("--patron-password", help="the reader's PIN, when the library asks one")
    a = action("checkout", "lend an item to a reader (11/12)", "patron", "item")
    a.add_argument("--fee-ack", action="store_true", help="the reader accepted the charge (BO=Y)")
    action("checkin", "return an item (09/10)", "item")
    action("renew", "renew a reader's loan (29/30)", "patron", "item")
    action("item", "an item's status and title (17/18)", "item")
    a = action(
        "account",
        "the reader's loans with due dates, holds waiting and fees, as the self-check's "
        '"my account" shows them (63 with a summary, 17 per loan)',
        "patron",
    )
    a.add_argument("--patron-password", help="the reader's PIN, when the library asks one")
    a = action("renew-all", "renew every loan of a reader (65/66)", "patron")
    a.add_argument("--patron-password", help="the reader's PIN, when the library asks one")
    s = c.add_parser(
        "serve",
        help="run the dummy library system (demo, tests)",
        description="A dummy library system speaking SIP2 (UTF-8) over TCP: ten Vietnamese "
        "titles, the demo readers, a blocked reader, one with fees, an item on hold and one "
        "with a loan charge. Account kiosk / kiosk.",
    )
    s.add_argument("--port", type=int, default=6001, help="TCP port (default 6001)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    s.add_argument(
        "--patron-info",
        choices=["yes", "drop", "resend", "other", "unsupported"],
        default="yes",
        help="answer 63 as a server without it does: drop the connection, 96 for ever, an "
        "ACS status instead, or pysip2's empty 64 (default: answer it)",
    )
    s.add_argument(
        "--rest-port",
        type=int,
        default=None,
        help="also serve a Koha-shaped patron API (/api/v1/patrons, Basic auth koha / koha) on "
        "this port: central pushes its readers there as to a library's Koha, and the SIP2 side "
        "then knows them",
    )
    s.add_argument(
        "--without-summary",
        action="store_true",
        help="answer 63 with counts only, never the lists its summary asks for (as servers "
        "that ignore it)",
    )
    s.add_argument(
        "--without-renew-all", action="store_true", help="leave 65 (renew all) unanswered"
    )
    s.add_argument(
        "--patrons-file",
        type=Path,
        help="keep the patrons central pushed in this JSON file across restarts",
    )
    s.set_defaults(func=cmd_sip)

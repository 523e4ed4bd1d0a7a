"""``biblioedge central reader renew|replace|leave``: the card's life from central's host.

The same operations as the API (``fleet/lifecycle.py``), on central's database directly, for
the host's operator (the dashboard and the desk use the API). Kiosks follow at their next
state report: this process has no broker connection to push the change at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from biblioedge.settings import ConfigError


def _life(config: Path) -> tuple[Any, Any]:
    from biblioedge.fleet.backup.journal import journal_here
    from biblioedge.fleet.cards import Cards
    from biblioedge.fleet.config import load_central_config
    from biblioedge.fleet.lifecycle import Lifecycle
    from biblioedge.fleet.readers import Readers
    from biblioedge.fleet.repo import Repo
    from biblioedge.keys import load_or_create_key

    cfg = load_central_config(config)
    key = load_or_create_key(cfg.data_dir / "keys" / "templates.key")
    repo = Repo(cfg.db_url)
    repo.migrate(key)
    journal_here(cfg, repo.engine, "cli")  # a change made here survives a restore too
    readers = Readers(repo, key)
    cards = Cards(readers, load_or_create_key(cfg.data_dir / "keys" / "cards.key"))
    return repo, Lifecycle(readers, cards)


def _cmd_reader(args: argparse.Namespace) -> int:
    from biblioedge.fleet.cards import CardError
    from biblioedge.fleet.readers import ReaderError, UnknownReader

    if args.reader_command == "leave" and not args.yes:
        raise ConfigError("leaving erases the reader everywhere: add --yes")
    repo, life = _life(args.config)
    try:
        if args.reader_command == "renew":
            out = life.renew(args.patron, days=args.days)
        elif args.reader_command == "replace":
            out = life.replace(args.patron, barcode=args.barcode, days=args.days)
        else:
            out = life.leave(args.patron)
    except UnknownReader as exc:
        raise ConfigError(f"no reader {args.patron}") from exc
    except (ReaderError, CardError) as exc:
        raise ConfigError(str(exc)) from exc
    finally:
        repo.close()
    doc = {
        "patron_id": out.patron_id,
        "site": out.site,
        "expires_at": out.expires_at,
        "revoked": out.revoked,
        "card": out.card,
    }
    sys.stdout.write(json.dumps(doc, default=str, ensure_ascii=False) + "\n")
    return 0


def register_central(sub: Any) -> None:
    """``reader renew|replace|leave`` under ``central``'s subcommands."""
    r = sub.add_parser(
        "reader",
        help="the card's life: renew, replace a lost card, erase a reader who leaves",
        description="On central's host, on its database (--config). Every branch's kiosks "
        "follow at their next state report. Prints JSON; a new card's token is shown once.",
    ).add_subparsers(dest="reader_command", required=True, metavar="renew|replace|leave")
    for name, text in (
        ("renew", "a new expiry, DAYS from today, and a card valid to it"),
        ("replace", "lost card: every live card revoked, the old barcode dropped, a new card"),
        ("leave", "erase the reader at central and every kiosk; queue it for the ILS"),
    ):
        c = r.add_parser(name, help=text, description=text)
        c.add_argument("patron", help="patron number")
        c.add_argument("--config", type=Path, required=True, help="central TOML file")
        if name != "leave":
            c.add_argument("--days", type=int, default=365 * 4, help="card validity, days")
        if name == "replace":
            c.add_argument("--barcode", help="the new card's barcode (default: none)")
        if name == "leave":
            c.add_argument("--yes", action="store_true", help="yes, erase everywhere")
        c.set_defaults(func=_cmd_reader)

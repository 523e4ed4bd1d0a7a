"""CLI for identity: ``central init``, ``central token …``, ``provision token``, ``enroll``,
``rekey``."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import tomllib
from pathlib import Path
from typing import Any

from biblioedge.cli import alerts as alertscli
from biblioedge.cli import backup
from biblioedge.cli import ils as ilscli
from biblioedge.cli import readers as readercli
from biblioedge.cli import report as reportcli
from biblioedge.settings import ConfigError

# what a command runs is imported inside its function (why: cli/agent.py)


def _central(args: argparse.Namespace) -> tuple[Any, Any]:
    from biblioedge.fleet.backup.journal import journal_here
    from biblioedge.fleet.config import load_central_config
    from biblioedge.fleet.repo import Repo
    from biblioedge.keys import load_or_create_key

    cfg = load_central_config(args.config)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    repo = Repo(cfg.db_url)
    repo.migrate(load_or_create_key(cfg.data_dir / "keys" / "templates.key"))
    journal_here(cfg, repo.engine, "cli")  # a change made here survives a restore too
    return cfg, repo


def _out(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    sys.stdout.write(
        (json.dumps(doc, default=str, ensure_ascii=False) if args.json else text) + "\n"
    )


def _cmd_init(args: argparse.Namespace) -> int:
    from biblioedge.fleet.central import open_identity

    cfg, repo = _central(args)
    try:
        identity, _ = open_identity(cfg, repo)
    finally:
        repo.close()
    _out(
        args,
        {"ca_pin": identity.ca_pin, "broker_dir": str(cfg.broker_dir)},
        f"central's device CA pin sha256:{identity.ca_pin}\nbroker files in {cfg.broker_dir}",
    )
    return 0


def _cmd_token_create(args: argparse.Namespace) -> int:
    from biblioedge.fleet.auth import TokenError, Tokens

    _, repo = _central(args)
    try:
        token_id, token = Tokens(repo.engine).create(args.name, args.role)
    except TokenError as exc:
        raise ConfigError(str(exc)) from exc
    finally:
        repo.close()
    _out(
        args,
        {"token_id": token_id, "name": args.name, "role": args.role, "token": token},
        token,
    )
    return 0


def _cmd_token_list(args: argparse.Namespace) -> int:
    from biblioedge.fleet.auth import Tokens

    _, repo = _central(args)
    try:
        rows = Tokens(repo.engine).list()
    finally:
        repo.close()
    if args.json:
        sys.stdout.write(json.dumps(rows, default=str) + "\n")
    else:
        for r in rows:
            state = f"revoked {r['revoked_at']:%Y-%m-%d}" if r["revoked_at"] else "active"
            sys.stdout.write(f"{r['token_id']}  {r['role']:<9}  {r['name']}  ({state})\n")
    return 0


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    from biblioedge.fleet.auth import Tokens

    _, repo = _central(args)
    try:
        n = Tokens(repo.engine).revoke(args.token)
    finally:
        repo.close()
    if n == 0:
        sys.stderr.write(f"biblioedge: no active token {args.token!r}\n")
        return 1
    sys.stdout.write(f"revoked {n} token(s)\n")
    return 0


def _cmd_provision_token(args: argparse.Namespace) -> int:
    """An enrollment token: through central's API, or straight from its database on its host."""
    if args.central:
        import httpx

        api_token = args.api_token or os.environ.get("BIBLIOEDGE_API_TOKEN")
        if not api_token:
            raise ConfigError(
                "--central needs an admin API token (--api-token or BIBLIOEDGE_API_TOKEN)"
            )
        body = {"device_id": args.device, "site": args.site, "role": args.role, "ttl_s": args.ttl}
        try:
            resp = httpx.post(
                args.central.rstrip("/") + "/api/v1/enrollments",
                json=body,
                headers={"Authorization": f"Bearer {api_token}"},
                verify=ssl.create_default_context(cafile=args.cacert) if args.cacert else True,
                timeout=10,
            )
        except httpx.HTTPError as exc:
            hint = ""
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                hint = (
                    " (central's certificate is signed by its own CA: give it with "
                    "--cacert: keys/device-ca.crt in its data directory)"
                    if not args.cacert
                    else f" ({args.cacert} is not the CA that signed central's certificate)"
                )
            raise ConfigError(f"cannot reach central at {args.central}: {exc}{hint}") from exc
        if resp.status_code != 201:
            sys.stderr.write(
                f"biblioedge: central refused ({resp.status_code}): {resp.text[:300]}\n"
            )
            return 1
        doc = resp.json()
    elif args.config:
        from biblioedge.fleet.central import open_identity
        from biblioedge.fleet.enrollments import EnrollmentError

        cfg, repo = _central(args)
        try:
            _, registry = open_identity(cfg, repo)
            doc = registry.create_token(
                args.device, args.site, args.role, "cli", args.ttl or cfg.security.enrollment_ttl_s
            )
        except EnrollmentError as exc:
            sys.stderr.write(f"biblioedge: {exc}\n")
            return 1
        finally:
            repo.close()
    else:
        raise ConfigError("give --central URL (with an admin API token) or --config central.toml")
    _out(
        args,
        doc,
        f"{doc['token']}\n(one use, for {doc['device_id']} ({doc['role']} at {doc['site']}), "
        f"until {doc['expires_at']})",
    )
    return 0


def _cmd_enroll(args: argparse.Namespace) -> int:
    from biblioedge.provisioning.enroll import enroll

    def say(msg: str) -> None:
        sys.stderr.write(f"enroll: {msg}\n")
        sys.stderr.flush()

    data = args.data.resolve()
    bundle = enroll(args.central, args.token, data, args.config, progress=say)
    _out(
        args,
        {k: bundle[k] for k in ("device_id", "site", "role", "not_after", "broker_url")},
        f"{bundle['device_id']} enrolled ({bundle['role']} at {bundle['site']}); certificate "
        f"valid until {bundle['not_after']}",
    )
    return 0


def _cmd_rekey(args: argparse.Namespace) -> int:
    from biblioedge.provisioning.enroll import EnrollError, IdentityFiles, renew

    data = args.data.resolve()
    central = args.central
    if central is None:
        conf = args.config or data / "agent.toml"
        try:
            central = tomllib.loads(conf.read_text(encoding="utf-8"))["security"]["central_url"]
        except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"no security.central_url in {conf}: give --central") from exc
    files = IdentityFiles(data / "identity")
    if not files.present():
        raise ConfigError(f"no identity in {files.root}: enroll the kiosk first")
    try:
        until = renew(central, files, rekey=True)
    except EnrollError as exc:
        if "rekey_pending" not in str(exc):
            raise
        _out(args, {"state": "pending", "detail": str(exc)}, str(exc))
        return 0
    _out(
        args,
        {"state": "approved", "not_after": until},
        f"re-keyed: the new key is in use, certificate valid until {until}",
    )
    return 0


def register_central(p: argparse.ArgumentParser) -> None:
    """``central init`` and ``central token create|list|revoke`` under ``central``, and the
    other ``central`` commands (``backup``, ``restore``, ``ils``, ``reader``, ``report``)."""
    sub = p.add_subparsers(
        dest="central_command", metavar="[init|token|backup|restore|ils|reader|report]"
    )
    i = sub.add_parser(
        "init",
        help="create central's keys and device CA, write the broker's files",
        description="Idempotent: creates what is missing (device CA, control and sealing keys, "
        "TLS certificates of the bridge, HTTPS and broker) and rewrites the broker's ACL and "
        "CRL from the device registry. Prints the CA pin.",
    )
    i.add_argument("--config", type=Path, required=True, help="central TOML file")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_cmd_init)
    t = sub.add_parser("token", help="named API tokens with roles").add_subparsers(
        dest="token_command", required=True, metavar="create|list|revoke"
    )
    c = t.add_parser("create", help="make a token (printed once)")
    c.add_argument("--config", type=Path, required=True, help="central TOML file")
    c.add_argument("--name", required=True, help="who or what uses it (shown in the audit)")
    c.add_argument(
        "--role",
        required=True,
        choices=["admin", "librarian", "viewer"],
        help="what the token may do",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_token_create)
    ls = t.add_parser("list", help="tokens, their roles and state (never the tokens)")
    ls.add_argument("--config", type=Path, required=True, help="central TOML file")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_token_list)
    r = t.add_parser("revoke", help="revoke a token by id or name")
    r.add_argument("token", help="token id or name")
    r.add_argument("--config", type=Path, required=True, help="central TOML file")
    r.set_defaults(func=_cmd_token_revoke)
    backup.register_central(sub)
    alertscli.register_central(sub)
    ilscli.register_central(sub)
    readercli.register_central(sub)
    reportcli.register_central(sub)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "provision",
        help="device identity: enrollment tokens",
        description="Make the one-time token a kiosk enrolls with.",
    ).add_subparsers(dest="provision_command", required=True, metavar="token")
    t = p.add_parser(
        "token",
        help="a one-time enrollment token for one kiosk",
        description="Through central's API (--central URL with an admin API token) or, on "
        "central's own host, from its database (--config central.toml). The token is bound "
        "to the device, site and role, single use, short-lived, and carries the pin of "
        "central's CA.",
    )
    t.add_argument("--site", required=True, help="the branch the kiosk stands in")
    t.add_argument(
        "--role",
        required=True,
        choices=["gate", "selfcheck", "desk", "exitgate"],
        help="the kiosk's role",
    )
    t.add_argument("--device", required=True, help="device id")
    t.add_argument("--ttl", type=int, help="seconds the token is valid (default: central's)")
    t.add_argument("--central", help="central's URL, https://host:port")
    t.add_argument("--api-token", help="admin API token (or BIBLIOEDGE_API_TOKEN)")
    t.add_argument("--cacert", type=Path, help="central's CA to verify its HTTPS")
    t.add_argument("--config", type=Path, help="central TOML file (on central's host)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_cmd_provision_token)

    e = sub.add_parser(
        "enroll",
        help="enroll this kiosk with central",
        description="Make this kiosk's key (it never leaves the kiosk), send a certificate "
        "request with the enrollment token over HTTPS (central checked against the token's "
        "CA pin), and write <data>/identity/ and the agent config.",
    )
    e.add_argument("--central", required=True, help="central's URL, https://host:port")
    e.add_argument("--token", required=True, help="from `biblioedge provision token`")
    e.add_argument("--data", type=Path, default=Path("/var/lib/biblioedge"), help="data dir")
    e.add_argument("--config", type=Path, help="agent config to write (default <data>/agent.toml)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_cmd_enroll)

    r = sub.add_parser(
        "rekey",
        help="ask central to certify a new key for this kiosk (IT approves)",
        description="Make a new key (kept as identity/device.key.pending) and ask central to "
        "certify it. Central refuses until IT approves the request (API /rekey-requests); the "
        "running agent, or this command run again, then fetches the certificate and switches "
        "to the new key. Renewals certify the current key and need no approval.",
    )
    r.add_argument("--central", help="central's URL (default security.central_url)")
    r.add_argument("--data", type=Path, default=Path("/var/lib/biblioedge"), help="data dir")
    r.add_argument("--config", type=Path, help="agent config (default <data>/agent.toml)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cmd_rekey)

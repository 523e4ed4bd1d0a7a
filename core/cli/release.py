"""``biblioedge release …``: build, sign and upload releases (IT, on the signing machine).

    release init    new root and targets keys; the first root, naming central's online keys
    release build   a software release: biblioedge's wheel and its locked wheels
    release sign    the next targets metadata for software, model or config releases
    release upload  artifacts, then the signed metadata (and a new root), to central
    release list    what central serves

Signing and uploading are separate on purpose: the keys directory can stay on a machine that
never talks to central; a bundle directory carries the result across.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import ssl
import sys
from pathlib import Path
from typing import Any

from biblioedge.settings import ConfigError

# what a command runs is imported inside its function (why: cli/agent.py)


class Central:
    """Central's release API with an admin token."""

    def __init__(self, url: str, token: str | None, cacert: Path | None) -> None:
        import httpx

        token = token or os.environ.get("BIBLIOEDGE_API_TOKEN")
        if not token:
            raise ConfigError("an admin API token is needed (--api-token or BIBLIOEDGE_API_TOKEN)")
        verify: Any = ssl.create_default_context(cafile=cacert) if cacert else True
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=httpx.Timeout(60.0, connect=10.0),
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ConfigError(f"central at {self.http.base_url}: {exc}") from exc
        if resp.status_code >= 300:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ConfigError(f"central refused {method} {path}: {resp.status_code} {detail}")
        return resp.json()

    def raw(self, path: str) -> bytes | None:
        resp = self.http.get(path)
        return resp.content if resp.status_code == 200 else None


def _central(args: argparse.Namespace) -> Central:
    if not args.central:
        raise ConfigError("--central URL is needed")
    return Central(args.central, args.api_token, args.cacert)


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")


def _out(args: argparse.Namespace, doc: Any, text: str) -> None:
    sys.stdout.write((json.dumps(doc, ensure_ascii=False) if args.json else text) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cmd_init(args: argparse.Namespace) -> int:
    from biblioedge.provisioning.tuf_offline import SigningError, init_keys

    if args.online:
        online = json.loads(args.online.read_text())
    else:
        online = _central(args).call("GET", "/api/v1/releases/trust")["online"]
    try:
        init_keys(args.keys, online, root_days=args.root_days, targets_days=args.days)
    except SigningError as exc:
        raise ConfigError(str(exc)) from exc
    _out(
        args,
        {"keys": str(args.keys), "root_version": 1},
        f"root and targets keys in {args.keys} (keep them offline)\n"
        f"upload the root: biblioedge release upload {args.keys} --root-only --central URL",
    )
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from biblioedge.provisioning.release_build import BuildError, build_software

    try:
        release = build_software(
            args.source,
            args.out,
            arches=tuple(args.arch or ("x86_64", "aarch64")),
            roles=tuple(args.role or ("gate", "selfcheck")),
            with_dependencies=not args.no_deps,
            say=_say,
        )
    except BuildError as exc:
        raise ConfigError(str(exc)) from exc
    count = len({f for roles in release.wheels.values() for fs in roles.values() for f in fs})
    _out(
        args,
        {"version": release.version, "dir": str(args.out), "wheels": count},
        f"software release {release.version} in {args.out} ({count} wheels)",
    )
    return 0


def software_targets(folder: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The targets of a built software release directory (``release build``'s output)."""
    from biblioedge.releases import SoftwareRelease, software_target, wheel_target

    try:
        release = SoftwareRelease.model_validate_json((folder / "release.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder}/release.json: {exc}") from exc
    add: dict[str, tuple[Path, dict[str, Any]]] = {
        software_target(release.version): (
            folder / "release.json",
            {"kind": "software", "name": "biblioedge", "version": release.version},
        )
    }
    names = {f for roles in release.wheels.values() for fs in roles.values() for f in fs}
    for name in sorted(names | {release.pip}):
        wheel = folder / "wheels" / name
        if not wheel.is_file():
            raise ConfigError(f"{wheel} is named in release.json but missing")
        add[wheel_target(name)] = (wheel, {"kind": "wheel"})
    return add


def model_targets(manifest: Path, blob: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    from biblioedge.models.manifest import load_manifest
    from biblioedge.releases import model_targets as names

    m = load_manifest(manifest)
    if _sha256(blob) != m.sha256:
        raise ConfigError(f"{blob} does not match the sha256 in {manifest}")
    meta, model = names(m.name, m.version)
    custom = {"kind": "model", "name": m.name, "version": m.version, "task": m.task}
    return {meta: (manifest, custom), model: (blob, {"kind": "model_file", "name": m.name})}


def config_targets(doc: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    from biblioedge.releases import ConfigRelease, config_target

    try:
        release = ConfigRelease.model_validate_json(doc.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{doc}: {exc}") from exc
    custom = {"kind": "config", "name": release.name, "version": release.version}
    return {config_target(release.name, release.version): (doc, custom)}


def _cmd_sign(args: argparse.Namespace) -> int:
    from biblioedge.provisioning.tuf_offline import SigningError, sign_targets

    add: dict[str, tuple[Path, dict[str, Any]]] = {}
    for folder in args.software or []:
        add |= software_targets(folder)
    for manifest, blob in args.model or []:
        add |= model_targets(Path(manifest), Path(blob))
    for doc in args.config_doc or []:
        add |= config_targets(doc)
    if not add and not args.remove:
        raise ConfigError("nothing to sign: give --software, --model, --config-doc or --remove")
    base = None
    if args.central:  # start from what central serves, not only from the last signed here
        base = _central(args).raw("/tuf/metadata/" + _latest_targets_name(args))
    try:
        data = sign_targets(
            args.keys, add, base=base, remove=tuple(args.remove or ()), days=args.days
        )
    except SigningError as exc:
        raise ConfigError(str(exc)) from exc
    out: Path = args.out
    (out / "files").mkdir(parents=True, exist_ok=True)
    (out / "targets.json").write_bytes(data)
    for local, _ in add.values():
        dest = out / "files" / _sha256(local)
        if not dest.exists():
            shutil.copyfile(local, dest)
    version = json.loads(data)["signed"]["version"]
    _out(
        args,
        {"targets_version": version, "bundle": str(out), "targets": sorted(add)},
        f"targets version {version} signed: {len(add)} target(s) in bundle {out}",
    )
    return 0


def _latest_targets_name(args: argparse.Namespace) -> str:
    info = _central(args).call("GET", "/api/v1/releases")
    version = info.get("targets_version")
    return f"{version}.targets.json" if version else "1.targets.json"


def _cmd_upload(args: argparse.Namespace) -> int:
    central = _central(args)
    bundle: Path = args.bundle
    done: dict[str, Any] = {}
    for root in sorted(bundle.glob("*.root.json"), key=lambda p: int(p.name.split(".")[0])):
        trust = central.call("GET", "/api/v1/releases/trust")
        version = int(root.name.split(".")[0])
        if trust["root_version"] is None or version > trust["root_version"]:
            done["root_version"] = central.call(
                "PUT", "/api/v1/releases/root", content=root.read_bytes()
            )["root_version"]
    targets = bundle / ("1.targets.json" if args.root_only else "targets.json")
    files = sorted((bundle / "files").glob("*")) if (bundle / "files").is_dir() else []
    total = sum(f.stat().st_size for f in files)
    sent = 0
    for f in files:
        with f.open("rb") as body:
            central.call("PUT", f"/api/v1/releases/artifacts/{f.name}", content=body)
        sent += f.stat().st_size
        _say(f"uploaded {f.name[:12]}… {sent * 100 // max(total, 1)}% of {total} bytes")
    if targets.exists():
        info = central.call("GET", "/api/v1/releases")
        signed = json.loads(targets.read_bytes())["signed"]["version"]
        if info.get("targets_version") is None or signed > info["targets_version"]:
            done |= central.call("POST", "/api/v1/releases/targets", content=targets.read_bytes())
    _out(args, done, f"uploaded: {json.dumps(done)}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    info = _central(args).call("GET", "/api/v1/releases")
    lines = [
        f"root v{info['root_version']}, targets v{info['targets_version']} "
        f"(expires {info['targets_expires']}), timestamp v{info['timestamp_version']}"
    ]
    lines += [f"{r['kind']:<9} {r['name']:<20} {r['version']}" for r in info["releases"]]
    _out(args, info, "\n".join(lines))
    return 0


def _cmd_floor(args: argparse.Namespace) -> int:
    central = _central(args)
    if args.clear or args.version:
        doc = central.call("PUT", "/api/v1/releases/floor", json={"software": args.version})
        text = f"release floor: {doc['software'] or 'none'}"
        text += f"; {doc['republished']} desired states re-signed"
        if doc["below"]:
            text += f"; desired below it (kept, never reinstalled): {', '.join(doc['below'])}"
    else:
        doc = central.call("GET", "/api/v1/releases/floor")
        text = f"release floor: {doc['software'] or 'none'}"
        if doc["set_by"]:
            text += f" (set by {doc['set_by']} at {doc['set_at']})"
    _out(args, doc, text)
    return 0


def _central_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--central", help="central's URL, https://host:port")
    p.add_argument("--api-token", help="admin API token (or BIBLIOEDGE_API_TOKEN)")
    p.add_argument("--cacert", type=Path, help="central's CA, to verify its HTTPS")
    p.add_argument("--json", action="store_true")


def register(sub: Any) -> None:
    r = sub.add_parser(
        "release",
        help="build, sign and upload releases",
        description="Releases of software, face models and configuration, signed with keys "
        "that never reach central (TUF root and targets), verified by every kiosk.",
    ).add_subparsers(dest="release_command", required=True, metavar="COMMAND")

    p = r.add_parser("init", help="new offline keys and the first root")
    p.add_argument("--keys", type=Path, required=True, help="directory for the offline keys")
    p.add_argument("--online", type=Path, help="central's online keys (JSON), instead of asking")
    p.add_argument("--root-days", type=int, default=365, help="days the root role is valid")
    p.add_argument("--days", type=int, default=90, help="life of the targets metadata")
    _central_args(p)
    p.set_defaults(func=_cmd_init)

    p = r.add_parser("build", help="a software release from a source tree")
    p.add_argument("--source", type=Path, default=Path("."), help="biblioedge's source tree")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--arch",
        action="append",
        choices=["x86_64", "aarch64"],
        help="repeat for each (default both)",
    )
    p.add_argument(
        "--role",
        action="append",
        choices=["gate", "selfcheck", "desk", "exitgate"],
        help="repeat for each (default gate and selfcheck)",
    )
    p.add_argument(
        "--no-deps", action="store_true", help="biblioedge's wheel alone (tests and benchmarks)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_build)

    p = r.add_parser("sign", help="sign the next targets metadata into a bundle")
    p.add_argument("--keys", type=Path, required=True, help="the offline keys directory")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--software", type=Path, action="append", help="a 'release build' directory")
    p.add_argument(
        "--model",
        nargs=2,
        action="append",
        metavar=("MANIFEST", "FILE"),
        help="a model to sign into the release; repeat for each",
    )
    p.add_argument("--config-doc", type=Path, action="append", help="a configuration document")
    p.add_argument("--remove", action="append", help="a target path to drop")
    p.add_argument("--days", type=int, default=90, help="life of the targets metadata")
    _central_args(p)
    p.set_defaults(func=_cmd_sign)

    p = r.add_parser("upload", help="upload a signed bundle (or the keys dir's root) to central")
    p.add_argument("bundle", type=Path, help="the signed release directory")
    p.add_argument("--root-only", action="store_true", help="the root and first targets only")
    _central_args(p)
    p.set_defaults(func=_cmd_upload)

    p = r.add_parser("list", help="what central serves")
    _central_args(p)
    p.set_defaults(func=_cmd_list)

    p = r.add_parser(
        "floor",
        help="show or set the release floor: the lowest software release kiosks may install",
        description="Without VERSION, show the floor. With it (admin), central refuses desired "
        "states and rollouts below it and every kiosk refuses to install below it, except "
        "going back to its own previous committed release.",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("version", nargs="?", help="the lowest software release allowed (1.4.0)")
    g.add_argument("--clear", action="store_true", help="remove the floor")
    _central_args(p)
    p.set_defaults(func=_cmd_floor)

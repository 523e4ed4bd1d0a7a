"""A real TUF repository for tests: central's ``ReleaseRepo`` served over HTTP by uvicorn on a
loopback port, offline keys in a temporary directory, and a tiny software release to sign."""

from __future__ import annotations

import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from biblioedge.fleet.releases import ReleaseRepo
from biblioedge.fleet.routers.releases import tuf_router
from biblioedge.procs import free_port
from biblioedge.provisioning.tuf_offline import init_keys, sign_targets
from biblioedge.releases import SoftwareRelease, software_target, wheel_target


class CutOnce:
    """ASGI wrapper: the first response for each path in ``paths`` stops halfway, as a cut
    network does; later ones pass."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.paths: set[str] = set()
        self.cut: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        self.paths.discard(scope["path"])
        sent = 0

        async def cutting(message: Any) -> None:
            nonlocal sent
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                if sent + len(body) > 2000:
                    await send({**message, "body": body[: 2000 - sent], "more_body": True})
                    self.cut.append(scope["path"])
                    raise ConnectionResetError("cut")
                sent += len(body)
            await send(message)

        await self.app(scope, receive, cutting)


@dataclass
class TufServer:
    repo: ReleaseRepo
    keys: Path
    url: str
    cutter: CutOnce
    work: Path
    signed: list[bytes] = field(default_factory=list)

    def sign(self, add: dict[str, tuple[Path, dict[str, Any]]], **kw: Any) -> bytes:
        """Sign offline, upload the files, publish; returns the targets metadata."""
        data = sign_targets(self.keys, add, **kw)
        for local, _ in add.values():
            import hashlib

            sha = hashlib.sha256(local.read_bytes()).hexdigest()
            upload = self.repo.receive(sha)
            upload.write(local.read_bytes())
            upload.finish()
        self.repo.publish(data)
        self.signed.append(data)
        return data

    def software(self, version: str, payload: bytes = b"x" * 5000) -> SoftwareRelease:
        """A small but real software release: a wheel and a pip wheel, signed and published."""
        folder = self.work / f"sw-{version}"
        (folder / "wheels").mkdir(parents=True, exist_ok=True)
        wheel = folder / "wheels" / f"demo_pkg-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr("demo_pkg/__init__.py", f"VERSION = {version!r}\n")
            z.writestr("demo_pkg/data.bin", payload)
        pip = folder / "wheels" / "pip-0-py3-none-any.whl"
        pip.write_bytes(b"not really pip")
        release = SoftwareRelease(
            version=version, python="3.11", pip=pip.name, wheels={"x86_64": {"gate": [wheel.name]}}
        )
        files = [wheel.name, pip.name]
        (folder / "release.json").write_text(release.model_dump_json())
        add = {
            software_target(version): (
                folder / "release.json",
                {"kind": "software", "version": version},
            )
        }
        for f in files:
            add[wheel_target(f)] = (folder / "wheels" / f, {"kind": "wheel"})
        self.sign(add)
        return release


@contextmanager
def tuf_server(tmp: Path, **repo_kw: Any) -> Iterator[TufServer]:
    central = tmp / "central"
    repo = ReleaseRepo(central / "releases", central / "keys", **repo_kw)
    keys = tmp / "offline"
    root, targets = init_keys(keys, repo.online_public())
    repo.set_root(root)
    repo.publish(targets)
    app = FastAPI()
    app.include_router(tuf_router(repo))
    cutter = CutOnce(app)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(cutter, host="127.0.0.1", port=port, log_level="critical")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    work = tmp / "work"
    work.mkdir()
    try:
        yield TufServer(repo, keys, f"http://127.0.0.1:{port}", cutter, work, [targets])
    finally:
        server.should_exit = True
        thread.join(5)

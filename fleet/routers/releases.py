"""Releases: the signed software, model and configuration releases central serves.

IT uploads artifacts (``PUT /releases/artifacts/{sha256}``, streamed and hash-checked), then
the targets metadata signed offline (``POST /releases/targets``). The TUF repository itself is
served openly under ``/tuf/`` (metadata and targets are public; their signatures are what a
kiosk trusts), with HTTP Range so a cut download resumes.

The three upload routes take raw signed bytes, not JSON a schema could describe: they are
left out of the OpenAPI document (``biblioedge release upload`` is their client, and
docs/fleet.md their reference); they are authenticated and audited like every other.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from biblioedge.fleet.auth import ADMIN, ANY, Principal
from biblioedge.fleet.floor import FloorError
from biblioedge.fleet.releases import ReleaseRefused, ReleaseRepo
from biblioedge.fleet.rollouts import Rollouts
from biblioedge.fleet.routers.common import (
    AUTHENTICATED,
    ApiIn,
    Responses,
    error,
    unprocessable,
)
from biblioedge.releases import FLOOR_PATTERN

MAX_METADATA = 5_000_000


class TargetOut(BaseModel):
    path: str
    length: int
    sha256: str
    custom: dict[str, Any]


class ReleaseOut(BaseModel):
    kind: str = Field(description="software, model or config")
    name: str
    version: str
    targets: list[str]
    length: int = Field(description="bytes of all its files")


class RepositoryOut(BaseModel):
    initialized: bool
    root_version: int | None
    root_expires: str | None
    targets_version: int | None
    targets_expires: str | None
    timestamp_version: int | None
    timestamp_expires: str | None
    online_keys: dict[str, str]
    releases: list[ReleaseOut]


class TrustOut(BaseModel):
    online: dict[str, dict[str, Any]] = Field(description="snapshot and timestamp public keys")
    root_version: int | None


class PublishedOut(BaseModel):
    targets_version: int
    changed: list[TargetOut]


class FloorIn(ApiIn):
    software: str | None = Field(
        max_length=64,
        pattern=FLOOR_PATTERN,
        description="Lowest software release allowed (it starts with a number: 1.4.0, "
        "2.0.1rc1); null removes the floor",
    )


class FloorOut(BaseModel):
    software: str | None = Field(description="Lowest software release allowed, or null")
    set_by: str | None
    set_at: str | None


class FloorSetOut(FloorOut):
    republished: int = Field(description="Desired-state documents re-signed with the floor")
    below: list[str] = Field(
        description="Devices whose desired software is below the floor: they keep running "
        "it, nothing installs it again"
    )


def floor_router(rollouts: Rollouts) -> APIRouter:
    """The release floor (``fleet.floor``): read by any role, set by admins (audited)."""
    api = APIRouter(prefix="/api/v1", tags=["releases"], responses=AUTHENTICATED)
    floor = rollouts.floor
    assert floor is not None

    @api.get("/releases/floor", response_model=FloorOut)
    def get_floor() -> dict[str, Any]:
        return floor.get()

    @api.put("/releases/floor", response_model=FloorSetOut)
    async def put_floor(body: FloorIn, who: Annotated[Principal, ADMIN]) -> dict[str, Any]:
        """Set the lowest software release the fleet may install (admin). Every desired
        state is re-signed with it; desired states and rollouts below it are refused from
        now on, and kiosks refuse to install below it themselves."""
        try:
            doc = await run_in_threadpool(floor.set, body.software, who.name)
        except FloorError as exc:
            raise unprocessable("software", exc.detail, "body") from exc
        republished, below = await rollouts.floor_changed()
        return {**doc, "republished": republished, "below": below}

    return api


def releases_of(repo: ReleaseRepo) -> list[dict[str, Any]]:
    """Targets grouped into releases by their ``custom`` kind, name and version."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for t in repo.list_targets():
        kind = str(t.custom.get("kind", ""))
        if kind not in ("software", "model", "config"):
            continue  # wheels belong to the software releases that name them
        key = (kind, str(t.custom.get("name", "biblioedge")), str(t.custom.get("version", "")))
        g = groups.setdefault(
            key, {"kind": kind, "name": key[1], "version": key[2], "targets": [], "length": 0}
        )
        g["targets"].append(t.path)
        g["length"] += t.length
    return sorted(groups.values(), key=lambda g: (g["kind"], g["name"], g["version"]))


async def _body(request: Request, limit: int) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise HTTPException(413, f"metadata is at most {limit} bytes")
    return bytes(data)


def _refused(exc: ReleaseRefused) -> HTTPException:
    return HTTPException(409 if exc.reason == "bad_version" else 400, f"{exc.reason}: {exc.detail}")


def router(repo: ReleaseRepo) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["releases"], responses=AUTHENTICATED)
    refusals: Responses = {
        400: error("refused, with the reason"),
        409: error("not the next version"),
    }

    @api.get("/releases", response_model=RepositoryOut)
    async def list_releases(_: Annotated[Principal, ANY]) -> dict[str, Any]:
        """The repository's metadata versions and expiry dates, and every release in it."""
        info = await run_in_threadpool(repo.describe)
        info["releases"] = await run_in_threadpool(releases_of, repo)
        return info

    @api.get("/releases/trust", response_model=TrustOut)
    async def trust(_: Annotated[Principal, ANY]) -> dict[str, Any]:
        """Central's online keys, which the root IT signs must name (``release init``)."""
        root = await run_in_threadpool(repo.root)
        return {
            "online": repo.online_public(),
            "root_version": root.signed.version if root else None,
        }

    @api.put("/releases/root", responses=refusals, include_in_schema=False)
    async def put_root(request: Request, _: Annotated[Principal, ADMIN]) -> dict[str, int]:
        """Trust a root signed offline: the first, or the next one (signed by the old keys)."""
        data = await _body(request, MAX_METADATA)
        try:
            version = await run_in_threadpool(repo.set_root, data)
        except ReleaseRefused as exc:
            raise _refused(exc) from exc
        return {"root_version": version}

    @api.put("/releases/artifacts/{sha256}", responses=refusals, include_in_schema=False)
    async def put_artifact(
        request: Request,
        sha256: Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$")],
        _: Annotated[Principal, ADMIN],
    ) -> dict[str, Any]:
        """Upload one file of a release, named by its sha256, before its targets metadata."""
        try:
            upload = repo.receive(sha256)
            try:
                async for chunk in request.stream():
                    await run_in_threadpool(upload.write, chunk)
            except BaseException:
                upload.abort()
                raise
            size = await run_in_threadpool(upload.finish)
        except ReleaseRefused as exc:
            raise _refused(exc) from exc
        return {"sha256": sha256, "length": size}

    @api.post(
        "/releases/targets",
        response_model=PublishedOut,
        responses=refusals,
        include_in_schema=False,
    )
    async def publish(request: Request, _: Annotated[Principal, ADMIN]) -> dict[str, Any]:
        """Publish new targets metadata signed offline; its artifacts must be uploaded."""
        data = await _body(request, MAX_METADATA)
        try:
            version, changed = await run_in_threadpool(repo.publish, data)
        except ReleaseRefused as exc:
            raise _refused(exc) from exc
        return {
            "targets_version": version,
            "changed": [t.__dict__ for t in changed],
        }

    return api


def tuf_router(repo: ReleaseRepo) -> APIRouter:
    """The TUF repository as kiosks read it: open, immutable files, Range supported."""
    tuf = APIRouter(prefix="/tuf", include_in_schema=False)

    @tuf.get("/metadata/{name}")
    def metadata(name: str) -> FileResponse:
        path = repo.metadata_file(name)
        if path is None:
            raise HTTPException(404, "no such metadata")
        cache = "no-cache" if name == "timestamp.json" else "public, max-age=31536000, immutable"
        return FileResponse(path, media_type="application/json", headers={"Cache-Control": cache})

    @tuf.get("/targets/{served:path}")
    def target(served: str) -> FileResponse:
        path = repo.target_file(served)
        if path is None:
            raise HTTPException(404, "no such target")
        return FileResponse(path, media_type="application/octet-stream")

    return tuf

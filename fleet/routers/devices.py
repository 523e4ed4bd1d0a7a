"""Devices: the registry IT keeps, what each kiosk last reported, and what IT wants it to be."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError

from biblioedge.fleet.auth import ADMIN, Principal
from biblioedge.fleet.bridge import Bridge
from biblioedge.fleet.device_status import with_revocation
from biblioedge.fleet.enrollments import Registry
from biblioedge.fleet.floor import FloorError, ReleaseFloor
from biblioedge.fleet.repo import Repo, StaleVersion, UnknownDevice
from biblioedge.fleet.routers.common import (
    AUTHENTICATED,
    CLOSED,
    ApiIn,
    ConfigDoc,
    DeviceId,
    Name,
    Responses,
    error,
)
from biblioedge.fleet.store.devices import revoked_devices
from biblioedge.protocol import (
    ID_PATTERN,
    MAX_SIGNED_BODY,
    DesiredState,
    ModelRef,
    ModelTask,
    Role,
    dumps,
)
from biblioedge.settings import explain


class DeviceOut(BaseModel):
    device_id: str
    site: str
    role: str | None
    registered: bool = Field(description="Registered through the API (not only seen)")
    revoked: bool = Field(
        default=False, description="Every certificate of the device is revoked: never online"
    )
    online: bool
    first_seen: datetime | None
    last_seen: datetime | None
    reported: dict[str, Any] | None = Field(description="Last state the device reported")
    reported_at: datetime | None
    desired: dict[str, Any] | None = Field(description="What IT wants the device to be")
    desired_version: int = Field(description="Send this back as base_version to change it")
    labels: dict[str, str] | None = Field(
        default=None, description="IT's labels, for rollouts (entrance=north, floor=2)"
    )


class DeviceIn(ApiIn):
    device_id: str = Field(pattern=ID_PATTERN)
    site: str = Field(pattern=ID_PATTERN)
    role: Role | None = None


#: Integers a JSON client can hold exactly (a double's 53 bits): versions stay far below.
JSON_SAFE_INT = 2**53 - 1


class DesiredIn(ApiIn):
    base_version: int = Field(
        ge=0,
        le=JSON_SAFE_INT - 1,
        description="The desired_version you read; 409 if it changed",
    )
    config: ConfigDoc = Field(
        default_factory=dict, description="Agent tunables: section -> key -> value"
    )
    software: str | None = Field(default=None, max_length=64, pattern=r"^[\x21-\x7e]+$")
    # the wire's own types: a name the kiosk would refuse is refused here, with the reason
    models: Annotated[dict[ModelTask, ModelRef], Field(max_length=3)] = Field(
        default_factory=dict, description="Face model task -> release (name@version)"
    )


class LabelsIn(ApiIn):
    labels: Annotated[dict[Name, Name], Field(max_length=16, json_schema_extra=CLOSED)]


class DesiredOut(BaseModel):
    device_id: str
    desired: DesiredState
    published: bool = Field(description="False when the broker is down; sent on reconnect")


_NOT_FOUND: Responses = {404: error("no such device")}


def router(
    repo: Repo,
    bridge: Bridge | None,
    registry: Registry | None,
    floor: ReleaseFloor | None = None,
) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["devices"], responses=AUTHENTICATED)

    @api.get("/devices", response_model=list[DeviceOut])
    def list_devices(
        site: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    ) -> list[dict[str, Any]]:
        return with_revocation(repo.list_devices(site), revoked_devices(repo))

    @api.post(
        "/devices",
        response_model=DeviceOut,
        status_code=201,
        responses={409: error("registered at another site")},
    )
    def register_device(body: DeviceIn, _: Annotated[Principal, ADMIN]) -> dict[str, Any]:
        """Register a device ahead of its enrollment (admin)."""
        try:
            return repo.register_device(body.device_id, body.site, body.role)
        except ValueError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc

    @api.get("/devices/{device_id}", response_model=DeviceOut, responses=_NOT_FOUND)
    def get_device(device_id: DeviceId) -> dict[str, Any]:
        device = repo.get_device(device_id)
        if device is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id}")
        return with_revocation([device], revoked_devices(repo, [device_id]))[0]

    @api.delete("/devices/{device_id}", status_code=204, responses=_NOT_FOUND)
    async def delete_device(
        device_id: DeviceId, request: Request, _: Annotated[Principal, ADMIN]
    ) -> Response:
        """Remove a device that should not be there (admin): its certificates are revoked,
        its registry row and retained topics go; the events it sent stay."""
        device = await run_in_threadpool(repo.get_device, device_id)
        if device is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id}")
        revoked = 0 if registry is None else await run_in_threadpool(registry.revoke, device_id)
        if revoked:
            hook = getattr(request.app.state, "on_revoked", None)
            if hook is not None:
                await hook(device_id)
        await run_in_threadpool(repo.delete_device, device_id)
        if bridge is not None:
            await bridge.forget_device(str(device["site"]), device_id)
        return Response(status_code=204)

    @api.put("/devices/{device_id}/labels", response_model=DeviceOut, responses=_NOT_FOUND)
    def put_labels(
        device_id: DeviceId, body: LabelsIn, _: Annotated[Principal, ADMIN]
    ) -> dict[str, Any]:
        """Replace a device's labels (admin): rollouts select by them, and gates labelled
        ``entrance`` are never all updated at once."""
        try:
            return repo.set_labels(device_id, body.labels)
        except UnknownDevice as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id}") from exc

    @api.put(
        "/devices/{device_id}/desired",
        response_model=DesiredOut,
        responses={
            **_NOT_FOUND,
            409: error("base_version is stale, or the software is below the release floor"),
            413: error("the document is larger than one MQTT message can carry"),
        },
    )
    async def put_desired(
        device_id: DeviceId, body: DesiredIn, _: Annotated[Principal, ADMIN]
    ) -> DesiredOut:
        """What the device should be (admin); published retained and signed, with the
        release floor in it. A software release below the floor is refused (409)."""
        doc = body.model_dump(exclude={"base_version"})
        if floor is not None:
            try:
                await run_in_threadpool(floor.check, body.software)
                doc["software_floor"] = await run_in_threadpool(lambda: floor.software)
            except FloorError as exc:
                raise HTTPException(exc.status, exc.detail) from exc
        size = len(dumps({**doc, "version": body.base_version + 1}))
        if size > MAX_SIGNED_BODY - 1024:
            raise HTTPException(
                413,
                f"the desired document is {size} bytes; one message carries {MAX_SIGNED_BODY}",
            )
        try:
            site, desired = await run_in_threadpool(
                repo.put_desired, device_id, body.base_version, doc
            )
        except UnknownDevice as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id}") from exc
        except StaleVersion as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"desired state is at version {exc.current}, not {body.base_version}",
            ) from exc
        except ValidationError as exc:  # what the wire schema refuses and the API let by
            raise HTTPException(422, f"not a desired state: {explain(exc)}") from exc
        published = bridge is not None and await bridge.publish_desired(site, device_id, desired)
        return DesiredOut(device_id=device_id, desired=desired, published=published)

    return api

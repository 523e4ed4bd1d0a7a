"""Enrollment of kiosks (token, claim, CSR), certificate renewal, re-key requests and
revocation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from biblioedge.fleet.auth import ADMIN, Principal
from biblioedge.fleet.enrollments import EnrollmentError, Registry
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.routers.common import AUTHENTICATED, SECURED, ApiIn, DeviceId, error
from biblioedge.protocol import ID_PATTERN, Role

_PEM_MAX = 16 * 1024


class EnrollmentIn(ApiIn):
    device_id: str = Field(pattern=ID_PATTERN)
    site: str = Field(pattern=ID_PATTERN)
    role: Role
    ttl_s: int | None = Field(
        default=None, ge=60, le=7 * 86400, description="Default security.enrollment_ttl_s"
    )


class EnrollmentOut(BaseModel):
    token: str = Field(description="Shown once: give it to `biblioedge enroll --token`")
    token_id: str
    device_id: str
    site: str
    role: str
    expires_at: datetime


RequestId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]
_TOKEN = r"^[\x21-\x7e]+$"
_PEM = r"^[\x09\x0a\x0d\x20-\x7e]+$"


class ClaimIn(ApiIn):
    token: str = Field(min_length=3, max_length=200, pattern=_TOKEN)


class ClaimOut(BaseModel):
    device_id: str
    site: str
    role: str


class EnrollIn(ApiIn):
    token: str = Field(min_length=3, max_length=200, pattern=_TOKEN)
    csr: str = Field(
        min_length=1, max_length=_PEM_MAX, pattern=_PEM, description="PEM certificate request"
    )


class RenewIn(ApiIn):
    certificate: str = Field(
        min_length=1, max_length=_PEM_MAX, pattern=_PEM, description="Current cert, PEM"
    )
    csr: str = Field(
        min_length=1, max_length=_PEM_MAX, pattern=_PEM, description="New key's request, PEM"
    )
    proof: str = Field(
        min_length=1,
        max_length=512,
        pattern=r"^[A-Za-z0-9+/=]+$",
        description="base64 ECDSA of the CSR by the current key",
    )


class IdentityOut(BaseModel):
    device_id: str
    site: str
    role: str
    certificate: str
    ca: str
    not_after: datetime
    broker_url: str
    central_url: str
    control_keys: dict[str, str] = Field(description="kid -> ed25519 key central signs with")
    seal_key: str = Field(description="X25519 key desks seal registrations to")


class RekeyOut(BaseModel):
    """A renewal that asked for a new key: refused until IT approves it."""

    request_id: str
    device_id: str
    site: str
    role: str
    current_serial: str = Field(description="The certificate (hex serial) that asked")
    key_sha256: str = Field(description="SHA-256 of the new key's SubjectPublicKeyInfo")
    requested_at: datetime
    state: Literal["pending", "approved", "refused"]
    decided_by: str | None
    decided_at: datetime | None
    cert_serial: str | None = Field(description="The certificate issued on approval")


class RevokedOut(BaseModel):
    device_id: str
    revoked_certificates: int


class RefusalOut(BaseModel):
    """``detail`` as in every other error; ``reason`` says which refusal, for programs."""

    detail: str
    reason: str = Field(default="", description="e.g. used_token, expired_token, revoked")


_REFUSALS: dict[int | str, dict[str, Any]] = {
    code: {"model": RefusalOut, "description": what}
    for code, what in (
        (401, "unknown or malformed token, or a certificate not from this CA"),
        (
            403,
            "token used or expired; certificate revoked; a new key awaiting IT's approval "
            "(rekey_pending) or refused by IT (rekey_refused)",
        ),
        (409, "the device is registered at another site; a certificate already replaced"),
        (429, "renewed less than security.renew_min_interval_s ago (too_soon)"),
        (400, "a CSR that is malformed or names another device; a body that is not JSON"),
        (413, "the request body is over http.max_body_bytes"),
    )
}


async def refused(_request: Request, exc: Exception) -> JSONResponse:
    """The app's handler for EnrollmentError: its status, message and reason."""
    assert isinstance(exc, EnrollmentError)
    return JSONResponse({"detail": exc.detail, "reason": exc.reason}, status_code=exc.status)


def router(registry: Registry, metrics: CentralMetrics, ttl_s: int) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["enrollment"])

    def refuse(exc: EnrollmentError) -> EnrollmentError:
        metrics.enrollments.labels(exc.reason).inc()
        return exc

    @api.post(
        "/enrollments",
        response_model=EnrollmentOut,
        status_code=201,
        dependencies=SECURED,
        responses={**AUTHENTICATED, 400: _REFUSALS[400], 409: _REFUSALS[409]},
    )
    async def create_enrollment(
        body: EnrollmentIn, who: Annotated[Principal, ADMIN]
    ) -> dict[str, Any]:
        """A one-time enrollment token for one kiosk (admin)."""
        try:
            return await run_in_threadpool(
                registry.create_token,
                body.device_id,
                body.site,
                body.role,
                who.name,
                body.ttl_s or ttl_s,
            )
        except EnrollmentError as exc:
            raise refuse(exc) from exc

    @api.get(
        "/enroll/ca",
        response_class=Response,
        responses={200: {"content": {"application/x-pem-file": {}}}},
    )
    def enroll_ca() -> Response:
        """The device CA (PEM). Open: a kiosk checks it against the pin in its token."""
        return Response(registry.identity.ca_pem, media_type="application/x-pem-file")

    @api.post("/enroll/claim", response_model=ClaimOut, responses=_REFUSALS)
    def claim(body: ClaimIn) -> dict[str, str]:
        """Which device a token is for (the kiosk names it in its CSR); does not use it up."""
        try:
            return registry.claim(body.token)
        except EnrollmentError as exc:
            raise refuse(exc) from exc

    async def announce(request: Request, out: dict[str, Any]) -> None:
        hook = getattr(request.app.state, "on_enrolled", None)
        if hook is not None:
            await hook(out["device_id"], out["site"], out["role"])

    @api.post("/enroll", response_model=IdentityOut, responses=_REFUSALS)
    async def enroll(body: EnrollIn, request: Request) -> dict[str, Any]:
        """Exchange a token and a CSR for the kiosk's certificate and central's keys."""
        try:
            out = await run_in_threadpool(registry.enroll, body.token, body.csr.encode())
        except EnrollmentError as exc:
            raise refuse(exc) from exc
        metrics.enrollments.labels("enrolled").inc()
        await announce(request, out)
        return out

    @api.post("/renewals", response_model=IdentityOut, responses=_REFUSALS)
    async def renew(body: RenewIn, request: Request) -> dict[str, Any]:
        """A new certificate for the key a kiosk proves it holds with its current certificate.

        A CSR with another key is a re-key: refused (403 ``rekey_pending``) and listed for IT
        at ``/rekey-requests``; once IT approved it, the same request gets the certificate."""
        try:
            out = await run_in_threadpool(
                registry.renew, body.certificate.encode(), body.csr.encode(), body.proof
            )
        except EnrollmentError as exc:
            raise refuse(exc) from exc
        metrics.enrollments.labels("renewed").inc()
        await announce(request, out)
        return out

    @api.get(
        "/rekey-requests",
        response_model=list[RekeyOut],
        dependencies=SECURED,
        responses=AUTHENTICATED,
    )
    def list_rekeys(
        _who: Annotated[Principal, ADMIN],
        state: Annotated[Literal["pending", "approved", "refused"] | None, Query()] = None,
    ) -> list[dict[str, Any]]:
        """Renewals that asked for a new key, newest first (admin): a stolen key trying to
        move a kiosk onto its own, or a kiosk whose key was replaced on purpose."""
        return registry.rekey_requests(state)

    @api.post(
        "/rekey-requests/{request_id}/{decision}",
        response_model=RekeyOut,
        dependencies=SECURED,
        responses={
            **AUTHENTICATED,
            404: _REFUSALS[401] | {"description": "no such request"},
            409: _REFUSALS[409] | {"description": "already decided, or the device was revoked"},
        },
    )
    async def decide_rekey(
        request_id: RequestId,
        decision: Literal["approve", "refuse"],
        request: Request,
        who: Annotated[Principal, ADMIN],
    ) -> dict[str, Any]:
        """Approve (the new key is certified, every older certificate of the device revoked at
        once) or refuse (the device stays on its old key) a re-key request (admin)."""
        approve = decision == "approve"
        try:
            out = await run_in_threadpool(registry.decide_rekey, request_id, approve, who.name)
        except EnrollmentError as exc:
            raise refuse(exc) from exc
        metrics.enrollments.labels(f"rekey_{out['state']}").inc()
        if approve:  # a gate's site keys are wrapped to its new key
            await announce(request, out)
        return out

    @api.post(
        "/devices/{device_id}/revoke",
        tags=["devices"],
        response_model=RevokedOut,
        dependencies=SECURED,
        responses={**AUTHENTICATED, 404: error("the device holds no valid certificate")},
    )
    async def revoke_device(
        device_id: DeviceId, request: Request, _who: Annotated[Principal, ADMIN]
    ) -> dict[str, Any]:
        """Revoke the device's certificates: the broker refuses it from now on (admin)."""
        n = await run_in_threadpool(registry.revoke, device_id)
        if n == 0:
            raise HTTPException(404, f"{device_id} holds no valid certificate")
        metrics.enrollments.labels("revoked").inc()
        hook = getattr(request.app.state, "on_revoked", None)
        if hook is not None:
            await hook(device_id)
        return {"device_id": device_id, "revoked_certificates": n}

    return api

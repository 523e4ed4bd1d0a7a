"""Central's HTTP API (``/api/v1``), documented by its OpenAPI at ``/docs`` and ``/openapi.json``.

Every endpoint but health, metrics and the kiosks' enrollment takes ``Authorization: Bearer
<token>`` with a named API token (``fleet.auth``). The token is checked by a middleware before
the request body is read, so an anonymous caller cannot make central parse anything; each
route then admits the roles it names, and every change is written to the audit trail.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from biblioedge import __version__
from biblioedge.fleet.auth import ADMIN, ANY, STAFF, Audit, Principal, Tokens
from biblioedge.fleet.bridge import Bridge
from biblioedge.fleet.cards import CardError, Cards
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.enrollments import Registry
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.readers import ReaderError, Readers, UnknownReader
from biblioedge.fleet.repo import Repo, StaleVersion, UnknownDevice
from biblioedge.fleet.routers import audit as audit_routes
from biblioedge.fleet.routers import enrollments as enrollment_routes
from biblioedge.protocol import (
    ID_PATTERN,
    MAX_DEPTH,
    MAX_INT,
    DesiredState,
    ProtocolError,
    Role,
    check_depth,
)


class DeviceOut(BaseModel):
    device_id: str
    site: str
    role: str | None
    registered: bool = Field(description="Registered through the API (not only seen)")
    online: bool
    first_seen: datetime | None
    last_seen: datetime | None
    reported: dict[str, Any] | None = Field(description="Last state the device reported")
    reported_at: datetime | None
    desired: dict[str, Any] | None = Field(description="What IT wants the device to be")
    desired_version: int = Field(description="Send this back as base_version to change it")


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(pattern=ID_PATTERN)
    site: str = Field(pattern=ID_PATTERN)
    role: Role | None = None


class DesiredIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_version: int = Field(
        ge=0, le=MAX_INT - 1, description="The desired_version you read; 409 if it changed"
    )
    config: dict[str, Any] = Field(default_factory=dict, description="Agent tunables")
    software: str | None = Field(default=None, max_length=80)
    models: dict[str, str] = Field(default_factory=dict, max_length=16)

    @field_validator("config")
    @classmethod
    def _deliverable(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Kiosks refuse documents nested past MAX_DEPTH: refuse them here, not there."""
        try:
            check_depth(value, MAX_DEPTH - 2)
        except ProtocolError as exc:
            raise ValueError(exc.detail) from exc
        return value


class DesiredOut(BaseModel):
    device_id: str
    desired: DesiredState
    published: bool = Field(description="False when the broker is down; sent on reconnect")


class EventOut(BaseModel):
    event_id: str
    device_id: str
    site: str
    type: str
    seq: int
    occurred_at: datetime
    received_at: datetime
    payload: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null at end")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: bool
    broker: bool


class Stats(BaseModel):
    events: int
    devices: int
    quarantined: int


class ReaderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str = Field(pattern=ID_PATTERN)
    display_name: str = Field(min_length=1, max_length=200, description="Normalized to NFC")
    status: Literal["active", "blocked", "expired"] = "active"
    expires_at: str = Field(default="", description="Card expiry, YYYY-MM-DD")
    barcode: str | None = Field(default=None, max_length=64)


class TemplatesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=80, description="Embedder, name@version")
    templates: list[list[float]] = Field(min_length=1, max_length=16)


class CardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    valid_days: int = Field(default=365 * 4, ge=1, le=3650)


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: Literal["face_gate"] = "face_gate"
    text_version: str = Field(min_length=1, max_length=32, description="Version of the text shown")
    granted: bool
    librarian: str = Field(min_length=1, max_length=64)
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[\x21-\x7e]+$",
        description="Printable ASCII; the same key for the same reader returns the first record",
    )


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jti: str = Field(min_length=1, max_length=64, description="Card token id")


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, judged by Content-Length before
    anything is read, and counted while a body without one streams in."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            refusal = JSONResponse(
                {"detail": f"the request body is over {self.limit} bytes"}, status_code=413
            )
            await refusal(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"the request body is over {self.limit} bytes")
            return message

        await self.app(scope, counted, send)


def create_app(
    cfg: CentralConfig,
    repo: Repo,
    bridge: Bridge | None,
    metrics: CentralMetrics,
    readers: Readers | None = None,
    cards: Cards | None = None,
    registry: Registry | None = None,
) -> FastAPI:
    app = FastAPI(
        title="biblioedge central",
        version=__version__,
        description="Devices, events and desired state of the library's kiosk fleet.",
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 in FastAPI's documented shape, without the input: a crafted body is neither
        echoed back whole nor (when it is not UTF-8) able to break the error handler."""
        detail = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", ""))[:200],
                "type": e.get("type", ""),
            }
            for e in exc.errors()[:20]
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    app.add_middleware(BodyLimit, limit=cfg.http.max_body_bytes)
    tokens = Tokens(repo.engine)
    audit = Audit(repo.engine)
    # declared for the OpenAPI document; the middleware below does the checking
    bearer = HTTPBearer(auto_error=False, description="A named API token (central token create)")
    open_paths = {"/api/v1/health", "/api/v1/enroll", "/api/v1/enroll/ca"}
    open_paths |= {"/api/v1/enroll/claim", "/api/v1/renewals"}

    @app.middleware("http")
    async def authenticate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if not path.startswith("/api/v1/") or path in open_paths:
            return await call_next(request)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        who = None
        if scheme.lower() == "bearer" and token:
            who = await run_in_threadpool(tokens.check, token.strip())
        if who is None:
            metrics.api_denied.labels("unauthenticated").inc()
            return JSONResponse(
                {"detail": "missing or wrong bearer token"},
                status_code=status.HTTP_401_UNAUTHORIZED,
                headers={"WWW-Authenticate": "Bearer"},
            )
        request.state.principal = who
        response = await call_next(request)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            await run_in_threadpool(audit.record, who, request.method, path, response.status_code)
        return response

    open_api = APIRouter(prefix="/api/v1", tags=["health"])
    api = APIRouter(
        prefix="/api/v1",
        dependencies=[ANY, Depends(bearer)],
        responses={401: {"description": "missing or wrong bearer token"}},
    )

    @open_api.get("/health", response_model=Health)
    def health(response: Response) -> Health:
        try:
            repo.stats()
            db_ok = True
        except Exception:
            db_ok = False
        broker_ok = bridge is not None and bridge.connected.is_set()
        ok = db_ok and broker_ok
        if not ok:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(
            status="ok" if ok else "degraded", version=__version__, database=db_ok, broker=broker_ok
        )

    @api.get("/stats", response_model=Stats, tags=["health"])
    def stats() -> Stats:
        return Stats(**repo.stats())

    @api.get("/devices", response_model=list[DeviceOut], tags=["devices"])
    def list_devices(site: str | None = None) -> list[dict[str, Any]]:
        return repo.list_devices(site)

    @api.post(
        "/devices",
        response_model=DeviceOut,
        status_code=201,
        tags=["devices"],
        responses={409: {"description": "registered at another site"}},
    )
    def register_device(body: DeviceIn, _: Annotated[Principal, ADMIN]) -> dict[str, Any]:
        try:
            return repo.register_device(body.device_id, body.site, body.role)
        except ValueError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc

    @api.get(
        "/devices/{device_id}",
        response_model=DeviceOut,
        tags=["devices"],
        responses={404: {"description": "no such device"}},
    )
    def get_device(device_id: str) -> dict[str, Any]:
        device = repo.get_device(device_id)
        if device is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id}")
        return device

    @api.put(
        "/devices/{device_id}/desired",
        response_model=DesiredOut,
        tags=["devices"],
        responses={
            404: {"description": "no such device"},
            409: {"description": "base_version is stale: read the device again"},
        },
    )
    async def put_desired(
        device_id: str, body: DesiredIn, _: Annotated[Principal, ADMIN]
    ) -> DesiredOut:
        doc = body.model_dump(exclude={"base_version"})
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
        published = bridge is not None and await bridge.publish_desired(site, device_id, desired)
        return DesiredOut(device_id=device_id, desired=desired, published=published)

    @api.get("/events", response_model=EventPage, tags=["events"])
    def list_events(
        device_id: str | None = None,
        site: str | None = None,
        type: Annotated[str | None, Query(description="Event type, e.g. gate.decision")] = None,
        since: Annotated[datetime | None, Query(description="occurred_at >= since")] = None,
        until: Annotated[datetime | None, Query(description="occurred_at < until")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        order: Literal["newest", "oldest"] = "newest",
    ) -> EventPage:
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise HTTPException(422, f"{name} needs a timezone, e.g. 2026-11-21T00:00:00Z")
        try:
            cur = int(cursor) if cursor is not None else None
        except ValueError as exc:
            raise HTTPException(422, "cursor is not one this API returned") from exc
        rows, nxt = repo.list_events(
            device_id=device_id,
            site=site,
            type_=type,
            since=since,
            until=until,
            cursor=cur,
            limit=limit,
            newest_first=order == "newest",
        )
        return EventPage(
            items=[EventOut.model_validate(r) for r in rows],
            next_cursor=str(nxt) if nxt is not None else None,
        )

    @api.get("/quarantine", tags=["events"])
    def list_quarantine(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Events central refused to store as normal events, with the reason."""
        return repo.list_quarantine(limit)

    if readers is not None:
        reg = readers

        async def changed(site: str) -> None:
            if bridge is not None:
                await bridge.gallery_changed(site)

        @api.put("/readers/{patron_id}", tags=["readers"])
        async def put_reader(
            patron_id: str, body: ReaderIn, _: Annotated[Principal, STAFF]
        ) -> dict[str, Any]:
            try:
                doc = await run_in_threadpool(lambda: reg.upsert(patron_id, **body.model_dump()))
            except ReaderError as exc:
                raise HTTPException(422, str(exc)) from exc
            await changed(body.site)
            return doc

        @api.get("/readers/{patron_id}", tags=["readers"])
        def get_reader(patron_id: str) -> dict[str, Any]:
            """The reader and how many templates per model; never the templates."""
            try:
                return reg.get(patron_id)
            except UnknownReader as exc:
                raise HTTPException(404, f"no reader {patron_id}") from exc

        @api.put("/readers/{patron_id}/templates", tags=["readers"])
        async def put_templates(
            patron_id: str, body: TemplatesIn, _: Annotated[Principal, STAFF]
        ) -> dict[str, Any]:
            try:
                n = await run_in_threadpool(
                    reg.put_templates, patron_id, body.model, body.templates
                )
                site = str(reg.get(patron_id)["site"])
            except UnknownReader as exc:
                raise HTTPException(404, f"no reader {patron_id}") from exc
            except ReaderError as exc:
                raise HTTPException(422, str(exc)) from exc
            await changed(site)
            return {"patron_id": patron_id, "model": body.model, "templates": n}

        @api.delete("/readers/{patron_id}", status_code=204, tags=["readers"])
        async def erase_reader(patron_id: str, _: Annotated[Principal, STAFF]) -> Response:
            """Erase on request: the reader and every template, here and on every gate."""
            try:
                site = str(reg.get(patron_id)["site"])
                await run_in_threadpool(reg.erase, patron_id)
            except UnknownReader as exc:
                raise HTTPException(404, f"no reader {patron_id}") from exc
            await changed(site)
            return Response(status_code=204)

        @api.post("/readers/{patron_id}/revocations", status_code=201, tags=["readers"])
        async def revoke(
            patron_id: str, body: RevokeIn, _: Annotated[Principal, STAFF]
        ) -> dict[str, Any]:
            try:
                site = str(reg.get(patron_id)["site"])
                await run_in_threadpool(reg.revoke_card, body.jti, patron_id)
            except UnknownReader as exc:
                raise HTTPException(404, f"no reader {patron_id}") from exc
            await changed(site)
            return {"revoked": body.jti}

        @api.get("/sites/{site}/gallery", tags=["readers"])
        def site_gallery(site: str) -> dict[str, Any]:
            return {"site": site, "version": reg.site_version(site)}

    if readers is not None and cards is not None:
        crd, rdr = cards, readers

        async def everywhere() -> None:
            if bridge is not None:
                for site in await run_in_threadpool(rdr.sites):
                    await bridge.gallery_changed(site)

        @api.get("/card-keys", tags=["cards"])
        def list_card_keys() -> dict[str, str]:
            """Public keys gates verify card QR codes with (kid -> base64url)."""
            return crd.public_keys()

        @api.post("/card-keys/rotate", status_code=201, tags=["cards"])
        async def rotate_card_key(_: Annotated[Principal, ADMIN]) -> dict[str, str]:
            kid = await run_in_threadpool(crd.rotate)
            await everywhere()
            return {"active": kid}

        @api.delete("/card-keys/{kid}", status_code=204, tags=["cards"])
        async def retire_card_key(kid: str, _: Annotated[Principal, ADMIN]) -> Response:
            try:
                await run_in_threadpool(crd.retire, kid)
            except CardError as exc:
                raise HTTPException(409, str(exc)) from exc
            await everywhere()
            return Response(status_code=204)

        @api.post("/readers/{patron_id}/cards", status_code=201, tags=["cards"])
        def issue_card(
            patron_id: str, body: CardIn, _: Annotated[Principal, STAFF]
        ) -> dict[str, Any]:
            """A signed library-card token for the reader's QR (verified offline at gates)."""
            try:
                return crd.issue_card(patron_id, body.valid_days)
            except UnknownReader as exc:
                raise HTTPException(404, f"no reader {patron_id}") from exc

        @api.post(
            "/readers/{patron_id}/consents",
            status_code=201,
            tags=["consent"],
            responses={
                404: {"description": "no such reader"},
                409: {"description": "the idempotency key was used for another reader"},
            },
        )
        def record_consent(
            patron_id: str, body: ConsentIn, _: Annotated[Principal, STAFF]
        ) -> dict[str, Any]:
            """Record consent; the same idempotency key returns the first record."""
            try:
                return crd.record_consent(patron_id, **body.model_dump())
            except UnknownReader as exc:
                raise HTTPException(404, f"no reader {patron_id}") from exc
            except CardError as exc:
                raise HTTPException(409, str(exc)) from exc

        @api.get("/readers/{patron_id}/consents", tags=["consent"])
        def list_consents(patron_id: str) -> list[dict[str, Any]]:
            return crd.consents_of(patron_id)

        @api.post("/readers/{patron_id}/consents/withdraw", tags=["consent"])
        async def withdraw_consent(
            patron_id: str, _: Annotated[Principal, STAFF]
        ) -> dict[str, Any]:
            """Withdraw biometric consent: templates erased here and, at next sync, on gates."""
            try:
                n = await run_in_threadpool(crd.withdraw, patron_id)
                site = str(rdr.get(patron_id)["site"])
            except UnknownReader as exc:
                raise HTTPException(404, f"no reader {patron_id}") from exc
            await changed(site)
            return {"withdrawn": n}

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(open_api)
    app.include_router(api)
    app.include_router(audit_routes.router(audit))
    if registry is not None:
        app.include_router(
            enrollment_routes.router(registry, metrics, cfg.security.enrollment_ttl_s)
        )
    return app

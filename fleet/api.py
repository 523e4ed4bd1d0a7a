"""Central's HTTP API (``/api/v1``), documented by its OpenAPI at ``/docs`` and ``/openapi.json``.

Every endpoint but health and the kiosks' enrollment takes ``Authorization: Bearer
<token>`` with a named API token (``fleet.auth``); so does ``/metrics`` (any role: Prometheus
scrapes with a viewer token). The token is checked by a middleware before the request body
is read, so an anonymous caller cannot make central parse anything; an address that keeps
sending wrong tokens is answered 429 without a look-up (``fleet.throttle``). Each route then
admits the roles it names, and every change is written to the audit trail. The routes
themselves live in ``fleet.routers``, one module per resource.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from biblioedge import __version__
from biblioedge.fleet.auth import ANY, Audit, Tokens
from biblioedge.fleet.bridge import Bridge
from biblioedge.fleet.cards import Cards
from biblioedge.fleet.config import CentralConfig
from biblioedge.fleet.dashboard import Sessions
from biblioedge.fleet.enrollments import EnrollmentError, Registry
from biblioedge.fleet.ils.worker import IlsWorker
from biblioedge.fleet.librarian import LibrarianDesk
from biblioedge.fleet.lifecycle import Lifecycle
from biblioedge.fleet.metrics import CentralMetrics
from biblioedge.fleet.readers import Readers
from biblioedge.fleet.releases import ReleaseRepo
from biblioedge.fleet.repo import Repo
from biblioedge.fleet.reportdocs.monthly import MonthlyReports
from biblioedge.fleet.reportdocs.source import Figures, ReportFigures
from biblioedge.fleet.reports import Reports
from biblioedge.fleet.rollouts import Rollouts
from biblioedge.fleet.routers import audit as audit_routes
from biblioedge.fleet.routers import backups as backup_routes
from biblioedge.fleet.routers import cards as card_routes
from biblioedge.fleet.routers import consents as consent_routes
from biblioedge.fleet.routers import dashboard as dashboard_routes
from biblioedge.fleet.routers import devices as device_routes
from biblioedge.fleet.routers import docs as api_docs
from biblioedge.fleet.routers import enrollments as enrollment_routes
from biblioedge.fleet.routers import events as event_routes
from biblioedge.fleet.routers import health as health_routes
from biblioedge.fleet.routers import ils as ils_routes
from biblioedge.fleet.routers import librarian_page, reports_page
from biblioedge.fleet.routers import phone_cards as phone_card_routes
from biblioedge.fleet.routers import prereg_page as prereg_routes
from biblioedge.fleet.routers import readers as reader_routes
from biblioedge.fleet.routers import releases as release_routes
from biblioedge.fleet.routers import reports as report_routes
from biblioedge.fleet.routers import rollouts as rollout_routes
from biblioedge.fleet.routers.common import SECURED, STRICT
from biblioedge.fleet.throttle import FailureThrottle, client_key


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, judged by Content-Length before
    anything is read, and counted while a body without one streams in."""

    def __init__(self, app: Any, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt  # routes that stream large bodies and bound them themselves

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
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


def librarian_desk(cfg: CentralConfig, readers: Readers, cards: Cards) -> LibrarianDesk:
    """The librarian's view: card numbers as ``[ils]`` issues them; a scanned CCCD finds a
    reader only where central is given the desks' pepper (``pepper_file``)."""
    pepper = cfg.pepper_file.read_bytes() if cfg.pepper_file is not None else None
    numbers = cfg.ils.card_numbers if cfg.ils is not None else "desk"
    return LibrarianDesk(readers, cards, numbers, pepper)


def create_app(
    cfg: CentralConfig,
    repo: Repo,
    bridge: Bridge | None,
    metrics: CentralMetrics,
    readers: Readers | None = None,
    cards: Cards | None = None,
    registry: Registry | None = None,
    releases: ReleaseRepo | None = None,
    rollouts: Rollouts | None = None,
    ils: IlsWorker | None = None,
    figures: Figures | None = None,
    monthly: MonthlyReports | None = None,
) -> FastAPI:
    app = FastAPI(
        title="biblioedge central",
        version=__version__,
        description="Devices, events and desired state of the library's kiosk fleet.",
        docs_url=None,  # served from central's own files, not a CDN (routers/docs.py)
        redoc_url=None,
    )
    api_docs.mount(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 in FastAPI's documented shape, without the input: a crafted body is neither
        echoed back whole nor (when it is not UTF-8) able to break the error handler."""
        detail = [
            {
                "loc": [p if isinstance(p, int) else str(p)[:64] for p in e.get("loc", ())],
                "msg": str(e.get("msg", ""))[:200],
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()[:20]
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    app.add_middleware(
        BodyLimit, limit=cfg.http.max_body_bytes, exempt=("/api/v1/releases/artifacts/",)
    )
    tokens = Tokens(repo)
    audit = Audit(repo)
    open_paths = {"/api/v1/health", "/api/v1/enroll", "/api/v1/enroll/ca"}
    open_paths |= {"/api/v1/enroll/claim", "/api/v1/renewals"}
    h = cfg.http
    failures = FailureThrottle(
        h.auth_failures, h.auth_window_s, h.auth_lockout_s, h.auth_lockout_max_s
    )
    signins = FailureThrottle(
        h.signin_failures, h.auth_window_s, h.auth_lockout_s, h.auth_lockout_max_s
    )
    app.state.auth_throttle = failures

    async def throttled(wait: int) -> JSONResponse:
        metrics.api_denied.labels("throttled").inc()
        await failures.hold()
        return JSONResponse(
            {"detail": f"too many wrong tokens from this address: retry in {wait} s"},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(wait)},
        )

    # enrollment and renewal carry a one-time token or a signature instead of a bearer
    # token; a client whose proofs keep failing costs central look-ups and signature checks
    # just the same, so those failures count towards the same per-address lockout
    proven_paths = {"/api/v1/enroll", "/api/v1/enroll/claim", "/api/v1/renewals"}

    async def proven(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        address = client_key(request.client.host if request.client else None)
        wait = failures.retry_after(address)
        if wait is not None:
            return await throttled(wait)
        response = await call_next(request)
        if response.status_code in (401, 403):
            metrics.api_denied.labels("bad_proof").inc()
            failures.failed(address)
        return response

    @app.middleware("http")
    async def authenticate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if path in proven_paths:  # they carry their own proof: throttled on its failures
            return await proven(request, call_next)
        if (not path.startswith("/api/v1/") and path != "/metrics") or path in open_paths:
            return await call_next(request)
        address = client_key(request.client.host if request.client else None)
        wait = failures.retry_after(address)
        if wait is not None:  # locked out: no look-up, no thread, no body
            return await throttled(wait)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        who = None
        if scheme.lower() == "bearer" and token:
            who = await run_in_threadpool(tokens.check, token.strip())
        if who is None:
            metrics.api_denied.labels("unauthenticated").inc()
            wait = failures.failed(address)
            if wait is not None:
                return await throttled(wait)
            return JSONResponse(
                {"detail": "missing or wrong bearer token"},
                status_code=status.HTTP_401_UNAUTHORIZED,
                headers={"WWW-Authenticate": "Bearer"},
            )
        failures.succeeded(address)
        request.state.principal = who
        response = await call_next(request)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            await run_in_threadpool(audit.record, who, request.method, path, response.status_code)
        return response

    authenticated = [ANY, *SECURED, *STRICT]
    open_health, stats = health_routes.router(repo, bridge, cfg)
    app.include_router(open_health, dependencies=STRICT)
    app.include_router(stats, dependencies=authenticated)
    floor = rollouts.floor if rollouts is not None else None
    app.include_router(
        device_routes.router(repo, bridge, registry, floor), dependencies=authenticated
    )
    app.include_router(event_routes.router(repo), dependencies=authenticated)
    app.include_router(audit_routes.router(audit), dependencies=authenticated)
    app.include_router(backup_routes.router(cfg), dependencies=authenticated)
    app.include_router(report_routes.router(Reports(repo, cfg.reports)), dependencies=authenticated)

    async def changed(site: str) -> None:
        """A reader changed: she is at every branch, so every branch's kiosks follow."""
        await everywhere()

    async def everywhere() -> None:
        if bridge is not None:
            await bridge.library_changed()

    if readers is not None:
        life = Lifecycle(readers, cards) if cards is not None else None
        app.include_router(reader_routes.router(readers, changed, life), dependencies=authenticated)
    if readers is not None and cards is not None:
        app.include_router(card_routes.router(cards, everywhere), dependencies=authenticated)
        app.include_router(
            consent_routes.router(cards, readers, changed), dependencies=authenticated
        )
    if readers is not None and cfg.prereg.enabled:  # public: register from home, phone card
        from biblioedge.fleet.prereg import open_prereg, open_wallet

        pre, phone = open_prereg(cfg, readers)
        p = cfg.prereg
        app.include_router(
            prereg_routes.router(
                pre,
                phone,
                per_address=p.per_address,
                max_waiting=p.max_waiting,
                expire_days=p.expire_days,
                wallet=open_wallet(cfg),
            )
        )
        if cards is not None:  # staff: a new card for her phone, the old ones revoked
            app.include_router(
                phone_card_routes.router(Lifecycle(readers, cards), phone, changed),
                dependencies=authenticated,
            )
    if ils is not None:
        app.include_router(ils_routes.router(ils, changed), dependencies=authenticated)
    if releases is not None:
        app.include_router(release_routes.router(releases), dependencies=authenticated)
        app.include_router(release_routes.tuf_router(releases))
    if rollouts is not None:
        app.include_router(rollout_routes.router(rollouts), dependencies=authenticated)
        if rollouts.floor is not None:
            app.include_router(release_routes.floor_router(rollouts), dependencies=authenticated)
    sessions = Sessions(tokens, cfg.data_dir / "keys" / "dashboard.key")
    app.include_router(
        dashboard_routes.router(
            repo,
            sessions,
            rollouts,
            releases,
            audit,
            signins,
            bridge=bridge,
            registry=registry,
            cfg=cfg,
        )
    )
    if readers is not None and cards is not None:  # the librarian's view (issue 26)
        app.include_router(
            librarian_page.router(sessions, librarian_desk(cfg, readers, cards), audit)
        )
    # the reports page reads the same rollups as /api/v1/reports (central passes its own)
    figures = figures or ReportFigures(Reports(repo, cfg.reports))
    app.include_router(reports_page.router(sessions, figures, monthly, cfg.report_files.library))

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/dashboard", status_code=307)

    if registry is not None:
        app.add_exception_handler(EnrollmentError, enrollment_routes.refused)
        app.include_router(
            enrollment_routes.router(registry, metrics, cfg.security.enrollment_ttl_s),
            dependencies=STRICT,
        )

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        """Any valid API token (the middleware checked it): the counts say which devices
        enroll and what the fleet sends, nothing for an anonymous caller."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app

"""The dummy library system's patron API, shaped as Koha's REST API (``/api/v1/patrons``), so
central pushes readers to the dummy exactly as to a library's Koha and the dummy's SIP2 side
then knows them (it invents no patron a real library system would not have).

The request bodies are checked as Koha's OpenAPI definitions say (api/v1/swagger/definitions/
patron.yaml, patron_extended_attribute.yaml): required ``surname``, ``library_id`` and
``category_id``; ``additionalProperties: false``; strings or null, booleans, dates as
``YYYY-MM-DD``; a taken ``cardnumber`` is 409. Auth is Basic or an OAuth2 client-credentials
token, as Koha's RESTBasicAuth and RESTOAuth2ClientCredentials give.

``PatronBook.faults`` makes the next requests fail as library systems do (tests, benchmark):
an HTTP status, ``timeout``, ``html`` (an error page), ``shape`` (JSON of another shape),
``redirect`` (elsewhere), ``stored_500`` and ``stored_timeout`` (does the request, then
answers 500 or nothing in time: a lost reply), ``ok``; ``METHOD:fault`` waits for a request of
that method.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

#: The properties of Koha's patron definition a client may write (read-only ones, such as
#: ``restricted`` and ``anonymized``, and the embedded objects are refused in a request body).
PATRON_PROPERTIES = {
    "cardnumber", "surname", "firstname", "preferred_name", "middle_name", "title",
    "other_name", "initials", "pronouns", "street_number", "street_type", "address",
    "address2", "city", "state", "postal_code", "country", "email", "phone", "mobile", "fax",
    "secondary_email", "secondary_phone", "date_of_birth", "library_id", "category_id",
    "date_enrolled", "expiry_date", "date_renewed", "incorrect_address", "patron_card_lost",
    "staff_notes", "relationship_type", "gender", "userid", "opac_notes", "statistics_1",
    "statistics_2", "autorenew_checkouts", "lang", "extended_attributes", "privacy",
}  # fmt: skip
REQUIRED = ("surname", "library_id", "category_id")
DATES = ("date_of_birth", "date_enrolled", "expiry_date", "date_renewed")
BOOLEANS = ("incorrect_address", "patron_card_lost", "autorenew_checkouts")
#: string, never null, in the definition
NOT_NULL = ("library_id", "category_id", "lang")


@dataclass
class PatronBook:
    """The dummy's patrons as Koha holds them, by Koha's ``patron_id``."""

    patrons: dict[int, dict[str, Any]] = field(default_factory=dict)
    login: tuple[str, str] = ("koha", "koha")
    faults: list[str] = field(default_factory=list)
    #: set by a librarian in "Koha" (tests): restrictions, as Koha's read-only ``restricted``
    restricted: set[int] = field(default_factory=set)
    requests: int = 0
    #: how long a ``timeout`` fault keeps the client waiting
    slow_s: float = 30.0
    _next: int = 1
    _tokens: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: where the patrons are kept across restarts (a library system does not forget its
    #: patrons when it is down for a while); None: in memory only
    path: Path | None = None

    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        doc = json.loads(self.path.read_text(encoding="utf-8"))
        self.patrons = {int(k): v for k, v in doc["patrons"].items()}
        self._next = int(doc["next"])

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        doc = {"patrons": self.patrons, "next": self._next}
        tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.path)

    def next_fault(self, method: str) -> str:
        for i, f in enumerate(self.faults):
            want, _, what = f.rpartition(":")
            if not want or want == method:
                del self.faults[i]
                return what
        return ""

    def by_card(self, cardnumber: str) -> dict[str, Any] | None:
        for p in self.patrons.values():
            if p.get("cardnumber") == cardnumber:
                return p
        return None

    def restrict(self, patron_id: int, on: bool = True) -> None:
        """A librarian adds (or lifts) a restriction in "Koha": the patron's ``updated_on``
        moves, as Koha's does when the borrower row changes."""
        (self.restricted.add if on else self.restricted.discard)(patron_id)
        self.patrons[patron_id]["updated_on"] = _now()

    def status_of(self, cardnumber: str) -> tuple[str, str]:
        """(full name, kind) for SIP2: "" and "unknown" when there is no such patron."""
        p = self.by_card(cardnumber)
        if p is None:
            return "", "unknown"
        name = " ".join(x for x in (p.get("surname"), p.get("firstname")) if x)
        expired = bool(p.get("expiry_date")) and str(p["expiry_date"]) < date.today().isoformat()
        lost = bool(p.get("patron_card_lost")) or p["patron_id"] in self.restricted
        return name, "blocked" if lost or expired else ""

    def out(self, p: dict[str, Any], embed: bool) -> dict[str, Any]:
        doc = {k: v for k, v in p.items() if k != "extended_attributes" or embed}
        doc["restricted"] = p["patron_id"] in self.restricted
        doc["anonymized"] = False
        return doc


def _now() -> str:
    """Koha's ``updated_on``: the time of the patron's last change (date-time)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _since(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _errors(body: Any, partial_ok: bool = False) -> list[dict[str, str]]:
    """What Koha's validator would answer 400 with."""
    if not isinstance(body, dict):
        return [{"message": "Expected object", "path": "/body"}]
    errs = []
    for k in body:
        if k not in PATRON_PROPERTIES:
            errs.append({"message": "Properties not allowed: " + k + ".", "path": "/body"})
    for k in REQUIRED:
        if k not in body and not partial_ok:
            errs.append({"message": "Missing property.", "path": f"/body/{k}"})
    for k, v in body.items():
        if k == "extended_attributes":
            if not isinstance(v, list):
                errs.append({"message": "Expected array", "path": f"/body/{k}"})
                continue
            errs += _attr_errors(v, f"/body/{k}")
        elif k in BOOLEANS:
            if not isinstance(v, bool) and v is not None:
                errs.append({"message": "Expected boolean", "path": f"/body/{k}"})
        elif k == "privacy":
            if not isinstance(v, int):
                errs.append({"message": "Expected integer", "path": f"/body/{k}"})
        elif v is None:
            if k in NOT_NULL:
                errs.append({"message": "Expected string - got null.", "path": f"/body/{k}"})
        elif not isinstance(v, str):
            errs.append({"message": "Expected string", "path": f"/body/{k}"})
        elif k in DATES:
            try:
                date.fromisoformat(v)
            except ValueError:
                errs.append({"message": "Does not match date format.", "path": f"/body/{k}"})
    return errs


def _attr_errors(items: Any, path: str) -> list[dict[str, str]]:
    if not isinstance(items, list):
        return [{"message": "Expected array", "path": path}]
    errs = []
    for i, a in enumerate(items):
        if not isinstance(a, dict) or set(a) - {"type", "value", "extended_attribute_id"}:
            errs.append({"message": "Properties not allowed.", "path": f"{path}/{i}"})
        elif not isinstance(a.get("type"), str) or not isinstance(a.get("value"), str):
            errs.append({"message": "Missing property.", "path": f"{path}/{i}"})
    return errs


def build_app(book: PatronBook) -> FastAPI:
    app = FastAPI(title="dummy library system (Koha-shaped patron API)", docs_url=None)

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            return header[7:] in book._tokens
        if header.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return (user, pw) == book.login
        return False

    @app.middleware("http")
    async def faults_and_auth(request: Request, call_next: Any) -> Response:
        book.requests += 1
        fault = book.next_fault(request.method)
        if fault == "timeout":
            await asyncio.sleep(book.slow_s)
        elif fault == "html":
            return HTMLResponse("<html><body><h1>Bảo trì hệ thống</h1></body></html>", 200)
        elif fault == "html500":
            return HTMLResponse("<html><body>Internal Server Error</body></html>", 500)
        elif fault == "shape":
            return JSONResponse({"patrons": "none", "patron_id": "x"})
        elif fault == "redirect":
            return RedirectResponse("https://login.example.invalid/", 302)
        elif fault.isdigit():
            return JSONResponse({"error": f"injected {fault}"}, int(fault))
        if request.url.path != "/api/v1/oauth/token" and not authorized(request):
            return JSONResponse({"error": "Authentication failure."}, 401)
        response: Response = await call_next(request)
        if fault == "stored_500":  # the patron is stored; the reply is lost
            return JSONResponse({"error": "Something went wrong"}, 500)
        if fault == "stored_timeout":
            await asyncio.sleep(book.slow_s)
        return response

    @app.post("/api/v1/oauth/token")
    async def token(request: Request) -> JSONResponse:
        raw = (await request.body()).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(raw).items()}
        ok = (
            form.get("grant_type") == "client_credentials"
            and (
                form.get("client_id"),
                form.get("client_secret"),
            )
            == book.login
        )
        if not ok:
            return JSONResponse({"error": "unauthorized_client"}, 403)
        t = secrets.token_urlsafe(24)
        book._tokens.add(t)
        return JSONResponse({"access_token": t, "token_type": "Bearer", "expires_in": 3600})

    def embed(request: Request) -> bool:
        return "extended_attributes" in request.headers.get("x-koha-embed", "")

    @app.get("/api/v1/patrons")
    async def list_patrons(request: Request) -> JSONResponse:
        params = request.query_params
        found = list(book.patrons.values())
        if "cardnumber" in params:
            found = [p for p in found if p.get("cardnumber") == params["cardnumber"]]
        if "q" in params:
            try:
                q = json.loads(params["q"])
            except ValueError:
                return JSONResponse({"error": "q is not JSON"}, 400)
            if not isinstance(q, dict):
                return JSONResponse({"error": "q is an object"}, 400)
            t, v = q.get("extended_attributes.type"), q.get("extended_attributes.value")
            found = [
                p
                for p in found
                if (t is None and v is None)
                or any(
                    (t is None or a["type"] == t) and (v is None or a["value"] == v)
                    for a in p.get("extended_attributes") or []
                )
            ]
            if "cardnumber" in q:
                found = [p for p in found if p.get("cardnumber") == q["cardnumber"]]
            changed = q.get("updated_on")
            if isinstance(changed, dict) and ">=" in changed:
                since = _since(changed[">="])
                if since is None:
                    return JSONResponse({"error": "updated_on is not a date-time"}, 400)
                found = [p for p in found if (_since(p.get("updated_on")) or since) >= since]
        per_page, page = params.get("_per_page", "20"), params.get("_page", "1")
        n = max(int(per_page) if per_page.isdigit() else 20, 1)
        first = (max(int(page), 1) - 1) * n if page.isdigit() else 0
        found.sort(key=lambda p: p["patron_id"])
        return JSONResponse([book.out(p, embed(request)) for p in found[first : first + n]])

    @app.post("/api/v1/patrons")
    async def add(request: Request) -> JSONResponse:
        body = await _body(request)
        errs = _errors(body)
        if errs:
            return JSONResponse({"errors": errs, "status": 400}, 400)
        with book.lock:
            card = body.get("cardnumber")
            if card and book.by_card(card) is not None:
                return JSONResponse(
                    {"error": "Given cardnumber already exists", "conflict": "cardnumber"}, 409
                )
            pid = book._next
            book._next += 1
            patron = {k: body.get(k) for k in PATRON_PROPERTIES if k != "extended_attributes"}
            patron.update(
                patron_id=pid,
                cardnumber=card or f"{pid:08d}",  # autoMemberNum, as Koha can
                extended_attributes=list(body.get("extended_attributes") or []),
                date_enrolled=date.today().isoformat(),
                updated_on=_now(),
            )
            book.patrons[pid] = patron
            book.save()
        return JSONResponse(book.out(patron, True), 201)

    @app.get("/api/v1/patrons/{patron_id}")
    async def get(patron_id: int, request: Request) -> JSONResponse:
        p = book.patrons.get(patron_id)
        if p is None:
            return JSONResponse({"error": "Patron not found"}, 404)
        return JSONResponse(book.out(p, embed(request)))

    @app.put("/api/v1/patrons/{patron_id}")
    async def put(patron_id: int, request: Request) -> JSONResponse:
        body = await _body(request)
        errs = _errors(body)
        if errs:
            return JSONResponse({"errors": errs, "status": 400}, 400)
        with book.lock:
            p = book.patrons.get(patron_id)
            if p is None:
                return JSONResponse({"error": "Patron not found"}, 404)
            card = body.get("cardnumber")
            other = book.by_card(card) if card else None
            if other is not None and other["patron_id"] != patron_id:
                return JSONResponse(
                    {"error": "Given cardnumber already exists", "conflict": "cardnumber"}, 409
                )
            for k in PATRON_PROPERTIES - {"extended_attributes"}:
                if k in body:
                    p[k] = body[k]
            p["updated_on"] = _now()
            book.save()
            if "extended_attributes" in body:
                p["extended_attributes"] = list(body["extended_attributes"])
        return JSONResponse(book.out(p, False))

    @app.put("/api/v1/patrons/{patron_id}/extended_attributes")
    async def put_attrs(patron_id: int, request: Request) -> JSONResponse:
        body = await _body(request)
        errs = _attr_errors(body, "/body")
        if errs:
            return JSONResponse({"errors": errs, "status": 400}, 400)
        p = book.patrons.get(patron_id)
        if p is None:
            return JSONResponse({"error": "Patron not found"}, 404)
        p["extended_attributes"] = list(body)
        p["updated_on"] = _now()
        book.save()
        return JSONResponse(p["extended_attributes"])

    @app.delete("/api/v1/patrons/{patron_id}")
    async def remove(patron_id: int) -> Response:
        if book.patrons.pop(patron_id, None) is None:
            return JSONResponse({"error": "Patron not found"}, 404)
        book.save()
        return Response(status_code=204)

    return app


async def _body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None

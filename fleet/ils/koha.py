"""The connector for Koha's REST API (``/api/v1/patrons``), Basic auth or OAuth2 client
credentials.

The bodies follow Koha's published OpenAPI definitions (api/v1/swagger/definitions/patron.yaml
and patron_extended_attribute.yaml): ``surname``, ``library_id`` and ``category_id`` are
required, ``additionalProperties`` is false (so only the patron's own fields are sent, never
the read-only ones Koha returns, such as ``restricted`` or ``anonymized``), dates are
``YYYY-MM-DD``, and a taken card number is answered 409. Extended attributes are
``{"type", "value"}``; the keyed hash of the ID number is one of them.

Koha's answers are checked before use: a redirect is not followed (a proxy sending central
elsewhere is a configuration to fix), an HTML page or JSON of another shape is refused with a
reason. Blocking from central sets Koha's ``patron_card_lost`` flag (the patron API's writable
stop on circulation); a block set in Koha (a restriction) comes back as ``restricted``.
"""

from __future__ import annotations

import json
import time
from datetime import date
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from biblioedge.fleet.ils.connector import CardTaken, IlsError, IlsPatron, IlsStatus, PatronData
from biblioedge.fleet.ils.settings import Endpoint

#: The patron fields central writes (a subset of Koha's patron definition).
WRITABLE = (
    "cardnumber",
    "surname",
    "firstname",
    "date_of_birth",
    "gender",
    "library_id",
    "category_id",
    "expiry_date",
    "address",
    "patron_card_lost",
)


class _Attr(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    value: str


class _Patron(BaseModel):
    """The part of Koha's patron object central reads; the rest is ignored."""

    model_config = ConfigDict(extra="ignore")
    patron_id: int
    cardnumber: str | None = None
    surname: str | None = None
    firstname: str | None = None
    date_of_birth: str | None = None
    gender: str | None = None
    library_id: str
    category_id: str
    expiry_date: str | None = None
    address: str | None = None
    patron_card_lost: bool | None = None
    restricted: bool | None = None
    extended_attributes: list[_Attr] | None = None


def body_of(data: PatronData, ref_attribute: str) -> dict[str, Any]:
    """The POST/PUT body: only fields of Koha's patron definition, nulls for what is not
    sent (a PUT replaces the patron: an address turned off is removed)."""
    body: dict[str, Any] = {
        "surname": data.surname,
        "firstname": data.firstname or None,
        "library_id": data.library_id,
        "category_id": data.category_id,
        "date_of_birth": data.date_of_birth,
        "gender": data.gender,
        "expiry_date": data.expiry_date,
        "address": data.address,
        "extended_attributes": [{"type": ref_attribute, "value": data.citizen_ref}],
    }
    if data.cardnumber is not None:
        body["cardnumber"] = data.cardnumber
    return body


class KohaConnector:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        ref_attribute: str = "CCCD_REF",
        timeout_s: float = 10.0,
        verify: bool | str = True,
    ) -> None:
        self.endpoint = endpoint
        self.ref_attribute = ref_attribute
        self.api = endpoint.base_url + "/api/v1"
        auth = httpx.BasicAuth(endpoint.user, endpoint.secret) if endpoint.auth == "basic" else None
        self.http = httpx.Client(
            timeout=timeout_s, follow_redirects=False, auth=auth, verify=verify
        )
        self._token: tuple[str, float] | None = None
        self.requests = 0

    def close(self) -> None:
        self.http.close()

    # -- transport ------------------------------------------------------------------------

    def _bearer(self, renew: bool = False) -> dict[str, str]:
        if self.endpoint.auth != "oauth2":
            return {}
        if renew or self._token is None or self._token[1] < time.monotonic():
            r = self._send(
                "POST",
                "/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.endpoint.user,
                    "client_secret": self.endpoint.secret,
                },
                auth_headers=False,
            )
            doc = self._json(r)
            token = doc.get("access_token") if isinstance(doc, dict) else None
            if not isinstance(token, str) or not token:
                raise IlsError(
                    "wrong_shape", "the token answer has no access_token", retry=True, person=True
                )
            ttl = doc.get("expires_in", 3600)
            ttl = float(ttl) if isinstance(ttl, int | float) else 3600.0
            self._token = (token, time.monotonic() + max(10.0, ttl - 30.0))
        return {"Authorization": f"Bearer {self._token[0]}"}

    def _send(
        self,
        method: str,
        path: str,
        *,
        auth_headers: bool = True,
        ok: tuple[int, ...] = (200, 201, 204),
        **kwargs: Any,
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        headers.setdefault("Accept", "application/json")
        for attempt in (0, 1):
            if auth_headers:
                headers.update(self._bearer(renew=attempt == 1))
            self.requests += 1
            try:
                r = self.http.request(method, self.api + path, headers=headers, **kwargs)
            except httpx.TimeoutException as exc:
                raise IlsError(
                    "timeout", f"{method} {path}: no answer in time", retry=True, person=False
                ) from exc
            except httpx.TransportError as exc:
                raise IlsError(
                    "unreachable", f"{method} {path}: {exc}", retry=True, person=False
                ) from exc
            if (
                r.status_code == 401
                and auth_headers
                and self.endpoint.auth == "oauth2"
                and attempt == 0
            ):
                continue  # the token expired early: once more with a new one
            break
        if r.status_code in ok or r.status_code == 404:
            return r
        reason = _error_text(r)
        if 300 <= r.status_code < 400:
            where = r.headers.get("location", "?")[:120]
            raise IlsError(
                "redirected", f"{method} {path} sent elsewhere ({where})", retry=True, person=True
            )
        if r.status_code in (401, 403):
            raise IlsError(
                "auth_refused",
                f"{r.status_code}: {reason} (check the API user and its permissions)",
                retry=True,
                person=True,
            )
        if r.status_code == 409:
            raise IlsError("conflict", f"409: {reason}", retry=False, person=True)
        if r.status_code in (400, 422):
            raise IlsError("refused", f"{r.status_code}: {reason}", retry=False, person=True)
        if r.status_code == 429 or r.status_code >= 500:
            raise IlsError("server_error", f"{r.status_code}: {reason}", retry=True, person=False)
        raise IlsError("unexpected", f"{r.status_code}: {reason}", retry=True, person=True)

    @staticmethod
    def _json(r: httpx.Response) -> Any:
        kind = r.headers.get("content-type", "")
        if "json" not in kind:
            raise IlsError(
                "not_json",
                f"{r.status_code} answered with {kind.split(';')[0] or 'no type'}, not JSON "
                "(a proxy's or a login page?)",
                retry=True,
                person=True,
            )
        try:
            return r.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IlsError(
                "not_json", f"{r.status_code}: the JSON does not parse", retry=True, person=True
            ) from exc

    def _patron(self, doc: Any) -> IlsPatron:
        try:
            p = _Patron.model_validate(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "the answer"
            raise IlsError(
                "wrong_shape", f"a patron's {where}: {first['msg']}", retry=True, person=True
            ) from exc
        ref = None
        for a in p.extended_attributes or []:
            if a.type == self.ref_attribute:
                ref = a.value
        status: IlsStatus = "active"
        if p.restricted or p.patron_card_lost:
            status = "blocked"
        elif p.expiry_date and p.expiry_date[:10] < date.today().isoformat():
            status = "expired"
        return IlsPatron(str(p.patron_id), p.cardnumber or "", ref, status, p.expiry_date)

    def _list(self, params: dict[str, str]) -> list[IlsPatron]:
        r = self._send(
            "GET", "/patrons", params=params, headers={"x-koha-embed": "extended_attributes"}
        )
        if r.status_code == 404:
            return []
        doc = self._json(r)
        if not isinstance(doc, list):
            raise IlsError(
                "wrong_shape", "a patron search did not answer a list", retry=True, person=True
            )
        return [self._patron(d) for d in doc]

    def _get_doc(self, ils_id: str) -> dict[str, Any] | None:
        r = self._send("GET", f"/patrons/{ils_id}", headers={"x-koha-embed": "extended_attributes"})
        if r.status_code == 404:
            return None
        doc = self._json(r)
        self._patron(doc)  # checks the shape
        return dict(doc)

    # -- the connector --------------------------------------------------------------------

    def check(self) -> dict[str, str]:
        r = self._send("GET", "/patrons", params={"_per_page": "1"})
        self._json(r)
        return {"api": self.api, "user": self.endpoint.user, "auth": self.endpoint.auth}

    def find_by_card(self, cardnumber: str) -> IlsPatron | None:
        found = [p for p in self._list({"cardnumber": cardnumber}) if p.cardnumber == cardnumber]
        return found[0] if found else None

    def find_by_ref(self, citizen_ref: str) -> IlsPatron | None:
        q = json.dumps(
            {
                "extended_attributes.type": self.ref_attribute,
                "extended_attributes.value": citizen_ref,
            }
        )
        found = [p for p in self._list({"q": q}) if p.citizen_ref == citizen_ref]
        return found[0] if found else None

    def get(self, ils_id: str) -> IlsPatron | None:
        doc = self._get_doc(ils_id)
        return None if doc is None else self._patron(doc)

    def changed_since(
        self, since: str, per_page: int = 100, max_pages: int = 200
    ) -> list[IlsPatron]:
        """Koha's ``updated_on`` ("time of last change, useful for synchronization with
        external systems", patron.yaml), page by page."""
        q = json.dumps({"updated_on": {">=": since}})
        out: list[IlsPatron] = []
        for page in range(1, max_pages + 1):
            batch = self._list({"q": q, "_page": str(page), "_per_page": str(per_page)})
            out += batch
            if len(batch) < per_page:
                break
        return out

    def create(self, data: PatronData) -> IlsPatron:
        try:
            r = self._send("POST", "/patrons", json=body_of(data, self.ref_attribute))
        except IlsError as exc:
            if exc.reason == "conflict" and data.cardnumber:
                raise CardTaken(data.cardnumber) from exc
            raise
        if r.status_code == 404:
            raise IlsError("no_patron_api", "POST /patrons: 404", retry=True, person=True)
        return self._patron(self._json(r))

    def update(self, ils_id: str, data: PatronData) -> IlsPatron:
        body = body_of(data, self.ref_attribute)
        attrs = body.pop("extended_attributes")
        doc = self._get_doc(ils_id)
        if doc is None:
            raise IlsError(
                "gone", f"patron {ils_id} is not in the library system", retry=False, person=False
            )
        body["patron_card_lost"] = bool(doc.get("patron_card_lost"))  # a block stays
        if data.cardnumber is None:
            body["cardnumber"] = doc.get("cardnumber")
        try:
            r = self._send("PUT", f"/patrons/{ils_id}", json=body)
        except IlsError as exc:
            if exc.reason == "conflict" and data.cardnumber:
                raise CardTaken(data.cardnumber) from exc
            raise
        self._send("PUT", f"/patrons/{ils_id}/extended_attributes", json=attrs)
        patron = self._patron(self._json(r))
        return IlsPatron(
            patron.ils_id, patron.cardnumber, data.citizen_ref, patron.status, patron.expiry_date
        )

    def _put_fields(self, ils_id: str, **fields: Any) -> None:
        doc = self._get_doc(ils_id)
        if doc is None:
            raise IlsError(
                "gone", f"patron {ils_id} is not in the library system", retry=False, person=False
            )
        body = {k: doc.get(k) for k in WRITABLE if k in doc}
        body.update(fields)
        self._send("PUT", f"/patrons/{ils_id}", json=body)

    def set_blocked(self, ils_id: str, blocked: bool) -> None:
        self._put_fields(ils_id, patron_card_lost=blocked)

    def set_expiry(self, ils_id: str, expiry_date: str) -> None:
        self._put_fields(ils_id, expiry_date=expiry_date)

    def erase(self, ils_id: str, anonymise: bool) -> None:
        if not anonymise:
            self._send("DELETE", f"/patrons/{ils_id}")
            return
        doc = self._get_doc(ils_id)
        if doc is None:
            return
        self._send(
            "PUT",
            f"/patrons/{ils_id}",
            json={
                "surname": "Ẩn danh",
                "firstname": None,
                "cardnumber": None,
                "date_of_birth": None,
                "gender": None,
                "address": None,
                "library_id": doc.get("library_id"),
                "category_id": doc.get("category_id"),
                "expiry_date": date.today().isoformat(),
            },
        )
        self._send("PUT", f"/patrons/{ils_id}/extended_attributes", json=[])


def _error_text(r: httpx.Response) -> str:
    """Koha's ``{"error": ...}`` or ``{"errors": [...]}``, else the start of the body."""
    try:
        doc = r.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict):
        if isinstance(doc.get("error"), str):
            return str(doc["error"])[:200]
        errs = doc.get("errors")
        if isinstance(errs, list) and errs:
            return "; ".join(
                f"{e.get('path', '')}: {e.get('message', '')}" if isinstance(e, dict) else str(e)
                for e in errs[:3]
            )[:200]
    kind = r.headers.get("content-type", "").split(";")[0]
    if "html" in kind:
        return f"an HTML page ({len(r.content)} bytes)"
    return (r.text[:120] or r.reason_phrase).replace("\n", " ")

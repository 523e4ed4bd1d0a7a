"""What every router shares: the error shapes, documented once, and the path parameters.

Every error central returns is one of two documented shapes: ``{"detail": "text"}``, or for
422 FastAPI's validation list (``loc``, ``msg``, ``type``) — also when a route refuses a value
itself, so a client parses one shape for each status.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPBearer
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from biblioedge.protocol import ID_PATTERN, MAX_DEPTH, PATRON_PATTERN, ProtocolError, check_depth

#: Declares the bearer token in the OpenAPI document; the middleware in ``fleet.api`` checks
#: it before the body is read.
BEARER = HTTPBearer(auto_error=False, description="A named API token (central token create)")
SECURED = [Depends(BEARER)]


#: No NUL, nor other control characters but tab and newlines: a name, a PEM, a config value.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
#: A person's name: no control characters, and something besides spaces.
NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Text = Annotated[str, StringConstraints(pattern=TEXT_PATTERN, max_length=1024)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_only(value: Any) -> Any:
    """pydantic reads a number as seconds since 1970; the API documents ISO 8601 only."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("a date-time in ISO 8601 (2026-12-06T08:00:00+07:00), not a number")
    return value


#: A date-time parameter as its documentation says: ISO 8601, never a Unix time.
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]

CLOSED = {"additionalProperties": False}  # keys must match their pattern, in the schema too
Scalar = None | bool | Int64 | float | Text
Setting = (
    Scalar
    | Annotated[list[Scalar], Field(max_length=64)]
    | Annotated[dict[Name, Scalar], Field(max_length=64, json_schema_extra=CLOSED)]
)
#: An agent config override, shaped as agent configs are (section -> key -> value, a value
#: at most a list or a table): the schema says what kiosks accept, so nothing else is sent.
ConfigDoc = Annotated[
    dict[
        Name,
        Annotated[dict[Name, Setting], Field(max_length=64, json_schema_extra=CLOSED)],
    ],
    Field(max_length=16, json_schema_extra=CLOSED),
]


class ApiIn(BaseModel):
    """Every request body: unknown fields refused, and no NUL anywhere in it (PostgreSQL
    stores NUL in neither text nor jsonb: it would be a 500, and on SQLite a trap for later)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        try:
            check_depth(data, MAX_DEPTH)
        except ProtocolError as exc:
            raise ValueError(exc.detail) from exc
        return data


class ErrorOut(BaseModel):
    detail: str


def error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


Responses = dict[int | str, dict[str, Any]]

#: Responses of every authenticated route.
AUTHENTICATED: Responses = {
    400: error("the body is not UTF-8 JSON"),
    401: error("missing or wrong bearer token"),
    403: error("the token's role may not do this"),
    413: error("the request body is over http.max_body_bytes"),
    429: error("too many wrong tokens from this address: retry after Retry-After seconds"),
}


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def strict_query(request: Request) -> None:
    """422 for a query parameter the route does not take: a mistyped filter (``devce_id``)
    would otherwise be ignored and the caller would get everything."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    unknown = set(request.query_params) - _query_names(dependant)
    if unknown:
        name = sorted(unknown)[0][:64]
        raise unprocessable(name, "this route takes no such query parameter")


STRICT = [Depends(strict_query)]


def unprocessable(field: str, msg: str, where: str = "query") -> HTTPException:
    """A 422 in the same shape as FastAPI's own validation errors."""
    return HTTPException(422, [{"loc": [where, field], "msg": msg, "type": "value_error"}])


PatronId = Annotated[
    str,
    Path(pattern=PATRON_PATTERN, description="Patron number: ASCII letters, digits, . _ -"),
]
DeviceId = Annotated[str, Path(pattern=ID_PATTERN, description="Device id")]
SiteId = Annotated[str, Path(pattern=ID_PATTERN, description="Site id")]

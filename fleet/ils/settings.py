"""Central's ``[ils]`` section: which library system, how readers map into it. Checked at
load: a bad URL or an unreadable password file stops central before it starts, not at the
first registration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, PrivateAttr, model_validator

from biblioedge.settings import StrictModel

SCHEMES = {"koha+https": "https", "koha+http": "http"}


@dataclass(frozen=True)
class Endpoint:
    """Where the patron API is and who central is there (never logged with the secret)."""

    base_url: str  # http(s)://host[:port][/prefix], without a trailing slash
    user: str
    secret: str
    auth: Literal["basic", "oauth2"]

    def __repr__(self) -> str:
        return f"Endpoint({self.base_url!r}, user={self.user!r}, auth={self.auth!r})"


def parse_url(url: str, password: str | None = None) -> tuple[str, str, str]:
    """(base URL, user, password) of ``koha+https://USER[:PASSWORD]@HOST[:PORT][/PATH]``;
    ValueError says what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"the URL is koha+https://USER@HOST/ (or koha+http://), not {url[:60]!r}")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    if not parts.username:
        raise ValueError("the URL names no user (koha+https://USER@HOST/)")
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError as exc:
        raise ValueError(f"the URL's port: {exc}") from exc
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    base = f"{SCHEMES[parts.scheme]}://{host}{port}{parts.path.rstrip('/')}"
    secret = password if password is not None else unquote(parts.password or "")
    return base, unquote(parts.username), secret


class IlsConfig(StrictModel):
    url: str = Field(
        description="The library system's patron API: koha+https://USER@HOST/ (Koha's REST "
        "API at /api/v1; the dummy library system serves the same). A password in the URL is "
        "for the demo only; use password_file"
    )
    password_file: Path | None = Field(
        default=None,
        description="File holding the API user's password (or the OAuth2 client secret)",
    )
    auth: Literal["basic", "oauth2"] = Field(
        default="basic",
        description="Basic auth (Koha's RESTBasicAuth) or OAuth2 client credentials (USER is "
        "the client id)",
    )
    card_numbers: Literal["desk", "ils"] = Field(
        default="desk",
        description="Who issues card numbers: desk (the reader's barcode, else central's "
        "patron number, is the Koha cardnumber) or ils (Koha assigns one; central keeps it as "
        "the reader's barcode). Either way kiosks' SIP2 calls and cards carry that number",
    )
    libraries: dict[str, str] = Field(
        default_factory=dict,
        description="Koha library_id per site (branch); a site not listed uses default_library",
    )
    default_library: str = Field(
        default="", description="library_id for sites not in libraries; empty: the site id"
    )
    category_adult: str = Field(default="PT", description="Koha category_id of adults")
    category_child: str = Field(default="J", description="Koha category_id of children")
    child_under: int = Field(
        default=16, ge=1, le=30, description="Readers younger than this are children (VN: 16)"
    )
    address: bool = Field(
        default=False,
        description="Send the address the desk kept (minimum data: off unless the library "
        "needs it)",
    )
    ref_attribute: str = Field(
        default="CCCD_REF",
        pattern=r"^[A-Za-z0-9_]{1,64}$",
        description="Koha extended attribute type holding the keyed hash of the ID number "
        "(create it in Koha, unique, not shown in the OPAC); the number itself is never sent",
    )
    anonymise: bool = Field(
        default=False,
        description="A reader who leaves is anonymised in the library system (circulation "
        "statistics kept) instead of deleted",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Per request")
    concurrency: int = Field(
        default=4,
        ge=1,
        le=32,
        description="Readers pushed at once (each reader's changes stay in order)",
    )
    backoff_s: float = Field(default=2.0, gt=0, le=600, description="First retry delay")
    backoff_max_s: float = Field(default=300.0, gt=0, le=86400, description="Longest delay")
    status_poll_s: float = Field(
        default=60.0,
        ge=0,
        description="How often central asks the library system whether its readers are "
        "blocked, expired or deleted there (refused at kiosks from the next gallery sync); "
        "0 turns status back off",
    )
    _password: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _check(self) -> IlsConfig:
        password: str | None = None
        if self.password_file is not None:
            try:
                password = self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"password_file {self.password_file}: {exc.strerror}") from exc
            if not password:
                raise ValueError(f"password_file {self.password_file} is empty")
        _, _, secret = parse_url(self.url, password)
        if not secret:
            raise ValueError("no password: set password_file (or, for a demo, put it in the URL)")
        self._password = secret
        return self

    def endpoint(self) -> Endpoint:
        base, user, _ = parse_url(self.url, self._password)
        return Endpoint(base, user, self._password, self.auth)

    def library_of(self, site: str) -> str:
        return self.libraries.get(site) or self.default_library or site

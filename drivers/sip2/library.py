"""The library system as the self-check sees it, over SIP2. ``LibrarySystem`` is the
interface a REST connector (Koha's API) can implement as well."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Protocol

from biblioedge.drivers.sip2.client import Account, Sip2Client
from biblioedge.drivers.sip2.codec import PATRON_BLOCKS, Reply, sip_date

#: BX flags of the ACS status reply, in the order SIP2 2.00 lists them.
MESSAGES = (
    "patron_status",
    "checkout",
    "checkin",
    "block_patron",
    "sc_acs_status",
    "request_resend",
    "login",
    "patron_information",
    "end_patron_session",
    "fee_paid",
    "item_information",
    "item_status_update",
    "patron_enable",
    "hold",
    "renew",
    "renew_all",
)


@dataclass(frozen=True)
class Status:
    online: bool
    checkout_ok: bool
    checkin_ok: bool
    renewal_ok: bool
    offline_ok: bool
    supported: list[str]
    institution: str
    screen_message: str = ""


@dataclass(frozen=True)
class Patron:
    patron_id: str
    valid: bool
    name: str
    blocks: list[str]
    fees: str
    currency: str
    password_ok: bool | None
    charged: int = 0
    overdue: int = 0
    screen_message: str = ""


@dataclass(frozen=True)
class Circulation:
    """A checkout, checkin or renewal as the library system answered it."""

    ok: bool
    item: str
    title: str
    patron_id: str = ""
    due: str | None = None  # ISO date when the server's format gives one
    due_raw: str = ""
    desensitize: bool | None = None
    resensitize: bool | None = None
    alert: bool = False
    sort_bin: str = ""
    fee: str = ""
    transaction_id: str = ""
    screen_message: str = ""


@dataclass(frozen=True)
class Item:
    item: str
    title: str
    circulation_status: str
    due: str | None
    patron_id: str
    screen_message: str = ""


CIRCULATION_STATUS = {
    "01": "other",
    "02": "on_order",
    "03": "available",
    "04": "charged",
    "05": "charged_not_to_be_recalled",
    "06": "in_process",
    "07": "recalled",
    "08": "waiting_on_hold_shelf",
    "09": "waiting_to_be_reshelved",
    "10": "in_transit",
    "11": "claimed_returned",
    "12": "lost",
    "13": "missing",
}


class LibrarySystem(Protocol):
    def status(self) -> Status: ...

    def patron(self, patron_id: str, password: str | None = None) -> Patron: ...

    def checkout(self, patron_id: str, item: str, *, fee_ack: bool = False) -> Circulation: ...

    def checkin(self, item: str) -> Circulation: ...

    def renew(self, patron_id: str, item: str) -> Circulation: ...

    def item(self, item: str) -> Item: ...


def due_date(raw: str) -> str | None:
    """ISO date from the forms servers use (YYYYMMDD[ZZZZHHMMSS], YYYY-MM-DD, DD/MM/YYYY)."""
    text = raw.strip()
    for pattern, order in (
        (r"^(\d{4})(\d{2})(\d{2})", "ymd"),
        (r"^(\d{4})-(\d{2})-(\d{2})", "ymd"),
        (r"^(\d{2})/(\d{2})/(\d{4})", "dmy"),
    ):
        m = re.match(pattern, text)
        if m:
            a, b, c = (int(g) for g in m.groups())
            y, mo, d = (a, b, c) if order == "ymd" else (c, b, a)
            try:
                return date(y, mo, d).isoformat()
            except ValueError:
                return None
    return None


def _screen(reply: Reply) -> str:
    return " ".join(reply.all("AF")).strip()


class Sip2Library:
    """LibrarySystem over one SIP2 connection (kept open, reopened when it drops)."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.client = Sip2Client(account)

    def close(self) -> None:
        self.client.close()

    def _common(self) -> list[tuple[str, str | None]]:
        return [("AO", self.account.institution)]

    def status(self) -> Status:
        r = self.client.request("99", "0" + "080" + "2.00", [], "98")
        bx = r.get("BX")
        return Status(
            online=r.flag(0),
            checkin_ok=r.flag(1),
            checkout_ok=r.flag(2),
            renewal_ok=r.flag(3),
            offline_ok=r.flag(5),
            supported=[m for m, f in zip(MESSAGES, bx, strict=False) if f == "Y"],
            institution=r.get("AO"),
            screen_message=_screen(r),
        )

    def patron(self, patron_id: str, password: str | None = None) -> Patron:
        fields = [*self._common(), ("AA", patron_id), ("AC", ""), ("AD", password)]
        r = self.client.request("63", "000" + sip_date() + " " * 10, fields, "64")
        flags = r.fixed[:14]
        counts = r.fixed[35:59]

        def count(i: int) -> int:
            piece = counts[i * 4 : i * 4 + 4].strip()
            return int(piece) if piece.isdigit() else 0

        return Patron(
            patron_id=r.get("AA", patron_id),
            valid=r.get("BL", "N") == "Y",
            name=r.get("AE"),
            blocks=[name for name, f in zip(PATRON_BLOCKS, flags, strict=False) if f == "Y"],
            fees=r.get("BV"),
            currency=r.get("BH"),
            password_ok=None if "CQ" not in r.fields else r.get("CQ") == "Y",
            charged=count(2),
            overdue=count(1),
            screen_message=_screen(r),
        )

    def checkout(self, patron_id: str, item: str, *, fee_ack: bool = False) -> Circulation:
        fields = [*self._common(), ("AA", patron_id), ("AB", item), ("AC", "")]
        fields.append(("BO", "Y" if fee_ack else "N"))
        r = self.client.request("11", "NN" + sip_date() + sip_date(), fields, "12")
        return self._circulation(r, item, desensitize=r.fixed[3:4] == "Y")

    def checkin(self, item: str) -> Circulation:
        fields = [("AP", self.account.location), *self._common(), ("AB", item), ("AC", "")]
        r = self.client.request("09", "N" + sip_date() + sip_date(), fields, "10")
        return self._circulation(r, item, resensitize=r.fixed[1:2] == "Y", alert=r.flag(3))

    def renew(self, patron_id: str, item: str) -> Circulation:
        fields = [*self._common(), ("AA", patron_id), ("AB", item), ("AC", "")]
        r = self.client.request("29", "NN" + sip_date() + sip_date(), fields, "30")
        return self._circulation(r, item, desensitize=r.fixed[3:4] == "Y")

    def item(self, item: str) -> Item:
        r = self.client.request("17", sip_date(), [*self._common(), ("AB", item), ("AC", "")], "18")
        due_raw = r.get("AH")
        return Item(
            item=r.get("AB", item),
            title=r.get("AJ"),
            circulation_status=CIRCULATION_STATUS.get(r.fixed[:2], "unknown"),
            due=due_date(due_raw) if due_raw else None,
            patron_id=r.get("AA"),
            screen_message=_screen(r),
        )

    def end_session(self, patron_id: str) -> bool:
        r = self.client.request("35", sip_date(), [*self._common(), ("AA", patron_id)], "36")
        return r.flag(0)

    @staticmethod
    def _circulation(r: Reply, item: str, **flags: Any) -> Circulation:
        due_raw = r.get("AH")
        return Circulation(
            ok=r.fixed[:1] == "1",
            item=r.get("AB", item),
            title=r.get("AJ"),
            patron_id=r.get("AA"),
            due=due_date(due_raw) if due_raw else None,
            due_raw=due_raw,
            sort_bin=r.get("CL"),
            fee=r.get("BV"),
            transaction_id=r.get("BK"),
            screen_message=_screen(r),
            **flags,
        )


def as_json(result: Any) -> dict[str, Any]:
    return asdict(result)


__all__ = ["Account", "Circulation", "Item", "LibrarySystem", "Patron", "Sip2Library", "Status"]

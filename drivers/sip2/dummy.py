"""A dummy library system that speaks SIP2 over TCP: pysip2's ACS server with a small
Vietnamese catalogue and the demo's readers. The demo's self-check and the tests talk to it
as they would to Koha; ``offline`` makes it answer as a library system that is down for
circulation (the ACS status says offline and loans are refused). ``patron_info`` makes it
answer 63 (patron information) as servers that do not implement it do: ``drop`` the
connection, ``resend`` (96 for ever), ``other`` (an ACS status instead), ``unsupported``
(no 63 handler: pysip2's empty 64, and BX says so).

Its readers: the demo's fixed ones below, and those central pushed to its Koha-shaped patron
API (``koha_api.py``, served with ``rest_port``): a reader registered at a desk is known to
its SIP2 side by the card number central gave Koha, blocked when Koha says so."""

from __future__ import annotations

import asyncio
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from pysip2 import (
    CHECKIN,
    CHECKOUT,
    END_PATRON_SESSION,
    ITEM_INFORMATION,
    LOGIN,
    PATRON_INFORMATION,
    PATRON_STATUS,
    RENEW,
    RENEW_ALL,
    CheckinResponse,
    CheckoutResponse,
    EndSessionResponse,
    ItemInformationResponse,
    LoginResponse,
    PatronInformationResponse,
    PatronStatusResponse,
    RenewAllResponse,
    RenewResponse,
    SCStatusRequest,
    SIP2Server,
    decode_message,
    encode_message,
)

from biblioedge.drivers.sip2.koha_api import PatronBook, build_app

CATALOGUE = {
    "30000001": "Truyện Kiều — Nguyễn Du",
    "30000002": "Dế Mèn phiêu lưu ký — Tô Hoài",
    "30000003": "Số đỏ — Vũ Trọng Phụng",
    "30000004": "Tắt đèn — Ngô Tất Tố",
    "30000005": "Nỗi buồn chiến tranh — Bảo Ninh",
    "30000006": "Cho tôi xin một vé đi tuổi thơ — Nguyễn Nhật Ánh",
    "30000007": "Lịch sử Tây Ninh",
    "30000008": "Từ điển Tiếng Việt",
    "30000009": "Chí Phèo — Nam Cao",
    "30000010": "Vợ nhặt — Kim Lân",
    "30000011": "Tuyển tập Nam Cao (2 tập)",
}
#: Every demo reader's PIN, for the barcode-and-PIN login.
PIN = "1234"
#: Items whose tags carry several parts (ISO 28560 set information).
SETS = {"30000011": 2}
#: Items whose tags say "not for loan or return while offline" (reference copies).
NOT_OFFLINE = {"30000010"}
PATRONS = {
    "P000101": ("Nguyễn Văn An", ""),
    "P000102": ("Trần Thị Bình", ""),
    "P000103": ("Lê Hoàng Cường", ""),
    "P000104": ("Phạm Minh Đức", ""),
    "P000900": ("Bạn đọc bị khóa thẻ", "blocked"),
    "P000901": ("Bạn đọc còn nợ phí", "fees"),
}


@dataclass
class Library:
    """The dummy's state: who has what, and until when."""

    loans: dict[str, tuple[str, date]] = field(default_factory=dict)  # item -> patron, due
    holds: set[str] = field(default_factory=lambda: {"30000008"})  # on hold for someone else
    offline: bool = False
    loan_days: int = 14
    login: tuple[str, str] = ("kiosk", "kiosk")
    fee_items: set[str] = field(default_factory=lambda: {"30000007"})  # a loan with a charge
    #: any 3xxxxxxx item and P000000-style reader exists (benchmarks lend thousands)
    open: bool = False
    #: checkouts answered "yes", per item: a kiosk that lends twice shows here
    checkouts: dict[str, int] = field(default_factory=dict)
    #: how 63 is answered: yes, drop, resend, other, unsupported (see the module docstring)
    patron_info: str = "yes"
    #: 63 requests received (answered or not)
    patron_info_asked: int = 0
    #: the patrons central pushed through the Koha-shaped API
    book: PatronBook = field(default_factory=PatronBook)
    #: holds waiting on the shelf, per reader ("my account" lists them)
    holds_ready: dict[str, list[str]] = field(default_factory=lambda: {"P000102": ["30000008"]})
    #: False: 63 answers counts only, whatever the summary asks (servers that ignore it)
    summary: bool = True
    #: False: no 65 handler (renew all), as servers without it
    renew_all: bool = True
    #: items the library system will not renew (another reader's hold, the renewal limit)
    not_renewable: set[str] = field(default_factory=set)

    def title(self, item: str) -> str | None:
        if item in CATALOGUE:
            return CATALOGUE[item]
        if self.open and len(item) == 8 and item.isdigit() and item[0] == "3":
            return f"Tài liệu {item}"
        return None

    def patron(self, pid: str) -> tuple[str, str]:
        if pid in PATRONS:
            return PATRONS[pid]
        name, kind = self.book.status_of(pid)
        if kind != "unknown":
            return name, kind
        if self.open and len(pid) == 7 and pid[0] == "P" and pid[1:].isdigit():
            return f"Bạn đọc {pid}", ""
        return "", "unknown"


def _flags(kind: str) -> str:
    status = [" "] * 14
    if kind == "blocked":
        status[0] = status[1] = "Y"
    if kind == "fees":
        status[11] = "Y"
    return "".join(status)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _sip_due(day: date) -> str:
    return day.strftime("%Y%m%d") + "    235900"


PATRON_INFO_MODES = ("yes", "drop", "resend", "other", "unsupported")


class _Server(SIP2Server):
    """pysip2's server, with 63 answered as ``Library.patron_info`` says (through its frame
    hook, the one place that sees a request before its handler)."""

    def __init__(self, lib: Library, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lib = lib

    async def _process_frame(self, stream: Any, state: Any, frame: bytes) -> None:
        mode = self.lib.patron_info
        if frame[:2] != b"63" or mode in ("yes", "unsupported"):
            await super()._process_frame(stream, state, frame)
            return
        self.lib.patron_info_asked += 1
        if mode == "drop":
            raise anyio.EndOfStream  # pysip2 closes the connection quietly
        if mode == "resend":
            await self._send_96(stream, state)
            return
        decoded = decode_message(frame, encoding=self.encoding)
        status = self.build_acs_status(
            SCStatusRequest(status_code="0", max_print_width="080", protocol_version="2.00")
        )
        await stream.send(
            encode_message(
                status,
                sequence_number=decoded.sequence_number,
                checksum=decoded.checksum is not None,
                encoding=self.encoding,
            )
        )


def build(lib: Library, institution: str = "TVTN") -> SIP2Server:
    if lib.patron_info not in PATRON_INFO_MODES:
        raise ValueError(f"patron_info is one of {', '.join(PATRON_INFO_MODES)}")
    server = _Server(
        lib,
        encoding="utf-8",
        institution_id=institution,
        library_name="Thư viện tỉnh (dummy SIP2)",
        login_required=True,
    )
    _patron_routes(server, lib, institution)
    _loan_routes(server, lib, institution)
    _return_routes(server, lib, institution)
    _item_routes(server, lib, institution)
    if lib.renew_all:
        _renew_all_route(server, lib, institution)
    return server


def _patron_routes(server: SIP2Server, lib: Library, institution: str) -> None:
    """Login, patron status and (unless the server is one without it) patron information."""

    @server.route(LOGIN)
    def login(req: Any, ctx: Any) -> LoginResponse:
        ok = (req.login_user_id, req.login_password) == lib.login
        return LoginResponse(ok="1" if ok else "0")

    def patron_fields(pid: str, ctx: Any, password: str | None = None) -> dict[str, Any]:
        name, kind = lib.patron(pid)
        return {
            "valid_patron_password": None if not password else "YN"[password != PIN],
            "patron_status": _flags(kind),
            "language": "000",
            "transaction_date": ctx.now_18(),
            "institution_id": institution,
            "patron_identifier": pid,
            "personal_name": _nfc(name),
            "valid_patron": "N" if kind == "unknown" else "Y",
            "currency_type": "VND" if kind == "fees" else None,
            "fee_amount": "25000" if kind == "fees" else None,
        }

    @server.route(PATRON_STATUS)
    def patron_status(req: Any, ctx: Any) -> PatronStatusResponse:
        f = patron_fields(req.patron_identifier, ctx, req.patron_password)
        return PatronStatusResponse(
            **{k: v for k, v in f.items() if k in PatronStatusResponse.__struct_fields__}
        )

    def patron_info(req: Any, ctx: Any) -> PatronInformationResponse:
        lib.patron_info_asked += 1
        pid = req.patron_identifier
        charged = sorted(i for i, (p, _) in lib.loans.items() if p == pid)
        overdue = [i for i in charged if lib.loans[i][1] < date.today()]
        ready = lib.holds_ready.get(pid, [])
        fines = ["30000007 Phí quá hạn 25.000 đ"] if lib.patron(pid)[1] == "fees" else []
        summary = (req.summary or "").ljust(10)
        listed = lib.summary and lib.patron(pid)[1] != "unknown"
        return PatronInformationResponse(
            **patron_fields(pid, ctx, req.patron_password),
            hold_items_count=f"{len(ready):04d}",
            overdue_items_count=f"{len(overdue):04d}",
            charged_items_count=f"{len(charged):04d}",
            fine_items_count=f"{len(fines):04d}",
            recall_items_count="0000",
            unavailable_holds_count="0000",
            hold_items=tuple(ready) if listed and summary[0] == "Y" else (),
            overdue_items=tuple(overdue) if listed and summary[1] == "Y" else (),
            charged_items=tuple(charged) if listed and summary[2] == "Y" else (),
            fine_items=tuple(fines) if listed and summary[3] == "Y" else (),
        )

    if lib.patron_info != "unsupported":
        server.route(PATRON_INFORMATION)(patron_info)


def _loan_routes(server: SIP2Server, lib: Library, institution: str) -> None:
    """Checkout, with every reason a library system refuses one."""

    def refuse(req: Any, ctx: Any, message: str, **extra: Any) -> CheckoutResponse:
        return CheckoutResponse(
            ok="0",
            renewal_ok="N",
            magnetic_media="N",
            desensitize="N",
            transaction_date=ctx.now_18(),
            institution_id=institution,
            patron_identifier=req.patron_identifier,
            item_identifier=req.item_identifier,
            title_identifier=_nfc(CATALOGUE.get(req.item_identifier, "")),
            due_date="",
            screen_message=(message,),
            **extra,
        )

    @server.route(CHECKOUT)
    def checkout(req: Any, ctx: Any) -> CheckoutResponse:
        pid, item = req.patron_identifier, req.item_identifier
        name, kind = lib.patron(pid)
        if lib.offline:
            return refuse(req, ctx, "Hệ thống đang ngoại tuyến")
        if kind == "unknown":
            return refuse(req, ctx, "Không tìm thấy bạn đọc")
        if kind == "blocked":
            return refuse(req, ctx, "Thẻ bạn đọc đang bị khóa")
        if lib.title(item) is None:
            return refuse(req, ctx, "Không tìm thấy tài liệu")
        if item in lib.holds:
            return refuse(req, ctx, "Tài liệu đang được giữ cho bạn đọc khác")
        holder = lib.loans.get(item)
        if holder is not None and holder[0] != pid:
            return refuse(req, ctx, "Tài liệu đang được mượn")
        fee = item in lib.fee_items
        if fee and req.fee_acknowledged != "Y":  # as Koha: show the charge, ask, resend BO=Y
            return refuse(
                req,
                ctx,
                "Mượn tài liệu này mất phí 5.000 đ",
                fee_type="01",
                currency_type="VND",
                fee_amount="5000",
            )
        due = date.today() + timedelta(days=lib.loan_days)
        lib.loans[item] = (pid, due)
        lib.checkouts[item] = lib.checkouts.get(item, 0) + 1
        return CheckoutResponse(
            ok="1",
            renewal_ok="N" if holder is None else "Y",
            magnetic_media="N",
            desensitize="Y",
            transaction_date=ctx.now_18(),
            institution_id=institution,
            patron_identifier=pid,
            item_identifier=item,
            title_identifier=_nfc(lib.title(item) or ""),
            due_date=_sip_due(due),
            fee_amount="5000" if fee else None,
            currency_type="VND" if fee else None,
        )


def _return_routes(server: SIP2Server, lib: Library, institution: str) -> None:
    """Checkin and renewal."""

    @server.route(CHECKIN)
    def checkin(req: Any, ctx: Any) -> CheckinResponse:
        item = req.item_identifier
        known = lib.title(item) is not None and not lib.offline
        holder = lib.loans.pop(item, None) if known else None
        hold = item in lib.holds
        return CheckinResponse(
            ok="1" if known else "0",
            resensitize="Y" if known else "N",
            magnetic_media="N",
            alert="Y" if hold else "N",
            transaction_date=ctx.now_18(),
            institution_id=institution,
            item_identifier=item,
            permanent_location="Kho mở tầng 1",
            title_identifier=_nfc(CATALOGUE.get(item, "")) or None,
            sort_bin="B2" if hold else "A1",
            patron_identifier=holder[0] if holder else None,
            screen_message=("Đặt vào khay giữ chỗ",) if hold else (),
        )

    @server.route(RENEW)
    def renew(req: Any, ctx: Any) -> RenewResponse:
        pid, item = req.patron_identifier, req.item_identifier
        holder = lib.loans.get(item)
        ok = holder is not None and holder[0] == pid and not lib.offline
        ok = ok and item not in lib.not_renewable
        due = date.today() + timedelta(days=lib.loan_days)
        if ok:
            lib.loans[item] = (pid, due)
        return RenewResponse(
            ok="1" if ok else "0",
            renewal_ok="Y" if ok else "N",
            magnetic_media="N",
            desensitize="N",
            transaction_date=ctx.now_18(),
            institution_id=institution,
            patron_identifier=pid,
            item_identifier=item,
            title_identifier=_nfc(CATALOGUE.get(item, "")),
            due_date=_sip_due(due) if ok else "",
            screen_message=() if ok else ("Không gia hạn được tài liệu này",),
        )


def _renew_all_route(server: SIP2Server, lib: Library, institution: str) -> None:
    """Renew all (65): every loan of the reader, each as the single renewal would."""

    @server.route(RENEW_ALL)
    def renew_all(req: Any, ctx: Any) -> RenewAllResponse:
        pid = req.patron_identifier
        mine = sorted(i for i, (p, _) in lib.loans.items() if p == pid)
        renewed = [i for i in mine if i not in lib.not_renewable and not lib.offline]
        due = date.today() + timedelta(days=lib.loan_days)
        for item in renewed:
            lib.loans[item] = (pid, due)
        unrenewed = [i for i in mine if i not in renewed]
        return RenewAllResponse(
            ok="0" if lib.offline else "1",
            renewed_count=f"{len(renewed):04d}",
            unrenewed_count=f"{len(unrenewed):04d}",
            transaction_date=ctx.now_18(),
            institution_id=institution,
            renewed_items=tuple(renewed),
            unrenewed_items=tuple(unrenewed),
        )


def _item_routes(server: SIP2Server, lib: Library, institution: str) -> None:
    """Item information and the end of a patron's session."""

    @server.route(ITEM_INFORMATION)
    def item_info(req: Any, ctx: Any) -> ItemInformationResponse:
        item = req.item_identifier
        loan = lib.loans.get(item)
        status = "03"  # available
        if lib.title(item) is None:
            status = "01"
        elif loan:
            status = "04"
        elif item in lib.holds:
            status = "08"
        return ItemInformationResponse(
            circulation_status=status,
            security_marker="02",
            fee_type="01",
            transaction_date=ctx.now_18(),
            item_identifier=item,
            title_identifier=_nfc(lib.title(item) or ""),
            due_date=_sip_due(loan[1]) if loan else None,
        )

    @server.route(END_PATRON_SESSION)
    def end(req: Any, ctx: Any) -> EndSessionResponse:
        return EndSessionResponse(
            end_session="Y",
            transaction_date=ctx.now_18(),
            institution_id=institution,
            patron_identifier=req.patron_identifier,
        )


async def serve(
    port: int,
    host: str = "127.0.0.1",
    lib: Library | None = None,
    *,
    patron_info: str = "yes",
    rest_port: int | None = None,
    patrons_file: Path | None = None,
    summary: bool = True,
    renew_all: bool = True,
) -> None:
    """SIP2 on ``port``; with ``rest_port``, the Koha-shaped patron API on it as well, its
    patrons kept in ``patrons_file`` across restarts."""
    lib = lib or Library(patron_info=patron_info, summary=summary, renew_all=renew_all)
    lib.book.path = patrons_file
    lib.book.load()
    server = build(lib)
    async with server.start(host, port):
        if rest_port is None:
            await asyncio.Event().wait()
            return
        rest = uvicorn.Server(
            uvicorn.Config(
                build_app(lib.book),
                host=host,
                port=rest_port,
                log_level="warning",
                access_log=False,
            )
        )
        await rest.serve()

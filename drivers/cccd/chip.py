"""Reading the CCCD chip over PC/SC (pyscard -> pcscd): BAC, secure messaging, files.

Status words are turned into decisions a librarian can act on: 6300 or 6988 during
authentication means the keys are wrong ("check the card": the MRZ or QR data does not belong
to this chip) and the reader does not retry, since chips count failed attempts; a card pulled
out mid-read is :class:`CardRemoved` and can simply be read again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from biblioedge.drivers.cccd.bac import bac_keys
from biblioedge.drivers.cccd.errors import CccdError
from biblioedge.drivers.cccd.pace import (
    PASSWORD_CAN,
    PaceError,
    PaceInfo,
    PcdPace,
    dynamic,
    mse_set_at,
    parse_card_access,
    undynamic,
)
from biblioedge.drivers.cccd.sm import (
    Apdu,
    BacChallenge,
    SecureMessaging,
    external_authenticate_data,
    session_from_icc,
)
from biblioedge.drivers.errors import DeviceUnavailable

log = logging.getLogger("biblioedge.drivers.cccd.chip")

MRTD_AID = bytes.fromhex("A0000002471001")
FILES = {  # ICAO LDS1 short names -> file ids
    "COM": 0x011E,
    "DG1": 0x0101,
    "DG2": 0x0102,
    "DG13": 0x010D,
    "DG14": 0x010E,
    "DG15": 0x010F,
    "SOD": 0x011D,
}
CHUNK = 0xDF  # the largest READ BINARY that still fits a short secure-messaging response
EXT_CHUNK = 0x0400  # per READ BINARY when the chip announces extended length in its ATR

Progress = Callable[[str, int, int], None]


class WrongKeys(CccdError):
    """BAC refused: the document number, birth or expiry date do not belong to this chip."""


class PaceRefused(WrongKeys):
    """PACE refused the CAN (6300 at the tokens); BAC with the MRZ data may still work."""


class CardRemoved(CccdError):
    """The card left the reader during the read; reading again is safe."""


class AccessDenied(CccdError):
    """6982: the chip requires secure messaging (or more) for this command."""


@dataclass
class ChipRead:
    files: dict[str, bytes] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0
    apdus: int = 0
    access: str = ""  # "PACE" or "BAC"
    extended: bool = False  # extended-length READ BINARY used


def list_readers() -> list[str]:
    try:
        from smartcard.System import readers
    except ImportError as exc:
        raise DeviceUnavailable("pyscard is not installed (pip install biblioedge[desk])") from exc
    try:
        return [str(r) for r in readers()]
    except Exception as exc:  # pyscard raises its own types when pcscd is absent
        raise DeviceUnavailable(f"PC/SC unavailable (is pcscd running?): {exc}") from exc


def extended_length(atr: bytes) -> bool:
    """ISO 7816-4 card capabilities in the ATR's historical bytes: extended Lc/Le supported?
    (compact-TLV tag 7, third byte, bit 7). Anything unparsable means no."""
    if len(atr) < 2:
        return False
    k = atr[1] & 0x0F
    pos, td = 2, atr[1]
    while True:  # skip the interface bytes TAi, TBi, TCi, TDi
        pos += bin(td >> 4 & 0x7).count("1")
        if not td & 0x80:
            break
        if pos >= len(atr):
            return False
        td = atr[pos]
        pos += 1
    hist = atr[pos : pos + k]
    if len(hist) < k or not hist or hist[0] != 0x80:
        return False
    i = 1
    while i < len(hist):
        tag, size = hist[i] >> 4, hist[i] & 0x0F
        value = hist[i + 1 : i + 1 + size]
        if tag == 0x7 and len(value) >= 3:
            return bool(value[2] & 0x40)
        i += 1 + size
    return False


class ChipReader:
    def __init__(self, reader: str | None = None, progress: Progress | None = None) -> None:
        self.reader_name = reader
        self.progress = progress
        self._conn: Any = None
        self.apdus = 0
        self.extended = False

    def connect(self) -> None:
        try:
            from smartcard.System import readers
        except ImportError as exc:
            raise DeviceUnavailable(
                "pyscard is not installed (pip install biblioedge[desk])"
            ) from exc

        try:
            available = readers()
        except Exception as exc:
            raise DeviceUnavailable(f"PC/SC unavailable (is pcscd running?): {exc}") from exc
        candidates = [
            r for r in available if self.reader_name is None or self.reader_name in str(r)
        ]
        if not candidates:
            raise DeviceUnavailable(
                f"no reader {self.reader_name or ''} among {[str(r) for r in available]}"
            )
        last: Exception | None = None
        for r in candidates:
            conn = r.createConnection()
            try:
                conn.connect()
            except Exception as exc:  # NoCardException and friends
                last = exc
                continue
            self._conn = conn
            try:
                self.extended = extended_length(bytes(conn.getATR()))
            except Exception:  # an ATR pyscard cannot give: stay with short APDUs
                self.extended = False
            return
        raise CardRemoved(f"no card on the reader: {last}")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.disconnect()
            except Exception:
                pass
            self._conn = None

    def transmit(self, raw: bytes) -> tuple[bytes, bytes]:
        if self._conn is None:
            raise CardRemoved("not connected")
        try:
            data, sw1, sw2 = self._conn.transmit(list(raw))
        except Exception as exc:  # CardConnectionException: card gone or reader unplugged
            raise CardRemoved(f"card removed during the read: {exc}") from exc
        self.apdus += 1
        return bytes(data), bytes([sw1, sw2])

    # -- BAC --------------------------------------------------------------------------------

    def select_application(self) -> None:
        _, sw = self.transmit(Apdu(0x00, 0xA4, 0x04, 0x0C, MRTD_AID).to_bytes())
        if sw != b"\x90\x00":
            raise CccdError(f"not an ICAO chip: SELECT application answered {sw.hex()}")

    def bac(self, mrz_information: str) -> SecureMessaging:
        keys = bac_keys(mrz_information)
        rnd_icc, sw = self.transmit(Apdu(0x00, 0x84, 0x00, 0x00, le=8).to_bytes())
        if sw != b"\x90\x00" or len(rnd_icc) != 8:
            raise CccdError(f"GET CHALLENGE answered {sw.hex()}")
        challenge = BacChallenge.new(rnd_icc)
        data = external_authenticate_data(keys.k_enc, keys.k_mac, challenge)
        answer, sw = self.transmit(Apdu(0x00, 0x82, 0x00, 0x00, data, le=40).to_bytes())
        if sw in (b"\x63\x00", b"\x69\x88"):
            raise WrongKeys("check the card: the chip refused these keys (not retried)")
        if sw != b"\x90\x00":
            raise CccdError(f"EXTERNAL AUTHENTICATE answered {sw.hex()}")
        return session_from_icc(keys.k_enc, keys.k_mac, challenge, answer)

    # -- PACE -------------------------------------------------------------------------------

    def pace_info(self) -> PaceInfo | None:
        """The chip's supported PACE offer from EF.CardAccess, or None (then BAC)."""
        data, sw = self.transmit(Apdu(0x00, 0xB0, 0x9C, 0x00, le=0).to_bytes())
        if sw != b"\x90\x00" or not data:
            return None
        try:
            infos = parse_card_access(data)
        except PaceError as exc:
            log.warning("unreadable EF.CardAccess, using BAC: %s", exc)
            return None
        return next((i for i in infos if i.supported), None)

    def pace(self, info: PaceInfo, can: str) -> SecureMessaging:
        pcd = PcdPace(info, can, PASSWORD_CAN)
        _, sw = self.transmit(
            Apdu(0x00, 0x22, 0xC1, 0xA4, mse_set_at(info, PASSWORD_CAN)).to_bytes()
        )
        if sw != b"\x90\x00":
            raise CccdError(f"MSE:Set AT answered {sw.hex()}")

        def step(cla: int, data: bytes, tag: int) -> bytes:
            answer, sw = self.transmit(Apdu(cla, 0x86, 0x00, 0x00, data, le=0).to_bytes())
            if sw in (b"\x63\x00", b"\x69\x88") or sw[:1] == b"\x63":
                raise PaceRefused("check the card: the chip refused the CAN (not retried)")
            if sw != b"\x90\x00":
                raise CccdError(f"GENERAL AUTHENTICATE answered {sw.hex()}")
            return undynamic(answer, tag)

        nonce = step(0x10, dynamic(0, b""), 0x80)
        pk_map_ic = step(0x10, dynamic(0x81, pcd.map_key(nonce)), 0x82)
        pk_eph_ic = step(0x10, dynamic(0x83, pcd.ephemeral_key(pk_map_ic)), 0x84)
        token_ic = step(0x00, dynamic(0x85, pcd.token(pk_eph_ic)), 0x86)
        sm = pcd.finish(token_ic)
        _, sw = self._sm_call(sm, Apdu(0x00, 0xA4, 0x04, 0x0C, MRTD_AID))
        if sw != b"\x90\x00":
            raise CccdError(f"SELECT application after PACE answered {sw.hex()}")
        return sm

    # -- files ------------------------------------------------------------------------------

    def _sm_call(self, sm: SecureMessaging, apdu: Apdu) -> tuple[bytes, bytes]:
        raw, sw = self.transmit(sm.protect(apdu))
        if not raw and sw != b"\x90\x00":
            if sw == b"\x69\x88":
                raise CccdError("secure messaging broke down (6988): read the card again")
            if sw == b"\x69\x82":
                raise AccessDenied("security status not satisfied (6982)")
            return b"", sw
        return sm.unprotect(raw + sw)

    def read_file(self, sm: SecureMessaging, name: str) -> bytes | None:
        fid = FILES[name]
        _, sw = self._sm_call(sm, Apdu(0x00, 0xA4, 0x02, 0x0C, fid.to_bytes(2, "big")))
        if sw == b"\x6a\x82":
            return None
        if sw != b"\x90\x00":
            raise CccdError(f"SELECT {name} answered {sw.hex()}")
        head, sw = self._sm_call(sm, Apdu(0x00, 0xB0, 0x00, 0x00, le=4))
        if sw != b"\x90\x00" or len(head) < 2:
            raise CccdError(f"READ BINARY {name} answered {sw.hex()}")
        total = _tlv_total(head, name)
        content = bytearray(head[: min(len(head), total)])
        while len(content) < total:
            offset = len(content)
            n = min(EXT_CHUNK if self.extended else CHUNK, total - offset)
            read = Apdu(0x00, 0xB0, offset >> 8 & 0x7F, offset & 0xFF, le=n, extended=n > CHUNK)
            part, sw = self._sm_call(sm, read)
            if sw != b"\x90\x00" or not part:
                raise CccdError(f"READ BINARY {name} at offset {offset} answered {sw.hex()}")
            content += part
            if self.progress is not None:
                self.progress(name, len(content), total)
        return bytes(content)

    def read(
        self,
        mrz_information: str | None,
        names: tuple[str, ...] = ("COM", "DG1", "DG2", "DG13", "DG14", "DG15", "SOD"),
        *,
        can: str | None = None,
    ) -> ChipRead:
        """PACE with the CAN when given and offered by the chip, else BAC with the MRZ data."""
        t0 = time.perf_counter()
        self.apdus = 0
        result = ChipRead()
        self.connect()
        try:
            info = self.pace_info() if can else None
            if info is not None and can is not None:
                sm = self.pace(info, can)
                result.access = "PACE"
            else:
                if mrz_information is None:
                    raise WrongKeys("check the card: the chip offers no PACE and no MRZ is known")
                self.select_application()
                sm = self.bac(mrz_information)
                result.access = "BAC"
            result.extended = self.extended
            for name in names:
                data = self.read_file(sm, name)
                if data is None:
                    result.missing.append(name)
                else:
                    result.files[name] = data
        finally:
            self.close()
        result.seconds = time.perf_counter() - t0
        result.apdus = self.apdus
        return result


def _tlv_total(head: bytes, name: str) -> int:
    """Total length of the file from its outer TLV header (first 4 bytes)."""
    if len(head) < 2:
        raise CccdError(f"{name}: header too short")
    first = head[1]
    if first < 0x80:
        return 2 + first
    size = first - 0x80
    if size not in (1, 2) or len(head) < 2 + size:
        raise CccdError(f"{name}: unsupported length at offset 1 ({first:#x})")
    return 2 + size + int.from_bytes(head[2 : 2 + size], "big")

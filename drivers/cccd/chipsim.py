"""A CCCD chip simulator behind Debian's ``vsmartcard-vpcd`` virtual reader.

vpcd is a pcscd driver that listens on localhost (port 35963 by default) for a card emulator;
messages both ways are a 2-byte big-endian length and a payload. One-byte payloads from vpcd
are control codes (0 power off, 1 power on, 2 reset, 4 send the ATR); anything longer is a
command APDU to answer with a response APDU. Debian's own ``vicc`` emulator is broken on
Python 3, hence this one.

The chip behaves like an eMRTD with BAC: after SELECT of the ICAO application it answers GET
CHALLENGE and EXTERNAL AUTHENTICATE (6300 for wrong keys, never revealing more), and from then
on only secure-messaging APDUs (plain SELECT or READ BINARY: 6982). Files are served by their
file ids; wrong MACs end the session (6988).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time

from biblioedge.drivers.cccd.bac import bac_keys
from biblioedge.drivers.cccd.chip import MRTD_AID
from biblioedge.drivers.cccd.errors import CccdError
from biblioedge.drivers.cccd.pace import (
    PACE_ECDH_GM_AES_128,
    PASSWORD_CAN,
    AesSecureMessaging,
    IcPace,
    PaceError,
    PaceInfo,
    card_access,
    dynamic,
    oid_der,
    undynamic,
)
from biblioedge.drivers.cccd.sm import (
    Apdu,
    SecureMessaging,
    SecureMessagingError,
    decrypt,
    encrypt,
    pad,
    read_tlv,
    retail_mac,
)

log = logging.getLogger("biblioedge.drivers.cccd.chipsim")

# historical bytes 80 | 31 F8 | 73 F7 41 E0 | 82 90 00: card capabilities (73) third byte
# E0 says command chaining and extended Lc/Le are supported; ATR_SHORT (A0) says no extended
ATR = bytes.fromhex("3B8A80018031F873F741E082900075")
ATR_SHORT = bytes.fromhex("3B8A80018031F873F741A082900035")
VPCD_PORT = 35963

SW_OK = b"\x90\x00"
SW_AUTH_FAILED = b"\x63\x00"
SW_SECURITY = b"\x69\x82"
SW_SM_BAD = b"\x69\x88"
SW_NOT_FOUND = b"\x6a\x82"
SW_WRONG_OFFSET = b"\x6b\x00"
SW_INS = b"\x6d\x00"
SW_COND = b"\x69\x85"


class CccdChip:
    """The card's logic, independent of transport (tests can drive it directly).

    With a ``can`` the chip also offers PACE (EF.CardAccess readable at the MF, MSE:Set AT,
    four GENERAL AUTHENTICATE steps, then AES secure messaging), as CCCD chips do; BAC stays
    available for readers that do not speak PACE.
    """

    def __init__(
        self,
        mrz_information: str,
        files: dict[int, bytes],
        *,
        can: str | None = None,
        pace_parameter: int = 13,
        extended_length: bool = True,
    ) -> None:
        keys = bac_keys(mrz_information)
        self.k_enc, self.k_mac = keys.k_enc, keys.k_mac
        self.files = files
        self.can = can
        self.card_access = card_access(pace_parameter) if can else None
        self.pace_info = PaceInfo(PACE_ECDH_GM_AES_128, 2, pace_parameter)
        self.pace_runs = 0
        self.bac_failures = 0
        self.extended_length = extended_length
        self.atr = ATR if extended_length else ATR_SHORT
        self.reset()

    def reset(self) -> None:
        self.app_selected = False
        self.rnd_icc: bytes | None = None
        self.sm: SecureMessaging | None = None
        self.current: int | None = None
        self.mf_file: int | None = None
        self.pace: IcPace | None = None
        self.pace_step = 0

    def handle(self, raw: bytes) -> bytes:
        try:
            apdu = Apdu.parse(raw)
        except ValueError:
            return b"\x67\x00"
        if apdu.cla & 0x0C == 0x0C:
            return self._protected(raw)
        if self.card_access is not None and not self.app_selected:
            answer = self._master_file(apdu)
            if answer is not None:
                return answer
        if apdu.ins == 0xA4 and apdu.p1 == 0x04:
            if apdu.data == MRTD_AID:
                self.reset()
                self.app_selected = True
                return SW_OK
            return SW_NOT_FOUND
        if not self.app_selected:
            return SW_COND
        if apdu.ins == 0x84:  # GET CHALLENGE
            self.rnd_icc = os.urandom(8)
            return self.rnd_icc + SW_OK
        if apdu.ins == 0x82:  # EXTERNAL AUTHENTICATE
            return self._external_authenticate(apdu.data)
        if apdu.ins in (0xA4, 0xB0):  # files need secure messaging once the app is selected
            return SW_SECURITY
        return SW_INS

    # -- PACE at the master file --------------------------------------------------------

    def _master_file(self, apdu: Apdu) -> bytes | None:
        """EF.CardAccess, MSE:Set AT and GENERAL AUTHENTICATE; None: not a PACE command."""
        assert self.card_access is not None
        if apdu.ins == 0xA4 and apdu.p1 in (0x00, 0x02) and len(apdu.data) == 2:
            fid = int.from_bytes(apdu.data, "big")
            if fid == 0x3F00:
                return SW_OK
            if fid == 0x011C:
                self.mf_file = fid
                return SW_OK
            return None
        if apdu.ins == 0xB0 and (apdu.p1 == 0x9C or (apdu.p1 < 0x80 and self.mf_file)):
            offset = apdu.p2 if apdu.p1 & 0x80 else (apdu.p1 << 8 | apdu.p2)
            n = 256 if not apdu.le else apdu.le
            return self.card_access[offset : offset + n] + SW_OK
        if apdu.ins == 0x22 and apdu.p1 == 0xC1 and apdu.p2 == 0xA4:
            return self._mse_set_at(apdu.data)
        if apdu.ins == 0x86:
            return self._general_authenticate(apdu)
        return None

    def _mse_set_at(self, data: bytes) -> bytes:
        try:
            objects = {}
            offset = 0
            while offset < len(data):
                tag, value, offset = read_tlv(data, offset)
                objects[tag] = value
        except CccdError:
            return b"\x6a\x80"
        wanted = oid_der(PACE_ECDH_GM_AES_128)[2:]
        if objects.get(0x80) != wanted or objects.get(0x83) != b"\x02":
            return b"\x6a\x80"  # only PACE with the CAN is offered
        if 0x84 in objects and objects[0x84] != bytes([self.pace_info.parameter_id]):
            return b"\x6a\x80"
        assert self.can is not None
        self.pace = IcPace(self.pace_info, self.can, PASSWORD_CAN)
        self.pace_step = 1
        self.sm = None
        return SW_OK

    def _general_authenticate(self, apdu: Apdu) -> bytes:
        pace, step = self.pace, self.pace_step
        if pace is None:
            return SW_COND
        try:
            if step == 1:
                out = dynamic(0x80, pace.encrypted_nonce())
            elif step == 2:
                out = dynamic(0x82, pace.map_key(undynamic(apdu.data, 0x81)))
            elif step == 3:
                out = dynamic(0x84, pace.ephemeral_key(undynamic(apdu.data, 0x83)))
            else:
                token = pace.check_token(undynamic(apdu.data, 0x85))
                self.pace, self.pace_step = None, 0
                self.pace_runs += 1
                if token is None:
                    return SW_AUTH_FAILED
                self.sm = AesSecureMessaging(pace.ks_enc, pace.ks_mac)
                return dynamic(0x86, token) + SW_OK
        except PaceError:
            self.pace, self.pace_step = None, 0
            return b"\x6a\x80"
        self.pace_step += 1
        return out + SW_OK

    def _external_authenticate(self, data: bytes) -> bytes:
        if self.rnd_icc is None or len(data) != 40:
            return SW_COND
        e_ifd, m_ifd = data[:32], data[32:]
        if retail_mac(self.k_mac, pad(e_ifd)) != m_ifd:
            self.rnd_icc = None  # a new challenge is needed: no guessing against one nonce
            self.bac_failures += 1
            return SW_AUTH_FAILED
        s = decrypt(self.k_enc, e_ifd)
        rnd_ifd, rnd_icc, k_ifd = s[:8], s[8:16], s[16:32]
        if rnd_icc != self.rnd_icc:
            return SW_AUTH_FAILED
        k_icc = os.urandom(16)
        e_icc = encrypt(self.k_enc, rnd_icc + rnd_ifd + k_icc)
        from biblioedge.drivers.cccd.bac import derive_key

        seed = bytes(a ^ b for a, b in zip(k_ifd, k_icc, strict=True))
        self.sm = SecureMessaging(
            derive_key(seed, 1), derive_key(seed, 2), rnd_icc[4:] + rnd_ifd[4:]
        )
        self.rnd_icc = None
        return e_icc + retail_mac(self.k_mac, pad(e_icc)) + SW_OK

    def _protected(self, raw: bytes) -> bytes:
        sm = self.sm
        if sm is None:
            return SW_SM_BAD
        try:
            cmd = sm.open_command(raw)
        except SecureMessagingError:
            self.sm = None  # the session is over; BAC again
            return SW_SM_BAD
        data, sw = self._file_command(cmd)
        return sm.seal_response(data, sw)

    def _file_command(self, cmd: Apdu) -> tuple[bytes, bytes]:
        if cmd.ins == 0xA4 and cmd.p1 == 0x04:  # after PACE the application is selected here
            if cmd.data != MRTD_AID:
                return b"", SW_NOT_FOUND
            self.app_selected = True
            return b"", SW_OK
        if not self.app_selected:
            return b"", SW_COND
        if cmd.ins == 0xA4 and cmd.p1 == 0x02 and len(cmd.data) == 2:
            fid = int.from_bytes(cmd.data, "big")
            if fid not in self.files:
                return b"", SW_NOT_FOUND
            self.current = fid
            return b"", SW_OK
        if cmd.ins == 0xB0:
            if self.current is None:
                return b"", SW_COND
            offset = (cmd.p1 & 0x7F) << 8 | cmd.p2
            content = self.files[self.current]
            if offset > len(content):
                return b"", SW_WRONG_OFFSET
            if cmd.extended and not self.extended_length:
                return b"", b"\x67\x00"
            return content[offset : offset + cmd.expected], SW_OK
        return b"", SW_INS


class VpcdCard:
    """Connects a :class:`CccdChip` to vpcd; ``insert``/``remove`` like a hand at the reader."""

    def __init__(self, chip: CccdChip, host: str = "127.0.0.1", port: int = VPCD_PORT) -> None:
        self.chip = chip
        self.host, self.port = host, port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.apdus = 0

    def insert(self, timeout: float = 30.0) -> None:
        """Connect to vpcd. A connection made while vpcd is still tearing down the previous
        card is accepted by the kernel but never served: then reconnect, as a card that did
        not make contact is pushed in again."""
        deadline = time.monotonic() + timeout
        while True:
            try:  # vpcd listens again once pcscd polled the slot: on a loaded host, late
                sock = socket.create_connection(
                    (self.host, self.port), timeout=max(0.5, deadline - time.monotonic())
                )
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            # one small message each way per APDU: Nagle + delayed ACK would add 40 ms to each
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(2.0)
            try:
                first = sock.recv(2, socket.MSG_PEEK)
            except TimeoutError:
                first = b""
            if first:
                break
            sock.close()
            if time.monotonic() > deadline:
                raise TimeoutError("vpcd did not talk to the card")
            time.sleep(0.2)
        sock.settimeout(None)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="vpcd-card", daemon=True)
        self._thread.start()

    def remove(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _recv(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            sock = self._sock
            if sock is None:
                return None
            try:
                chunk = sock.recv(n - len(buf))
                # vpcd writes length and APDU as two segments: ACK at once, or Nagle on its
                # side holds the APDU for our 40 ms delayed ACK (Linux resets this per read)
                if hasattr(socket, "TCP_QUICKACK"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self) -> None:
        while True:
            head = self._recv(2)
            if head is None:
                return
            (size,) = struct.unpack(">H", head)
            msg = self._recv(size)
            if msg is None:
                return
            if size == 1:
                code = msg[0]
                if code in (0, 1, 2):
                    self.chip.reset()
                    continue
                if code == 4:
                    self._send(self.chip.atr)
                continue
            self.apdus += 1
            self._send(self.chip.handle(msg))

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is not None:
            try:
                sock.sendall(struct.pack(">H", len(data)) + data)
            except OSError:
                pass

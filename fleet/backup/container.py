"""The encrypted backup file: a header, then a stream of AEAD chunks.

Why this shape: a backup holds central's keys and every reader's sealed data, so it must be
unreadable without a key that central itself does not hold (a thief of central's disk must
not get its backups too). The data key is random per backup and sealed to the backup
*public* key (X25519); only the offline private key opens it. The payload is cut into chunks,
each sealed with AES-256-GCM under a nonce made of a per-backup prefix, the chunk's number and
a last-chunk flag, with the header as associated data (the STREAM construction): a flipped
bit, a reordered, dropped or appended chunk, a cut-off file or a header from another backup
each fail authentication at a known place, so a damaged backup is refused before restore
touches anything.

    MAGIC | u32 header length | header JSON | (u32 length | sealed chunk)* (the last flagged)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from biblioedge.provisioning.sealing import SealError, open_sealed, seal, x25519_public_b64

MAGIC = b"BIBLIOEDGE-BACKUP\n"
FORMAT = 1
CHUNK = 1 << 20
MAX_HEADER = 64 * 1024
_TAG = 16


class BackupError(ValueError):
    """A backup that cannot be used, with the reason in words."""


def key_id(public: x25519.X25519PublicKey) -> str:
    """Short, stable name of a backup key, shown so a person can tell keys apart."""
    return hashlib.sha256(x25519_public_b64(public).encode()).hexdigest()[:16]


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", counter) + (b"\x01" if last else b"\x00")


def _wrap_context(backup_id: str) -> bytes:
    return b"biblioedge-backup\x00" + backup_id.encode()


@dataclass(frozen=True)
class Header:
    backup_id: str
    created: str
    central_id: str
    key_id: str
    raw: bytes

    @property
    def fields(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed


class Writer:
    """A file-like sink: what is written is sealed chunk by chunk into ``out``."""

    def __init__(
        self,
        out: IO[bytes],
        recipient: x25519.X25519PublicKey,
        *,
        backup_id: str,
        created: str,
        central_id: str,
    ) -> None:
        self._out = out
        dek = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(dek)
        self._prefix = os.urandom(7)
        header = {
            "format": FORMAT,
            "backup_id": backup_id,
            "created": created,
            "central_id": central_id,
            "key_id": key_id(recipient),
            "wrapped_key": base64.b64encode(
                seal(recipient, dek, _wrap_context(backup_id))
            ).decode(),
            "nonce_prefix": base64.b64encode(self._prefix).decode(),
            "chunk": CHUNK,
        }
        self._header = json.dumps(header, sort_keys=True).encode()
        out.write(MAGIC + struct.pack(">I", len(self._header)) + self._header)
        self._buf = bytearray()
        self._counter = 0
        self.written = 0
        self._closed = False

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) > CHUNK:  # keep one chunk back: the last one is flagged
            self._emit(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return len(data)

    def _emit(self, plain: bytes, last: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._counter, last), plain, self._header)
        self._out.write(struct.pack(">I", len(sealed)) + sealed)
        self._counter += 1
        self.written += len(plain)

    def close(self) -> None:
        if not self._closed:
            self._emit(bytes(self._buf), last=True)
            self._buf.clear()
            self._closed = True

    def flush(self) -> None:
        """tarfile calls it; chunks are written as they fill."""


def read_header(src: IO[bytes]) -> Header:
    magic = src.read(len(MAGIC))
    if magic != MAGIC:
        raise BackupError("not a biblioedge backup (wrong magic bytes)")
    raw_len = src.read(4)
    if len(raw_len) != 4:
        raise BackupError("truncated backup: the header is cut off")
    (length,) = struct.unpack(">I", raw_len)
    if not 0 < length <= MAX_HEADER:
        raise BackupError(f"corrupt backup: header length {length} is out of bounds")
    raw = src.read(length)
    if len(raw) != length:
        raise BackupError("truncated backup: the header is cut off")
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BackupError(f"unsupported backup format {doc.get('format')!r}")
        fields = {k: doc[k] for k in ("backup_id", "created", "central_id", "key_id")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise BackupError("corrupt backup: header fields of the wrong type")
        base64.b64decode(doc["wrapped_key"], validate=True)
        if len(base64.b64decode(doc["nonce_prefix"], validate=True)) != 7:
            raise BackupError("corrupt backup: bad nonce prefix")
        if doc.get("chunk") != CHUNK:
            raise BackupError(f"corrupt backup: chunk size {doc.get('chunk')!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, BackupError):
            raise
        raise BackupError(f"corrupt backup header: {exc}") from None
    return Header(raw=raw, **fields)


def open_chunks(
    src: IO[bytes], header: Header, private: x25519.X25519PrivateKey
) -> Iterator[bytes]:
    """The plaintext, chunk by chunk; raises ``BackupError`` at the first bad byte."""
    fields = header.fields
    mine = key_id(private.public_key())
    if mine != header.key_id:
        raise BackupError(
            f"this backup is sealed to backup key {header.key_id}, not to the given key {mine}"
        )
    try:
        dek = open_sealed(
            private, base64.b64decode(fields["wrapped_key"]), _wrap_context(header.backup_id)
        )
    except SealError:
        raise BackupError("the backup's data key does not open with the given key") from None
    aead = AESGCM(dek)
    prefix = base64.b64decode(fields["nonce_prefix"])
    counter = 0
    while True:
        raw_len = src.read(4)
        if len(raw_len) != 4:
            raise BackupError(f"truncated backup: it ends after chunk {counter} of ?")
        (length,) = struct.unpack(">I", raw_len)
        if not _TAG <= length <= CHUNK + _TAG:
            raise BackupError(f"corrupt backup: chunk {counter} has length {length}")
        sealed = src.read(length)
        if len(sealed) != length:
            raise BackupError(f"truncated backup: chunk {counter} is cut off")
        for last in (False, True):
            try:
                plain = aead.decrypt(_nonce(prefix, counter, last), sealed, header.raw)
            except InvalidTag:
                continue
            break
        else:
            raise BackupError(f"corrupt backup: chunk {counter} fails authentication")
        yield plain
        counter += 1
        if last:
            if src.read(1):
                raise BackupError("corrupt backup: data after the last chunk")
            return


class ChunkReader:
    """A read-only stream over ``open_chunks``, for ``tarfile`` in stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._buf) < size):
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                self._eof = True
        if size < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def drain(self) -> None:
        """Read to the end, so that the last chunk's flag and trailing bytes are checked."""
        while self.read(CHUNK):
            pass

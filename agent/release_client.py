"""The kiosk's side of release verification: python-tuf's ngclient over central's HTTPS.

The trusted root comes with enrollment (``<data>/tuf/root.json``) and every metadata file the
client accepts is persisted beside it, so what the kiosk trusts survives restarts and days
offline: an older timestamp, snapshot or targets (a replay), a snapshot that does not match
its targets (mix-and-match), a file longer than its signed length (endless data) or metadata
past its expiry are refused by ngclient, and this module turns each refusal into one reason a
person can read. Expired metadata stops new installs only; the running release is untouched.

Downloads go through ``ResumingFetcher``: when a connection is cut mid-file it asks again
from the byte it reached (HTTP Range), and it reports progress as bytes arrive. Wheels are
kept in a content-checked cache (``<prefix>/wheels``), so a download interrupted by a restart
costs at most the one file it was in.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

log = logging.getLogger("biblioedge.agent.release_client")

Progress = Callable[[int], None]


class ReleaseUnavailable(RuntimeError):
    """No verified release can be had now; ``reason`` is a short code for central."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


#: how a TUF (or disk) error becomes a ReleaseUnavailable: (error, reason for central, what
#: the detail says before the error's own text), tried in order, subclasses before their bases
ErrorMap = tuple[tuple[type[Exception], str, str], ...]
METADATA_ERRORS: ErrorMap = (
    (tuf_errors.ExpiredMetadataError, "expired_metadata", "release metadata expired"),
    (tuf_errors.BadVersionNumberError, "rollback_attack", "older metadata than trusted"),
    (tuf_errors.UnsignedMetadataError, "bad_signature", "metadata not signed as trusted"),
    (tuf_errors.LengthOrHashMismatchError, "mix_and_match", "metadata does not match"),
    (tuf_errors.RepositoryError, "bad_metadata", "release metadata refused"),
    (tuf_errors.DownloadError, "unreachable", "cannot fetch release metadata"),
    (OSError, "local_error", "release metadata not stored"),
)
INFO_ERRORS: ErrorMap = ((tuf_errors.RepositoryError, "bad_metadata", ""),)
TARGET_ERRORS: ErrorMap = (
    (tuf_errors.LengthOrHashMismatchError, "tampered", "{path} does not match its signature"),
    (tuf_errors.DownloadLengthMismatchError, "tampered", "{path} is longer than signed"),
    (tuf_errors.DownloadError, "unreachable", "cannot download {path}"),
    (OSError, "disk", "cannot store {path}"),
)


@contextmanager
def _refused(errors: ErrorMap, **names: str) -> Iterator[None]:
    """Turn the errors of ``errors`` raised inside into ReleaseUnavailable; others pass."""
    try:
        yield
    except Exception as exc:
        for kind, reason, what in errors:
            if isinstance(exc, kind):
                said = what.format(**names)
                raise ReleaseUnavailable(reason, f"{said}: {exc}" if said else str(exc)) from exc
        raise


class ResumingFetcher(FetcherInterface):
    """httpx GETs that resume a cut transfer with Range instead of starting over."""

    def __init__(
        self,
        context: ssl.SSLContext | None,
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
    ) -> None:
        self.client = httpx.Client(
            verify=context if context is not None else True, timeout=timeout_s
        )
        self.retries = retries
        self.progress: Progress | None = None
        self.resumed = 0

    def close(self) -> None:
        self.client.close()

    def _fetch(self, url: str) -> Iterator[bytes]:
        offset = 0
        failures = 0
        while True:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                with self.client.stream("GET", url, headers=headers) as r:
                    if r.status_code == 416 and offset:
                        return  # we already have every byte
                    if r.status_code not in (200, 206):
                        raise tuf_errors.DownloadHTTPError(
                            f"{url}: HTTP {r.status_code}", r.status_code
                        )
                    if offset and r.status_code != 206:
                        raise tuf_errors.DownloadError(f"{url}: server ignored the resume range")
                    for data in r.iter_bytes():  # as received: a cut loses nothing read
                        offset += len(data)
                        failures = 0
                        if self.progress is not None:
                            self.progress(len(data))
                        yield data
                return
            except httpx.TimeoutException as exc:
                failures += 1
                if failures > self.retries:
                    raise tuf_errors.SlowRetrievalError(f"{url}: {exc}") from exc
            except httpx.TransportError as exc:
                failures += 1
                if failures > self.retries:
                    raise tuf_errors.DownloadError(f"{url}: {exc}") from exc
            if offset:
                self.resumed += 1
                log.info("download of %s cut at %d bytes: resuming", url, offset)
            time.sleep(min(0.2 * 2**failures, 5.0))


@dataclass
class Fetched:
    path: Path
    target: TargetFile
    downloaded: bool


class ReleaseClient:
    """One kiosk's TUF client. Blocking: run it in a worker thread. The kiosk's software,
    model and configuration updaters share it; a lock keeps their calls one at a time (the
    trusted metadata on disk has one writer)."""

    def __init__(
        self,
        metadata_dir: Path,
        base_url: str,
        context: ssl.SSLContext | None,
        *,
        bootstrap: bytes | None = None,
    ) -> None:
        self.metadata_dir = metadata_dir
        self.base_url = base_url.rstrip("/")
        self.fetcher = ResumingFetcher(context)
        metadata_dir.mkdir(parents=True, exist_ok=True)
        if bootstrap is None and not (metadata_dir / "root.json").exists():
            raise ReleaseUnavailable("no_root", f"no trusted root in {metadata_dir} (enroll again)")
        self._bootstrap = bootstrap
        self._updater: Updater | None = None
        self.refreshed_at: float | None = None
        self._lock = threading.RLock()

    def close(self) -> None:
        self.fetcher.close()

    def _new_updater(self) -> Updater:
        return Updater(
            metadata_dir=str(self.metadata_dir),
            metadata_base_url=f"{self.base_url}/tuf/metadata/",
            target_base_url=f"{self.base_url}/tuf/targets/",
            fetcher=self.fetcher,
            config=UpdaterConfig(app_user_agent="biblioedge-kiosk"),
            bootstrap=self._bootstrap,
        )

    def refresh(self) -> None:
        """Fetch and verify the newest metadata; a failure leaves the trusted set as it was."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        with _refused(METADATA_ERRORS):
            updater = self._new_updater()
            self._bootstrap = None  # from now on the persisted root.json is the trust anchor
            updater.refresh()
        self._updater = updater
        self.refreshed_at = time.time()

    def info(self, path: str) -> TargetFile:
        with self._lock:
            return self._info(path)

    def _info(self, path: str) -> TargetFile:
        if self._updater is None:
            self.refresh()
        assert self._updater is not None
        with _refused(INFO_ERRORS):
            target = self._updater.get_targetinfo(path)
        if target is None:
            raise ReleaseUnavailable("unknown_release", f"{path} is not a signed release")
        return target

    def fetch(self, target: TargetFile, into: Path, progress: Progress | None = None) -> Fetched:
        """The verified file at ``into`` (kept as it is when already there and intact)."""
        with self._lock:
            return self._fetch(target, into, progress)

    def _fetch(self, target: TargetFile, into: Path, progress: Progress | None) -> Fetched:
        assert self._updater is not None
        cached = self._updater.find_cached_target(target, str(into))
        if cached is not None:
            return Fetched(into, target, downloaded=False)
        into.parent.mkdir(parents=True, exist_ok=True)
        tmp = into.with_name(f".{into.name}.part")
        self.fetcher.progress = progress
        try:
            with _refused(TARGET_ERRORS, path=target.path):
                self._updater.download_target(target, str(tmp))
        finally:
            self.fetcher.progress = None
        tmp.replace(into)
        return Fetched(into, target, downloaded=True)

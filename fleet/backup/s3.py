"""Copies of backups to S3-compatible stores (``[[backup.s3]]``): MinIO, Ceph, a provider's S3.

A copy is uploaded (multipart for large files, with progress), then checked by its size as
the store reports it; a copy that fails is retried with a doubling wait, and one that still
fails is reported in the backup's status, never raised: the backup on central's own disk is
whole either way. The retention rule is applied in the bucket too, to the backups' own names
only (other keys under the prefix are left alone).

boto3 is an optional dependency (``pip install biblioedge[s3]``): central without S3 copies
does not need it, and says so plainly when a copy is configured without it.
"""

from __future__ import annotations

import configparser
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from biblioedge.fleet.backup.container import BackupError
from biblioedge.fleet.backup.parts import Progress
from biblioedge.fleet.backup.retention import keep, stamp_of
from biblioedge.fleet.config import S3CopyConfig


def credentials(target: S3CopyConfig) -> tuple[str, str]:
    """(access key id, secret) from the target's credentials file; BackupError saying what is
    wrong with it (the secret itself is never in a message)."""
    parser = configparser.ConfigParser(interpolation=None)
    path = target.credentials_file
    try:
        text = path.read_text()
    except OSError as exc:
        raise BackupError(f"cannot read the S3 credentials file {path}: {exc.strerror}") from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error:
        raise BackupError(f"{path} is not an AWS-style credentials file") from None
    if not parser.has_section(target.profile):
        raise BackupError(f"{path} has no [{target.profile}] section")
    section = parser[target.profile]
    key, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    if not key or not secret:
        raise BackupError(
            f"{path} [{target.profile}] needs aws_access_key_id and aws_secret_access_key"
        )
    return key.strip(), secret.strip()


def client(target: S3CopyConfig) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise BackupError(
            "an S3 copy is configured but boto3 is not installed (pip install 'biblioedge[s3]')"
        ) from None
    key, secret = credentials(target)
    return boto3.client(
        "s3",
        endpoint_url=target.endpoint_url,
        region_name=target.region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        verify=str(target.ca_file) if target.ca_file else None,
        config=Config(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            s3={"addressing_style": "path"},  # MinIO and most self-hosted stores
        ),
    )


def copy_to_s3(
    backup: Path,
    target: S3CopyConfig,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Upload ``backup``, retrying; the copy's record for the backup status (never raises for
    a failed copy: a store that is down costs the copy, not the backup)."""
    key = f"{target.prefix}{backup.name}"
    record: dict[str, Any] = {"kind": "s3", "where": target.where(), "path": key}
    size = backup.stat().st_size
    wait = target.retry_s
    error = ""
    for attempt in range(1, target.attempts + 1):
        record["attempts"] = attempt
        try:
            s3 = client(target)
            from boto3.s3.transfer import TransferConfig

            done = 0

            def moved(n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(f"copy to {target.where()}", done, size)

            s3.upload_file(
                str(backup),
                target.bucket,
                key,
                Callback=moved,
                Config=TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20),
            )
            stored = int(s3.head_object(Bucket=target.bucket, Key=key)["ContentLength"])
            if stored != size:
                raise BackupError(f"the store holds {stored} bytes of {size}")
            return {**record, "state": "ok"}
        except BackupError as exc:
            error = str(exc)
            if "credentials" in error or "boto3" in error:
                break  # a configuration error: retrying will not fix it
        except Exception as exc:  # botocore's errors, the network's: retried, then reported
            error = f"{type(exc).__name__}: {exc}"[:300]
        if attempt < target.attempts:
            sleep(wait)
            wait *= 2
    return {**record, "state": f"failed: {error}"}


def prune_s3(target: S3CopyConfig, daily: int, weekly: int, monthly: int) -> list[str]:
    """The retention rule in the bucket: the backups' keys it no longer keeps are deleted."""
    s3 = client(target)
    found: dict[datetime, str] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=target.prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            name = str(obj["Key"])[len(target.prefix) :]
            stamp = stamp_of(name) if "/" not in name else None
            if stamp is not None:
                found[stamp] = str(obj["Key"])
    kept = keep(list(found), daily, weekly, monthly)
    removed = [k for t, k in sorted(found.items()) if t not in kept]
    for k in removed:
        s3.delete_object(Bucket=target.bucket, Key=k)
    return removed

"""The test session's pcscd with the vsmartcard vpcd reader (the product's own launcher)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from biblioedge.provisioning.pcsc import PcscdProcess, installed


@contextmanager
def pcscd_with_vpcd(tmp: Path) -> Iterator[int]:
    """Yields the port where the card emulator connects."""
    if not installed():
        message = (
            "pcscd and vsmartcard-vpcd are not installed (scripts/setup.sh --test installs them)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    proc = PcscdProcess(tmp).start()
    try:
        yield proc.port
    finally:
        proc.stop()

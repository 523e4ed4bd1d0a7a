"""CCCD parsing and chip errors; each says what is wrong and, for bytes, where."""

from biblioedge.drivers.errors import DriverError


class CccdError(DriverError, ValueError):
    """Input that is not a valid CCCD QR, MRZ or chip response."""


class NotACccdQr(CccdError):
    """A QR that is not a CCCD at all (a URL, a library card, a bank QR)."""

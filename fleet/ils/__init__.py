"""Readers in the library system: the connector interface, Koha's REST API, the durable queue
at central that pushes each reader's changes in order, and status back (issue 22)."""

from biblioedge.fleet.ils.connector import (
    ILS_OPS,
    CardTaken,
    Connector,
    IlsError,
    IlsOp,
    IlsPatron,
    IlsStatus,
    PatronData,
)
from biblioedge.fleet.ils.queue import enqueue

__all__ = [
    "ILS_OPS",
    "CardTaken",
    "Connector",
    "IlsError",
    "IlsOp",
    "IlsPatron",
    "IlsStatus",
    "PatronData",
    "enqueue",
]

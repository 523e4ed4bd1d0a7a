"""The keyed hash of a citizen ID number (``biblioedge.citizen``: central computes it too)."""

from __future__ import annotations

from biblioedge.citizen import citizen_ref

__all__ = ["citizen_ref"]

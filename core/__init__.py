"""biblioedge: kiosks of a Vietnamese provincial public library and the central service behind them.

This folder (``core/``) is the top package ``biblioedge``: the command line, the wire protocol
shared by agents and central, and small shared utilities. The other top-level folders are
mapped to ``biblioedge.<folder>`` by pyproject's ``package-dir``.
"""

__version__ = "0.1.0"

"""Simulated kiosks and demo actors: wired in by the demo, the benchmarks and the tests.

The agent imports none of it (tests/test_layout.py); a kiosk runs them only when a tool
(``biblioedge agent``, ``biblioedge kiosk run``, the demo) hands them to the runtime.
"""

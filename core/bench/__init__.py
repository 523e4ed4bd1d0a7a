"""``biblioedge bench …``: benchmarks that print one JSON object each, measured beside a baseline
in the same run (see docs/operations.md for what each one measures)."""

from __future__ import annotations

import json
import sys
from typing import Any


def print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    for key, value in result.items():
        sys.stdout.write(f"{key:>24}: {value}\n")

#!/usr/bin/env bash
# One command: set up (Debian packages when root, .venv with test tools), then lint, type-check
# and run the whole test suite. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo ">> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo ">> mypy"
bash scripts/typecheck.sh
echo ">> pytest"
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# One command: set up (Debian packages when root, .venv) and run the demo fleet.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/biblioedge demo "$@"

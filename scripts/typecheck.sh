#!/usr/bin/env bash
# mypy cannot follow setuptools' editable import hook for package-dir remaps (core/ is
# biblioedge, agent/ is biblioedge.agent, ...), so check a symlink tree laid out like the
# installed package instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=.typecheck/biblioedge
rm -rf .typecheck && mkdir -p "$tree"
for f in core/*; do ln -s "../../$f" "$tree/$(basename "$f")"; done
for d in agent kiosk drivers models fleet provisioning sim; do ln -s "../../$d" "$tree/$d"; done
MYPYPATH=.typecheck exec .venv/bin/mypy -p biblioedge "$@"

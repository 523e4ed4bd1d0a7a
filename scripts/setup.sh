#!/usr/bin/env bash
# Set up a development/demo environment on Debian 12: system packages (when root), then a
# virtualenv in .venv with biblioedge installed editable. Safe to run again.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --test   plus the test tools
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="[kiosk]"
TEST=""
[[ "${1:-}" == "--test" ]] && EXTRAS="[kiosk,test]" && TEST=1

# Debian packages: the broker, venv support for Debian's own python3, zbar for pyzbar.
APT_PKGS=(mosquitto python3-venv libzbar0)
# the test suite also proves central on a real PostgreSQL
[[ -n "$TEST" ]] && APT_PKGS+=(postgresql)
# the card desk: pcscd with the vpcd virtual reader, and what pyscard builds from source with
APT_PKGS+=(pcscd vsmartcard-vpcd libpcsclite-dev swig)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo ">> apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo ">> not root: skipping Debian packages ${missing[*]} (the demo falls back to the embedded broker)"
  fi
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "biblioedge needs Python >= 3.11 (found $("$PY" --version))" >&2
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  echo ">> creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed$EXTRAS"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo ">> pip install -e .$EXTRAS"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".$EXTRAS"
  if [[ -n "$TEST" ]]; then
    # reference implementation for the face tests, without its opencv-python (GUI build)
    .venv/bin/python -m pip install -q --no-deps "insightface==2.1"
  fi
  touch "$stamp"
fi

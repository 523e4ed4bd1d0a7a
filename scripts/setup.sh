#!/usr/bin/env bash
# Set up a development/demo environment on Debian 12: system packages (when root), then a
# virtualenv in .venv with biblioedge installed editable. Safe to run again.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --test   plus the test tools
set -euo pipefail
cd "$(dirname "$0")/.."

TEST=""
[[ "${1:-}" == "--test" ]] && TEST=1

# Debian packages: the broker, venv support for Debian's own python3, zbar for pyzbar.
APT_PKGS=(mosquitto python3-venv libzbar0)
# the test suite also proves central on a real PostgreSQL, and the dashboard in Debian's chromium
[[ -n "$TEST" ]] && APT_PKGS+=(postgresql chromium chromium-driver)
# ... and checks the dashboard's accessibility with axe-core, which comes from npm
[[ -n "$TEST" ]] && ! command -v npm >/dev/null && APT_PKGS+=(npm)
# the card desk: pcscd with the vpcd virtual reader, and what pyscard builds from source with
APT_PKGS+=(pcscd vsmartcard-vpcd libpcsclite-dev swig)
# the kiosks' voice: the offline speech engine for spoken prompts, and aplay for the sound card
APT_PKGS+=(espeak-ng alsa-utils)
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

# pyscard (the desk's card reader) compiles against PC/SC: include it when it can build
EXTRAS="kiosk"
if command -v swig >/dev/null && [[ -f /usr/include/PCSC/winscard.h ]]; then
  EXTRAS+=",desk"
elif [[ -n "$TEST" ]]; then
  echo "the tests need swig and libpcsclite-dev (run as root to install them)" >&2
  exit 1
fi
[[ -n "$TEST" ]] && EXTRAS+=",test"
EXTRAS="[$EXTRAS]"

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
  # sample face images for the demo gate and the benchmarks, and the face tests' reference
  # implementation; --no-deps keeps its opencv-python (GUI build) from replacing headless
  .venv/bin/python -m pip install -q --no-deps "insightface==2.1"
  touch "$stamp"
fi

# axe-core (npm) for the dashboard's accessibility test, pinned in tests/axe/package.json
if [[ -n "$TEST" ]] && command -v npm >/dev/null; then
  axe=tests/axe/node_modules/axe-core/axe.min.js
  if [[ ! -f "$axe" || tests/axe/package.json -nt "$axe" ]]; then
    echo ">> npm install axe-core (tests/axe)"
    npm install --prefix tests/axe --no-audit --no-fund --no-save --silent >/dev/null
    touch "$axe"
  fi
fi

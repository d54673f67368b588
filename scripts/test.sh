#!/usr/bin/env bash
# The README's test command, and what CI runs. On a fresh machine it installs
# everything the tests need: Debian's octave + JeroMQ + a JRE (the ScanImage user
# functions are tested for real under Octave; installed when apt-get is usable as
# root), a .venv with livedenoise and its dev + gui extras (torch pinned to the CPU
# build by constraints.txt), then runs pytest with Qt offscreen.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/stream -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v octave-cli >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends octave libjeromq-java default-jre-headless \
    libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 >/dev/null
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,gui]"
QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q -rs "$@"

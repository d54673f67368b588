#!/usr/bin/env bash
# Fresh-machine test command: creates .venv, installs livedenoise with its test
# extras (torch pinned to the CPU build by constraints.txt), runs pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/stream -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,gui]"
QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q "$@"

#!/usr/bin/env bash
# Fresh-machine main job: creates .venv, installs livedenoise, runs the end-to-end demo.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -c constraints.txt -e ".[gui]"
.venv/bin/livedenoise demo "$@"

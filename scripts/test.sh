#!/usr/bin/env bash
# Fresh-machine test command: creates .venv, installs livedenoise with its test
# extras (torch pinned to the CPU build by constraints.txt), runs pytest.
# With arguments, they go to one pytest run. Without, the Qt viewer tests run in
# a pytest process of their own: PySide6 has crashed (segfault while deleting
# windows) when they share a process with the torch/onnxruntime-heavy tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,gui]"
export QT_QPA_PLATFORM=offscreen
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
.venv/bin/python -m pytest -q --ignore=tests/gui
.venv/bin/python -m pytest -q tests/gui

#!/usr/bin/env bash
# The GPU check of issue 14: one run on a bare GPU machine (PyTorch, onnx and
# onnxruntime installed; no network; no TensorRT), in well under 8 minutes.
#
#   bash scripts/gpu_check.sh [OUT]      # OUT: default $OUT, else ./gpu_out
#
# Installs nothing: the repository runs from its working tree (PYTHONPATH).
# Steps, each under its own timeout and all under one budget (a hang costs one
# step, not the run):
#   1. env       what is here: python, torch, CUDA, onnxruntime, pyzmq, pytest, TensorRT (env.json,
#                nvidia-smi.txt)
#   2. models    random-weight checkpoints (speed does not depend on the weights): the model `train`
#                builds with no --arch/--preset ("train"), lite, di, cad3d (models/*.pt)
#   3. tests     pytest -m gpu on the files holding GPU tests (skipped, with reasons, where TensorRT
#                is missing) (tests.txt, tests.xml)
#   4. engine    `livedenoise bench engine` at SIZE x SIZE, torch on CUDA, fp32 and fp16, each eager
#                and replaying CUDA graphs, batch 1 and 8 (engine-MODEL.json)
#   5. stream    `livedenoise bench stream` at SIZE x SIZE on torch (fp32: bench stream has no
#                precision option), the default model also with --innovation (stream-MODEL.json)
# then summary.json / summary.md (results, the issue-14 targets, every step's status).
#
# Without a CUDA GPU it records what it checked (env.json, summary.json with "gpu": null), says so
# and exits 0. Exit status otherwise: 0 when every step passed, 1 when one failed or timed out.
#
# Knobs (environment): PYTHON (default .venv/bin/python if present, else python3),
# GPU_CHECK_BUDGET_S (total seconds, default 450), GPU_CHECK_SIZE (default 512),
# GPU_CHECK_MODELS (default "train lite di cad3d"), GPU_CHECK_STREAM_SECONDS (default 1.5),
# GPU_CHECK_FORCE=1 (run every step without a GPU: the CPU rehearsal the tests use),
# GPU_CHECK_STEP_TIMEOUTS ("NAME=S NAME=S": per-step timeouts that replace the defaults; the tests use it
# to force one step over its timeout without making the others depend on the machine's speed).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${1:-${OUT:-./gpu_out}}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd) || { echo "gpu_check: cannot create $OUT_DIR" >&2; exit 2; }
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
BUDGET=${GPU_CHECK_BUDGET_S:-450}
SIZE=${GPU_CHECK_SIZE:-512}
MODELS=${GPU_CHECK_MODELS:-train lite di cad3d}
STREAM_S=${GPU_CHECK_STREAM_SECONDS:-1.5}
FORCE=${GPU_CHECK_FORCE:-0}
STEP_TIMEOUTS=${GPU_CHECK_STEP_TIMEOUTS:-}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
STEPS=$OUT_DIR/steps.jsonl
: >"$STEPS"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
export GPU_CHECK_OUT=$OUT_DIR
say() { echo "gpu_check: $*"; }

# record NAME STATUS RC SECONDS LIMIT NOTE CMD...
record() {
  "$PYTHON" - "$@" >>"$STEPS" <<'EOF' || echo "{\"name\": \"$1\", \"status\": \"$2\", \"note\": \"record failed\"}" >>"$STEPS"
import json, sys
name, status, rc, secs, limit, note, *cmd = sys.argv[1:]
print(json.dumps({"name": name, "status": status, "rc": None if rc == "" else int(rc),
                  "seconds": None if secs == "" else round(float(secs), 2), "timeout_s": None if limit == "" else int(limit),
                  "note": note, "command": " ".join(cmd)}))
EOF
}

# step NAME TIMEOUT_S STDOUT_FILE CMD...: run CMD under min(TIMEOUT_S, budget left); stderr to NAME.log
step() {
  local name=$1 limit=$2 out=$3 left rc t0 t1 status note=""
  shift 3
  left=$((DEADLINE - $(date +%s)))
  if [ "$left" -lt 5 ]; then
    say "$name: skipped, the ${BUDGET} s budget is spent"
    record "$name" skipped "" "" "" "budget of ${BUDGET} s spent" "$@"
    return 0
  fi
  local kv
  for kv in $STEP_TIMEOUTS; do
    [ "${kv%%=*}" = "$name" ] && limit=${kv#*=}
  done
  [ "$limit" -gt "$left" ] && limit=$left
  say "$name (timeout ${limit} s): $*"
  t0=$(date +%s.%N)
  timeout -k 5 "$limit" "$@" >"$out" 2>"$OUT_DIR/$name.log"
  rc=$?
  t1=$(date +%s.%N)
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout; note="killed after ${limit} s" ;;
    *) status=failed; note="exit $rc; see $name.log" ;;
  esac
  [ "$status" = ok ] || say "$name: $status ($note)"
  record "$name" "$status" "$rc" "$(awk "BEGIN{print $t1 - $t0}")" "$limit" "$note" "$@"
  return 0
}

say "output in $OUT_DIR; python $PYTHON; budget ${BUDGET} s"

# 1. what is here (also the CPU-side record when there is no GPU)
if command -v nvidia-smi >/dev/null 2>&1; then
  step nvidia-smi 20 "$OUT_DIR/nvidia-smi.txt" nvidia-smi -L
else
  echo "nvidia-smi: not found" >"$OUT_DIR/nvidia-smi.txt"
  record nvidia-smi skipped "" "" "" "nvidia-smi not on PATH" nvidia-smi -L
fi
step env 90 "$OUT_DIR/env.json" "$PYTHON" - <<'EOF'
import importlib, json, os, platform, shutil, sys

info = {"python": sys.executable, "python_version": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "nvidia_smi": shutil.which("nvidia-smi"), "modules": {}, "checked": []}
for mod in ("numpy", "torch", "onnx", "onnxruntime", "zmq", "pytest", "tensorrt", "pycuda", "livedenoise"):
    try:
        m = importlib.import_module(mod)
        info["modules"][mod] = getattr(m, "__version__", "present")
    except Exception as exc:  # missing or broken: recorded, not fatal
        info["modules"][mod] = None
        info.setdefault("missing", {})[mod] = f"{type(exc).__name__}: {exc}"[:300]
    info["checked"].append(f"import {mod}")
info["cuda"] = None
try:
    import torch
    info["checked"].append("torch.cuda.is_available()")
    if torch.cuda.is_available():
        info["cuda"] = {"devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                        "capability": list(torch.cuda.get_device_capability(0)), "torch_cuda": torch.version.cuda,
                        "cudnn": torch.backends.cudnn.version()}
except Exception as exc:
    info["cuda_error"] = f"{type(exc).__name__}: {exc}"[:300]
try:
    import onnxruntime as ort
    info["onnxruntime_providers"] = ort.get_available_providers()
    info["checked"].append("onnxruntime providers")
except Exception:
    pass
try:
    from livedenoise.export.engines.tensorrt import tensorrt_status
    ok, why = tensorrt_status()
    info["tensorrt"] = {"ok": ok, "why": why}
    info["checked"].append("livedenoise tensorrt_status()")
except Exception as exc:
    info["tensorrt"] = {"ok": False, "why": f"{type(exc).__name__}: {exc}"[:300]}
print(json.dumps(info, indent=1))
EOF

GPU=$("$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); print((d.get("cuda") or {}).get("devices", [""])[0])' "$OUT_DIR/env.json" 2>/dev/null)
if [ -z "$GPU" ] && [ "$FORCE" != 1 ]; then
  say "no GPU: torch sees no CUDA device$(command -v nvidia-smi >/dev/null || echo ' and nvidia-smi is absent'); nothing to measure. Checked: $(tr '\n' ' ' <"$OUT_DIR/nvidia-smi.txt")"
  MODE=no_gpu
else
  [ -n "$GPU" ] && say "GPU: $GPU" || say "no GPU, GPU_CHECK_FORCE=1: rehearsing every step on the CPU"
  MODE=$([ -n "$GPU" ] && echo gpu || echo cpu_rehearsal)

  # 2. random-weight checkpoints
  mkdir -p "$OUT_DIR/models"
  step models 120 "$OUT_DIR/models.json" "$PYTHON" - $MODELS <<'EOF'
import json, os, sys
from pathlib import Path

import torch

from livedenoise.export.bench_engine import named_checkpoint
from livedenoise.models import registry
from livedenoise.models.checkpoint import save_checkpoint

folder = Path(os.environ["GPU_CHECK_OUT"]) / "models"
made = {}
for name in sys.argv[1:]:
    if name == "train":  # what `livedenoise train` builds with no --arch/--preset
        card = registry.make_card(registry.default_name("2p"), norm_mean=1000.0, norm_std=500.0)
        torch.manual_seed(0)
        path = save_checkpoint(folder / "train.pt", card, registry.build_network(card).state_dict())
    else:
        path = named_checkpoint(name, folder)
    from livedenoise.models.checkpoint import read_checkpoint
    made[name] = {"path": str(path), "card": read_checkpoint(path)[0].summary()}
print(json.dumps(made, indent=1))
EOF

  # 3. the GPU tests (TensorRT ones skip with their reason here)
  if "$PYTHON" -c 'import pytest' 2>/dev/null; then
    mapfile -t GPU_TESTS < <(grep -rl --include='test_*.py' 'mark.gpu' tests | sort)
    if [ "${#GPU_TESTS[@]}" -gt 0 ]; then
      step tests 150 "$OUT_DIR/tests.txt" "$PYTHON" -m pytest -q -rs -m gpu -p no:cacheprovider \
        --junitxml="$OUT_DIR/tests.xml" "${GPU_TESTS[@]}"
    else
      record tests skipped "" "" "" "no test file under tests/ holds a gpu mark" pytest -m gpu
    fi
  else
    record tests skipped "" "" "" "pytest is not installed" pytest -m gpu
  fi

  # 4. engine speed, 5. the live service
  for m in $MODELS; do
    step "engine-$m" 100 "$OUT_DIR/engine-$m.json" "$PYTHON" -m livedenoise bench engine --model "$OUT_DIR/models/$m.pt" \
      --frame-shape "$SIZE" "$SIZE" --batch 1 8 --backends torch --precisions fp32 fp16 --cuda-graph \
      --repeats 200 --warmup 3 --budget 2 --json
  done
  if "$PYTHON" -c 'import zmq' 2>/dev/null; then
    for m in $MODELS; do
      extra=()
      [ "$m" = train ] && extra=(--innovation)
      step "stream-$m" 100 "$OUT_DIR/stream-$m.json" "$PYTHON" -m livedenoise bench stream --model "$OUT_DIR/models/$m.pt" \
        --backend torch --size "$SIZE" --seconds "$STREAM_S" --max-batch 8 "${extra[@]}" --json
    done
  else
    record stream skipped "" "" "" "pyzmq is not installed (bench stream needs it)" livedenoise bench stream
  fi
fi

# summary
GPU_CHECK_MODE=$MODE GPU_CHECK_GPU=$GPU GPU_CHECK_ELAPSED=$(($(date +%s) - START)) GPU_CHECK_SIZE=$SIZE \
GPU_CHECK_BUDGET=$BUDGET "$PYTHON" - <<'EOF'
import json, os
from pathlib import Path

out = Path(os.environ["GPU_CHECK_OUT"])
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]


def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


env = load("env.json") or {}
mode = os.environ["GPU_CHECK_MODE"]
engine, stream, engine_skipped = [], [], []
for s in steps:
    if s["name"].startswith("engine-") and s["status"] == "ok":
        rep = load(s["name"] + ".json") or {}
        engine_skipped += [{"model": s["name"][7:], **k} for k in rep.get("skipped", [])]
        for r in rep.get("results", []):
            engine.append({"model": s["name"][7:], "card": rep.get("card"), "precision": r["precision"],
                           "cuda_graph": r.get("cuda_graph", False), "device": r["device"], "batch": r["batch"],
                           "frames_per_s": round(r["frames_per_s"], 1), "latency_ms_p50": round(r["latency_ms_p50"], 3),
                           "latency_ms_p99": round(r["latency_ms_p99"], 3), "calls": r["calls"]})
    if s["name"].startswith("stream-") and s["status"] == "ok":
        for r in load(s["name"] + ".json") or []:
            stream.append({"model": s["name"][7:], "innovation": r["innovation"], "describe": r["describe"],
                           "max_sustained_fps": r["max_sustained_fps"], "latency_fps": r["latency_fps"],
                           "latency_ms_p50": r["latency_ms_p50"], "latency_ms_p99": r["latency_ms_p99"]})


def best(model, batch, key="frames_per_s", pick=max):
    vals = [r[key] for r in engine if r["model"] == model and r["batch"] == batch]
    return pick(vals) if vals else None


size = int(os.environ["GPU_CHECK_SIZE"])
targets = []
if mode == "gpu":
    for what, val, goal, ok in (
        (f"default model, batch 8, {size}x{size}: >= 1000 frames/s", best("train", 8), 1000, lambda v, g: v >= g),
        ("default model, batch 1: p99 per-frame compute <= 5 ms", best("train", 1, "latency_ms_p99", min), 5, lambda v, g: v <= g),
        (f"di, {size}x{size}: >= 300 frames/s", best("di", 8), 300, lambda v, g: v >= g),
    ):
        targets.append({"target": what, "measured": val, "met": None if val is None else ok(val, goal)})
bad = [s for s in steps if s["status"] in ("failed", "timeout")]
summary = {
    "mode": mode,
    "gpu": os.environ["GPU_CHECK_GPU"] or None,
    "nvidia_smi": (out / "nvidia-smi.txt").read_text().strip() if (out / "nvidia-smi.txt").exists() else None,
    "frame_size": size, "budget_s": int(os.environ["GPU_CHECK_BUDGET"]),
    "elapsed_s": int(os.environ["GPU_CHECK_ELAPSED"]),
    "checked": env.get("checked", []), "modules": env.get("modules", {}), "tensorrt": env.get("tensorrt"),
    "steps": steps, "failed_steps": [s["name"] for s in bad],
    "engine": engine, "engine_skipped": engine_skipped, "stream": stream, "targets": targets,
}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
lines = [f"# gpu_check: {mode}; GPU: {summary['gpu'] or 'none'}; {summary['elapsed_s']} s of {summary['budget_s']} s", "",
         "| step | status | seconds | note |", "|---|---|---|---|"]
lines += [f"| {s['name']} | {s['status']} | {s['seconds'] if s['seconds'] is not None else ''} | {s['note']} |" for s in steps]
if engine:
    lines += ["", "| model | precision | graphs | batch | frames/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['precision']} | {'yes' if r['cuda_graph'] else 'no'} | {r['batch']} | {r['frames_per_s']} | "
              f"{r['latency_ms_p50']} | {r['latency_ms_p99']} |" for r in engine]
lines += [f"skipped in bench engine ({k['model']}): {k['backend']}: {k['reason']}" for k in engine_skipped]
if stream:
    lines += ["", "| model | innovation | max sustained frames/s | latency at (Hz) | p50 / p99 ms |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['innovation']} | {r['max_sustained_fps']} | {r['latency_fps']} | "
              f"{r['latency_ms_p50']} / {r['latency_ms_p99']} |" for r in stream]
if targets:
    lines += ["", "| issue-14 target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {t['met']} |" for t in targets]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
[ -s "$OUT_DIR/summary.json" ] || { say "the summary was not written"; exit 1; }
if [ "$MODE" = no_gpu ]; then
  say "no GPU here: exiting 0 after the CPU-side checks (summary in $OUT_DIR/summary.json)"
  exit 0
fi
if grep -q '"status": "\(failed\|timeout\)"' "$STEPS"; then
  say "some steps failed or timed out (summary in $OUT_DIR/summary.json)"
  exit 1
fi
say "done (summary in $OUT_DIR/summary.json)"

"""scripts/gpu_check.sh run for real in a subprocess on this CPU-only machine (issue 14's GPU check).

Without a GPU it must say so, record what it checked and exit 0; forced
(GPU_CHECK_FORCE=1) it rehearses every step on the CPU at a small size, so the
script's own plumbing is checked before a GPU's scarce minutes are spent on it;
a step over its timeout is recorded as such and the run goes on.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
no_gpu_here = pytest.mark.skipif(torch.cuda.is_available() or shutil.which("nvidia-smi") is not None,
                                 reason="checks the no-GPU path; this machine has a GPU")


def run_check(out: Path, timeout: float = 240, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env}
    e.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), str(out)], cwd="/", env=e, capture_output=True, text=True, timeout=timeout)


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@no_gpu_here
def test_without_a_gpu_it_says_so_records_its_checks_and_exits_0(tmp_path):
    out = tmp_path / "gpu_out"
    p = run_check(out, timeout=400, GPU_CHECK_BUDGET_S="300")  # budgets bound a slow machine, never a fast one
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no GPU" in p.stdout
    s = summary(out)
    assert s["mode"] == "no_gpu" and s["gpu"] is None and s["engine"] == [] and s["targets"] == []
    assert {"import torch", "torch.cuda.is_available()", "livedenoise tensorrt_status()"} <= set(s["checked"])
    assert s["modules"]["torch"] and s["modules"]["livedenoise"]
    steps = {st["name"]: st for st in s["steps"]}
    assert steps["env"]["status"] == "ok" and steps["nvidia-smi"]["status"] == "skipped"
    assert not (out / "models").exists()  # nothing measured, nothing built
    env = json.loads((out / "env.json").read_text())
    assert env["cuda"] is None and env["python"] == sys.executable


@no_gpu_here
@pytest.mark.timeout(1300)  # above the subprocess's own 1200 s (setup.cfg's 600 s would end it first)
def test_forced_rehearsal_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "rehearsal"
    p = run_check(out, timeout=1200, GPU_CHECK_FORCE="1", GPU_CHECK_SIZE="32", GPU_CHECK_MODELS="train lite",
                  GPU_CHECK_STREAM_SECONDS="0.4", GPU_CHECK_BUDGET_S="900")
    assert p.returncode == 0, p.stdout + p.stderr
    s = summary(out)
    assert s["mode"] == "cpu_rehearsal" and s["failed_steps"] == []
    names = [st["name"] for st in s["steps"]]
    assert names == ["nvidia-smi", "env", "models", "tests", "engine-train", "engine-lite", "stream-train", "stream-lite"]
    assert all(st["status"] == "ok" for st in s["steps"][1:])
    assert all(st["timeout_s"] and st["timeout_s"] <= 200 for st in s["steps"][1:])
    # the torch engine on the CPU: fp32 eager only, the rest listed as skipped
    assert {(r["model"], r["precision"], r["cuda_graph"], r["batch"]) for r in s["engine"]} == {
        (m, "fp32", False, b) for m in ("train", "lite") for b in (1, 8)}
    assert any("need a CUDA GPU" in k["reason"] for k in s["engine_skipped"])
    engine = json.loads((out / "engine-lite.json").read_text())
    assert engine["frame_shape"] == [32, 32] and "--cuda-graph" in engine["command"]
    assert {(r["model"], r["innovation"]) for r in s["stream"]} == {("train", False), ("train", True), ("lite", False)}
    suite = ElementTree.parse(out / "tests.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert int(suite.get("skipped")) >= 5 and "TensorRT" in (out / "tests.txt").read_text()  # no TensorRT, no GPU here
    assert (out / "summary.md").read_text().startswith("# gpu_check: cpu_rehearsal")


@no_gpu_here
@pytest.mark.timeout(1000)  # above the subprocess's own 900 s
def test_a_step_over_its_timeout_is_recorded_and_the_run_goes_on(tmp_path):
    out = tmp_path / "timeout"
    # the stream step streams for 600 s under a 5 s timeout: it times out on any machine; the others keep
    # their own (generous) timeouts, so nothing here depends on the machine's speed
    p = run_check(out, timeout=900, GPU_CHECK_FORCE="1", GPU_CHECK_SIZE="32", GPU_CHECK_MODELS="lite",
                  GPU_CHECK_STREAM_SECONDS="600", GPU_CHECK_STEP_TIMEOUTS="stream-lite=5")
    assert p.returncode == 1, p.stdout + p.stderr
    s = summary(out)
    steps = {st["name"]: st for st in s["steps"]}
    assert steps["stream-lite"]["status"] == "timeout" and steps["stream-lite"]["timeout_s"] == 5
    assert steps["engine-lite"]["status"] == "ok"  # the steps before it ran
    assert "stream-lite" in s["failed_steps"] and "timed out" in p.stdout


@no_gpu_here
def test_a_spent_budget_skips_the_remaining_steps(tmp_path):
    out = tmp_path / "spent"
    p = run_check(out, timeout=300, GPU_CHECK_FORCE="1", GPU_CHECK_MODELS="lite", GPU_CHECK_BUDGET_S="0")
    assert p.returncode == 0, p.stdout + p.stderr
    s = summary(out)
    assert [st["status"] for st in s["steps"] if st["name"] != "nvidia-smi"] == ["skipped"] * 5
    assert all("budget" in st["note"] for st in s["steps"] if st["name"] != "nvidia-smi")

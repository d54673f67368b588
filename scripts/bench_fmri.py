#!/usr/bin/env python
"""fMRI benchmark (issue 16): simulate -> train fmri-blind (<= 5 CPU minutes) -> denoise -> score against the truth.

    nice -n 10 .venv/bin/python scripts/bench_fmri.py --out bench-fmri --threads 2 --minutes 5

Every step is the public CLI as a subprocess (`livedenoise simulate / train / denoise`), so the commands in
docs/benchmarks.md are exactly what ran. For each variant (symmetric pre 2 post 2, short-lag pre 3 post 1,
causal pre 4 post 0) a model is trained on run 1 (seed 0) and denoises run 1 (the intended use: the user's own
run) and run 2 (seed 1, never seen in training). Metrics (livedenoise.sim.fmri_metrics) of the raw and the
denoised runs go to OUT/results.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"symmetric": (2, 2), "short-lag": (3, 1), "causal": (4, 0)}


def sh(*args) -> str:
    cmd = [str(a) for a in args]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-fmri", help="working folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per model (wall clock)")
    ap.add_argument("--volumes", type=int, default=240)
    ap.add_argument("--size", type=int, nargs=3, default=[36, 44, 36])
    ap.add_argument("--tsnr", type=float, default=20.0)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--score-only", action="store_true",
                    help="recompute the metrics of the denoised runs already in OUT (training and timing numbers "
                         "from its results.json)")
    args = ap.parse_args()

    import numpy as np

    from livedenoise.io.nifti import open_nifti
    from livedenoise.sim import fmri_metrics as M
    from livedenoise.sim.fmri import load_fmri_truth

    ld = [sys.executable, "-m", "livedenoise"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for k, seed in ((1, 0), (2, 1)):
        bold = out / f"sub-01_task-motor_run-{k}_bold.nii.gz"
        if not bold.exists():
            sh(*ld, "simulate", bold, "--volumes", args.volumes, "--volume-size", *args.size, "--tr", 2,
               "--tsnr", args.tsnr, "--seed", seed)
        runs[k] = bold

    def score(path: Path, truth_of: Path) -> dict:
        truth = load_fmri_truth(truth_of.with_name(truth_of.name.replace("_bold.nii.gz", "_bold.truth.h5")))
        with open_nifti(path) as r:
            data = r.read(0, len(r))
        return M.score(data, truth)

    previous = json.loads((out / "results.json").read_text()) if args.score_only else {}
    results: dict = {"config": previous.get("config", vars(args)), "raw": {k: score(p, p) for k, p in runs.items()},
                     "models": {}}
    for v in args.variants:
        if args.score_only:
            entry = previous["models"][v]
            for k, bold in runs.items():
                den = out / f"sub-01_task-motor_run-{k}_desc-{v}_bold.nii.gz"
                entry["runs"][str(k)] = {"denoise_s": entry["runs"][str(k)]["denoise_s"], **score(den, bold)}
            entry["runs"] = {int(k): r for k, r in entry["runs"].items()}
            results["models"][v] = entry
            continue
        pre, post = VARIANTS[v]
        model = out / f"fmri-{v}.pt"
        t0 = time.perf_counter()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rep = json.loads(sh(*ld, "train", runs[1], "--out", model, "--pre", pre, "--post", post,
                            "--max-minutes", args.minutes, "--threads", args.threads, "-q", "--json").splitlines()[0])
        train_s = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        entry = {"pre": pre, "post": post, "steps": rep["steps"], "train_loop_s": rep["seconds"], "train_wall_s": train_s,
                 "train_cpu_s": cpu_s, "runs": {}}
        for k, bold in runs.items():
            den = out / f"sub-01_task-motor_run-{k}_desc-{v}_bold.nii.gz"
            d = json.loads(sh(*ld, "denoise", bold, den, "--model", model, "--threads", args.threads, "--json"))
            entry["runs"][k] = {"denoise_s": d["seconds"], **score(den, bold)}
        results["models"][v] = entry
        (out / "results.json").write_text(json.dumps(results, indent=1))

    def row(name: str, s: dict, raw: dict) -> str:
        a, r = s["activation"], s["response"]
        return (f"| {name} | {s['tsnr_median']:.1f} ({s['tsnr_median'] / raw['tsnr_median']:.2f}x) | "
                f"{s['corr_median']:.3f} | {a['sensitivity']:.2f} | {a['cluster_max_steps']} ({a['cluster_max_distance']:.2f}) | "
                f"{r['inside']:.2f} | {', '.join(f'{x:+.3f}' for x in r['spread'])} | {r['fwhm_widening']} |")

    print("| run / data | voxel tSNR (median, x raw) | r with truth (median) | t>5 sensitivity | "
          "t-map clusters beyond the truth: voxel steps (Euclidean) | task response inside (x truth) | spread d=1,2,3 | "
          "FWHM widening (voxels) |")
    print("|---|---|---|---|---|---|---|---|")
    for k in runs:
        raw = results["raw"][k]
        print(row(f"run {k} raw", raw, raw))
        for v, e in results["models"].items():
            print(row(f"run {k} {v} ({e['steps']} steps, train {e['train_wall_s']:.0f} s wall / "
                      f"{e.get('train_cpu_s', float('nan')):.0f} s CPU)", e["runs"][k], raw))
    np.set_printoptions(precision=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())

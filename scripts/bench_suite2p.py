"""What segmentation finds after denoising: suite2p on a raw movie and on denoised versions of it.

The innovation step (`denoise --innovation`) adds back part of what the model
could not predict; if it passes smoothed noise, suite2p takes it for cells
(issue 13: ~3x more ROIs, ~30% of them matching the raw movie's cells). This
script runs suite2p's detection, extraction and built-in classifier
(registration off: every movie is the same frames, so masks are comparable
pixel for pixel) on each movie and reports, per movie:

- `rois`, `cells` (suite2p's classifier, iscell = 1);
- `cells_matched`: cells whose mask overlaps one of the raw movie's cells with
  intersection-over-union >= `--iou` (0.5), and `precision` = matched / cells;
- `raw_cells_found`: raw cells matched by some cell of this movie, `recall`;
- with `--truth SIM.truth.h5` (a `livedenoise simulate` movie's ground truth):
  `true_cells` (cells matching a true soma mask), `spurious_cells` (the rest),
  `somata_found` (true somata matched by some cell) out of `somata`.

suite2p is not a dependency of livedenoise (it pins its own torch stack);
run this script in a separate environment:

    python3 -m venv /tmp/s2p
    /tmp/s2p/bin/pip install -c constraints.txt torch==2.13.0
    /tmp/s2p/bin/pip install --no-deps suite2p==1.1.0 cellpose==4.2.1.1 torchvision==0.28.0
    /tmp/s2p/bin/pip install numpy scipy h5py tifffile imagecodecs natsort numba scikit-learn matplotlib tqdm \
        importlib-metadata opencv-python-headless fastremap fill-voids roifile
    /tmp/s2p/bin/python scripts/bench_suite2p.py RAW.tif --movie den=DEN.tif --movie inn=INN.tif --fs 30

torchvision's PyPI wheels are built against CUDA torch: its C operators
(nms, roi_align, ...) do not load with the CPU build of torch, and torchvision
then fails at import while registering fake kernels for them. suite2p imports
torchvision (through cellpose) only for image transforms that its detection
does not use, so this script stubs the two registration modules
(`torchvision._meta_registrations`, `_autograd_registrations`) and nothing
else: torchvision's Python transforms are the real ones, and any use of its
missing C operators would fail loudly.

Source: suite2p (Pachitariu et al. 2017, bioRxiv 061507), `suite2p.pipeline`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np


def _import_suite2p():
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import suite2p

    return suite2p


def read_movie(path: str) -> np.ndarray:
    """(T, Y, X) float32 from .tif/.tiff/.npy."""
    if path.endswith(".npy"):
        m = np.load(path)
    else:
        import tifffile

        m = tifffile.imread(path)
    if m.ndim != 3:
        raise SystemExit(f"{path}: expected a (T, Y, X) movie, got shape {m.shape}")
    return np.ascontiguousarray(m, dtype=np.float32)


def run_suite2p(suite2p, movie: np.ndarray, fs: float, tau: float, threshold_scaling: float) -> dict:
    """suite2p detection + extraction + classification on `movie` (no registration); masks and iscell."""
    import torch

    settings = suite2p.default_settings()
    settings["fs"], settings["tau"] = fs, tau
    settings["torch_device"] = "cpu"
    settings["run"]["do_registration"] = 0
    settings["run"]["do_regmetrics"] = False
    settings["detection"]["threshold_scaling"] = threshold_scaling
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        out = suite2p.pipeline(d, movie, run_registration=False, settings=settings, device=torch.device("cpu"))
        seconds = time.perf_counter() - t0
    stat, iscell = out[2], out[8]
    masks = []
    for s in stat:
        masks.append(set(zip(np.asarray(s["ypix"]).tolist(), np.asarray(s["xpix"]).tolist())))
    cell = np.asarray(iscell)[:, 0] > 0.5 if iscell is not None and len(stat) else np.zeros(len(stat), bool)
    return {"masks": masks, "cell": cell, "seconds": seconds}


def iou_matrix(a: list[set], b: list[set]) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i, ma in enumerate(a):
        for j, mb in enumerate(b):
            inter = len(ma & mb)
            if inter:
                out[i, j] = inter / len(ma | mb)
    return out


def truth_masks(path: str) -> list[set]:
    """The true soma masks of a `livedenoise simulate` movie (`masks`: (N, H, W) bool in SIM.truth.h5)."""
    import h5py

    with h5py.File(path, "r") as f:
        masks = f["masks"][()]
    return [set(zip(*map(lambda a: a.tolist(), np.nonzero(m)))) for m in masks]


def compare_truth(other: dict, somata: list[set], iou: float) -> dict:
    cells = [m for m, c in zip(other["masks"], other["cell"]) if c]
    m = iou_matrix(cells, somata)
    true = int((m.max(axis=1) >= iou).sum()) if m.size else 0
    found = int((m.max(axis=0) >= iou).sum()) if m.size else 0
    return {"true_cells": true, "spurious_cells": len(cells) - true, "somata_found": found, "somata": len(somata)}


def compare(raw: dict, other: dict, iou: float) -> dict:
    raw_cells = [m for m, c in zip(raw["masks"], raw["cell"]) if c]
    cells = [m for m, c in zip(other["masks"], other["cell"]) if c]
    m = iou_matrix(cells, raw_cells)
    matched = int((m.max(axis=1) >= iou).sum()) if m.size else 0
    found = int((m.max(axis=0) >= iou).sum()) if m.size else 0
    return {
        "rois": len(other["masks"]), "cells": len(cells), "cells_matched": matched,
        "precision": round(matched / len(cells), 3) if cells else None,
        "raw_cells_found": found, "recall": round(found / len(raw_cells), 3) if raw_cells else None,
        "seconds": round(other["seconds"], 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("raw", help="the raw movie (.tif/.npy, T x Y x X)")
    p.add_argument("--movie", action="append", default=[], metavar="LABEL=PATH",
                   help="a denoised movie of the same frames (repeat)")
    p.add_argument("--fs", type=float, default=30.0, help="frame rate, Hz")
    p.add_argument("--tau", type=float, default=1.0, help="indicator decay, s (suite2p's tau)")
    p.add_argument("--threshold-scaling", type=float, default=1.0, help="suite2p detection threshold scaling")
    p.add_argument("--iou", type=float, default=0.5, help="intersection-over-union for two masks to match")
    p.add_argument("--truth", metavar="SIM.truth.h5", help="ground truth of a simulated movie: match cells to somata")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    suite2p = _import_suite2p()
    movies = [("raw", args.raw)] + [tuple(s.split("=", 1)) for s in args.movie]
    somata = truth_masks(args.truth) if args.truth else None
    results, raw = {}, None
    for label, path in movies:
        r = run_suite2p(suite2p, read_movie(path), args.fs, args.tau, args.threshold_scaling)
        raw = raw or r
        results[label] = compare(raw, r, args.iou)
        if somata is not None:
            results[label].update(compare_truth(r, somata, args.iou))
        print(json.dumps({label: results[label]}), flush=True)
    head = "| movie | ROIs | cells | cells matching a raw cell (precision) | raw cells found (recall) |"
    if somata is not None:
        head += " cells on a true soma | spurious cells | somata found |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for label, r in results.items():
        line = (f"| {label} | {r['rois']} | {r['cells']} | {r['cells_matched']} ({r['precision']}) | "
                f"{r['raw_cells_found']} ({r['recall']}) |")
        if somata is not None:
            line += f" {r['true_cells']} | {r['spurious_cells']} | {r['somata_found']} of {r['somata']} |"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Quality benchmark: raw vs best classic filter vs trained models, per lag.

Simulates a training movie (seed 1) and a DIFFERENT test movie (seed 2), both
256x256 x 2000 frames at ~1 photon/pixel/frame by default; trains interp2d
`fast` (the default model) and `lite` (each `--preset`), each with its own
default window unless `--pre` is given, for each lag (post=1 short-lag,
post=0 causal) within the same wall-clock budget on a fixed number of CPU threads; tunes every classic filter per lag
against the TRAINING movie's ground truth (so neither side sees the test
truth); then scores everything on the first `--eval-frames` frames of the
test movie (denoised as a movie of its own, edges reflected as in
`livedenoise denoise`) with livedenoise.sim.metrics: PSNR, pixel SNR,
median per-neuron trace r, spike-rise fraction.

    python scripts/bench_models.py --minutes 5 --threads 2 --out docs/benchmarks.md

Writes a markdown table (and a .json beside it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--photons", type=float, default=1.0)
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--test-seed", type=int, default=2)
    p.add_argument("--eval-frames", type=int, default=600, help="frames of the test movie scored (from its start)")
    p.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    p.add_argument("--steps", type=int, default=None, help="step budget per model (with or instead of --minutes)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--posts", type=int, nargs="+", default=[1, 0])
    p.add_argument("--pre", type=int, default=None, help="past frames (default: each model's own: fast 16, lite 8)")
    p.add_argument("--tune-crop", type=int, default=128, help="classic tuning on this top-left square of the training movie")
    p.add_argument("--preset", action="append", default=None,
                   help="interp2d preset to train (repeatable; default: the default preset, fast, and lite)")
    p.add_argument("--crop", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--loss", default=None)
    p.add_argument("--cad3d-minutes", type=float, default=0.0, help="also train cad3d per lag (0: skip)")
    p.add_argument("--no-classic", action="store_true")
    p.add_argument("--innovation", action="store_true",
                   help="also score each model + the innovation step (`--innovation`), with the settings `train` tuned "
                        "self-supervised on its validation frames (defaults for a checkpoint without them)")
    p.add_argument("--innovation-k", type=float, nargs="*", default=[], metavar="K",
                   help="with --innovation, also score these overrides of k (`--innovation-k K`)")
    p.add_argument("--models-from", default=None, metavar="DIR",
                   help="load interp2d_<preset>_post<N>.pt from DIR (a previous --workdir) instead of training")
    p.add_argument("--workdir", default=None, help="keeps the simulated movies and checkpoints (default: a temp folder)")
    p.add_argument("--out", default=None, help="markdown table to write (and .json beside it)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def simulate(seed, args):
    from livedenoise.sim.imaging import SimConfig, simulate_movie

    return simulate_movie(SimConfig(frames=args.frames, height=args.size, width=args.size, photons=args.photons, seed=seed))


def run_card(card, net, movie):
    """Denoise an in-memory movie the way `livedenoise denoise` does (float32 output)."""
    from livedenoise.export.engines.torch import TorchEngine
    from livedenoise.stream.offline import denoise_array

    t0 = time.perf_counter()
    out = denoise_array(TorchEngine(card, net), movie, batch=8)
    return out, (time.perf_counter() - t0) / len(movie)


def score(est, test, name, lag, extra=None):
    from livedenoise.sim import metrics
    s = metrics.summary(est, test["clean"], test["masks"], test["spikes"], data_range=test["range"])
    profile = metrics.rise_profile(est, test["clean"], test["masks"], test["spikes"], offsets=(-1, 0, 1, 2))
    row = {"name": name, "lag": lag, "psnr_db": s["psnr_db"], "pixel_snr_db": s["pixel_snr_db"],
           "trace_r": s.get("trace_r_median", math.nan), "rise": s.get("spike_rise_fraction", math.nan),
           "rise_profile": profile}
    row.update(extra or {})
    print(f"{name:40s} lag {lag}  PSNR {row['psnr_db']:.2f}  pixSNR {row['pixel_snr_db']:.2f}  "
          f"r {row['trace_r']:.3f}  rise {row['rise']:.2f}", flush=True)
    return row


def table(rows, raw, args, meta):
    lines = [
        "| filter / model | lag (frames) | PSNR (dB) | gain (dB) | pixel SNR (dB) | median trace r | Δr "
        "| spike-rise fraction | rise at t-1 / t / t+1 / t+2 | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gain = r["psnr_db"] - raw["psnr_db"]
        dr = r["trace_r"] - raw["trace_r"]
        lines.append(
            f"| {r['name']} | {r['lag']} | {r['psnr_db']:.2f} | {gain:+.2f} | {r['pixel_snr_db']:.2f} | "
            f"{r['trace_r']:.3f} | {dr:+.3f} | {r['rise']:.2f} | "
            f"{' / '.join(f'{v:.2f}' for v in r['rise_profile'].values())} | {r.get('notes', '')} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    # On a shared CPU, OpenMP's spin-waiting makes 2 threads several times slower
    # than 1; passive waiting keeps 2 threads useful (set before torch loads).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(args.threads)
    from livedenoise.models.nets import classic as baselines
    from livedenoise.sim import metrics
    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.models import registry
    from livedenoise.models.registry import build_network
    from livedenoise.train.imaging import TrainConfig, train

    load_before = os.getloadavg()
    work = Path(args.workdir) if args.workdir else None
    if work:
        work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train_sim = simulate(args.train_seed, args)
    test_sim = simulate(args.test_seed, args)
    print(f"simulated 2 movies in {time.time() - t0:.0f} s", flush=True)
    k = min(args.eval_frames, args.frames)
    tspikes = [s[s < k] for s in test_sim.spikes]
    test = {"noisy": test_sim.noisy[:k], "clean": test_sim.clean[:k], "masks": test_sim.masks, "spikes": tspikes}
    test["range"] = metrics.robust_range(test["clean"])

    rows = []
    raw = score(test["noisy"].astype(np.float32), test, "raw", 0, {"notes": "noisy input"})
    rows.append(raw)

    for post in args.posts:
        if not args.no_classic:
            t1 = time.time()
            n_tune = min(600, args.frames)
            c = args.tune_crop
            card, s_train, results = baselines.tune(train_sim.noisy[:n_tune, :c, :c].astype(np.float32),
                                                    train_sim.clean[:n_tune, :c, :c], post=post, n_frames=48)
            net = build_network(card).eval()
            est, per_frame = run_card(card, net, test["noisy"])
            p = {k2: v for k2, v in card.params.items() if k2 not in ("preset",)}
            desc = ", ".join(f"{k2}={v:g}" if isinstance(v, float) else f"{k2}={v}" for k2, v in p.items())
            rows.append(score(est, test, f"best classic, post≤{post} ({desc}, pre={card.pre})", card.lag,
                              {"notes": f"tuned on the training movie's truth ({len(results)} candidates, {time.time() - t1:.0f} s)",
                               "ms_per_frame": 1000 * per_frame, "params": p, "pre": card.pre}))

        for preset in args.preset or [registry.defaults("interp2d")["preset"], "lite"]:
            name = f"interp2d_{preset}_post{post}.pt"
            if args.models_from:
                from livedenoise.models.checkpoint import read_checkpoint

                card, state = read_checkpoint(Path(args.models_from) / name)
                hist = {"steps": card.training.get("steps"), "best_step": card.training.get("best_step")}
                secs = float(card.training.get("seconds", 0.0))
            else:
                cfg = TrainConfig(arch="interp2d", preset=preset, pre=args.pre, post=post, max_minutes=args.minutes,
                                  steps=args.steps, crop=args.crop, batch=args.batch, lr=args.lr, loss=args.loss,
                                  seed=args.seed, progress=False, device="cpu", sources=[f"sim seed {args.train_seed}"])
                t1 = time.time()
                card, state, hist = train([train_sim.noisy], cfg)
                secs = time.time() - t1
                if work:
                    save_checkpoint(work / name, card, state)
            net = build_network(card)
            net.load_state_dict(state)
            net.eval()
            est, per_frame = run_card(card, net, test["noisy"])
            rows.append(score(est, test, f"interp2d {card.params.get('preset')}, pre={card.pre} post={post}", card.lag,
                              {"notes": f"{hist['steps']} steps in {secs / 60:.1f} min (best at {hist['best_step']}), "
                                        f"{1000 * per_frame:.0f} ms/frame inference",
                               "steps": hist["steps"], "train_s": secs, "ms_per_frame": 1000 * per_frame}))
            if args.innovation:
                from livedenoise.models.innovation import InnovationStep, config_for

                for k in [None, *args.innovation_k]:
                    icfg, origin = config_for(card, k)
                    est2 = InnovationStep(icfg).apply(est.copy(), test["noisy"])
                    rows.append(score(est2, test, f"interp2d {card.params.get('preset')}, pre={card.pre} post={post} + innovation "
                                                  f"(sigma_xy={icfg.sigma_xy:g}, k={icfg.k:g})", card.lag,
                                      {"notes": f"`--innovation`, settings {origin} (no ground truth); reads frame t"}))

        if args.cad3d_minutes > 0:
            cfg = TrainConfig(arch="cad3d", preset="rt", pre=args.pre, post=post, max_minutes=args.cad3d_minutes,
                              seed=args.seed, progress=False, device="cpu")
            t1 = time.time()
            card, state, hist = train([train_sim.noisy], cfg)
            secs = time.time() - t1
            net = build_network(card)
            net.load_state_dict(state)
            net.eval()
            est, per_frame = run_card(card, net, test["noisy"])
            rows.append(score(est, test, f"cad3d rt, pre={card.pre} post={post}", card.lag,
                              {"notes": f"{hist['steps']} steps in {secs / 60:.1f} min, {1000 * per_frame:.0f} ms/frame",
                               "steps": hist["steps"], "train_s": secs, "ms_per_frame": 1000 * per_frame}))

    meta = {"command": "python scripts/bench_models.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "threads": args.threads, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_before": load_before, "load_after": os.getloadavg(),
            "total_s": time.time() - t0}
    md = table(rows, raw, args, meta)
    print(md)
    if args.out:
        out = Path(args.out)
        out.write_text(md + "\n")
        out.with_suffix(".json").write_text(json.dumps({"rows": rows, "meta": meta, "args": vars(args)}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

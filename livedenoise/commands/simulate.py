"""`livedenoise simulate`: a synthetic two-photon movie and its ground truth.

    livedenoise simulate sim.tif --frames 2000 --size 256 256 --photons 1.0 --seed 0

Writes the noisy int16 movie to OUT (.tif, .h5 or .npy) and the noise-free
movie, soma masks, traces and calcium-event frames to `<stem>.truth.h5` next
to it. The model of the data is described in docs/data.md.
"""

from __future__ import annotations

import argparse
import json
import time

from livedenoise.errors import UserError


def register(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a synthetic noisy two-photon movie plus its noise-free ground truth",
        description=(
            "Simulate a two-photon calcium-imaging movie: neurons with calcium transients, neuropil, a static "
            "baseline with vessels, slow bleaching, Poisson shot noise and Gaussian read noise at a chosen photon "
            "level. OUT gets the noisy int16 movie (.tif, .h5 or .npy); <stem>.truth.h5 beside it gets the "
            "ground truth (clean movie, masks, traces, event frames)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("out", metavar="OUT", help="movie to write (.tif, .h5 or .npy)")
    # Imaging options. (An --ephys switch for Neuropixels-like data is added by the
    # ephys simulator; it dispatches before the imaging path in run().)
    from livedenoise.models.simulate_ephys import add_cli_arguments as _add_ephys_arguments

    _add_ephys_arguments(p)
    p.add_argument("--frames", type=int, default=2000, help="number of frames")
    p.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"), help="frame height and width in pixels")
    p.add_argument("--neurons", type=int, default=None, help="number of neurons; %(default)s means one per 800 pixels")
    p.add_argument("--photons", type=float, default=1.0, help="mean photons per pixel per frame at rest")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate in Hz")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same movie)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    if getattr(args, "ephys", False):
        from livedenoise.models.simulate_ephys import run_cli

        return run_cli(args)
    return run_imaging(args)


def run_imaging(args) -> int:
    from livedenoise.models.simulate import SimConfig, save_simulation, simulate_movie

    if args.frames < 1:
        raise UserError(f"--frames must be >= 1 (got {args.frames})")
    h, w = args.size
    cfg = SimConfig(frames=args.frames, height=h, width=w, n_neurons=args.neurons, photons=args.photons,
                    frame_rate=args.fps, seed=args.seed)
    t0 = time.perf_counter()
    sim = simulate_movie(cfg)
    movie, truth = save_simulation(sim, args.out)
    seconds = time.perf_counter() - t0
    mean_photons = (float(sim.clean.mean(dtype="float64")) - cfg.offset) / cfg.gain
    info = {
        "movie": str(movie),
        "truth": str(truth),
        "frames": cfg.frames,
        "height": h,
        "width": w,
        "neurons": int(sim.masks.shape[0]),
        "events": int(sum(len(s) for s in sim.spikes)),
        "photons": cfg.photons,
        "mean_photons": mean_photons,
        "frame_rate": cfg.frame_rate,
        "seed": cfg.seed,
        "seconds": seconds,
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(
            f"wrote {movie} ({cfg.frames} frames of {h}x{w} int16, {info['neurons']} neurons, "
            f"{mean_photons:.2f} photons/pixel/frame) and ground truth {truth} in {seconds:.1f} s"
        )
    return 0

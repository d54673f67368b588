"""`livedenoise simulate`: a synthetic two-photon movie and its ground truth.

    livedenoise simulate sim.tif --frames 2000 --size 256 256 --photons 1.0 --seed 0

Writes the noisy int16 movie to OUT (.tif, .h5 or .npy) and the noise-free
movie (compressed), soma masks, traces and calcium-event frames to
`<stem>.truth.h5` next to it, with progress on stderr (a bar on a terminal, a
line every 5 s otherwise). The model of the data is described in docs/data.md.

    livedenoise simulate run.nii.gz --volumes 240 --volume-size 36 44 36 --tr 2 --tsnr 20

An OUT ending in .nii or .nii.gz simulates an fMRI run instead (`livedenoise.sim.fmri`:
brain mask, task and resting BOLD through the HRF, thermal noise at --tsnr), its
ground truth (clean run, mask, active map, task regressor) in `<stem>.truth.h5`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from livedenoise.errors import UserError


def register(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a synthetic noisy two-photon movie, fMRI run or Neuropixels recording plus its ground truth",
        description=(
            "Simulate a two-photon calcium-imaging movie: neurons with calcium transients, neuropil, a static "
            "baseline with vessels, slow bleaching, Poisson shot noise and Gaussian read noise at a chosen photon "
            "level. OUT gets the noisy int16 movie (.tif, .h5 or .npy); <stem>.truth.h5 beside it gets the "
            "ground truth (clean movie, masks, traces, event frames). OUT ending in .nii/.nii.gz simulates a 4D "
            "fMRI run instead (--volumes, --volume-size, --tr, --tsnr); --ephys a Neuropixels-like recording."
        ),
    )
    p.add_argument("out", metavar="OUT", help="movie to write (.tif, .h5 or .npy); .nii or .nii.gz: an fMRI run")
    # Imaging options. (An --ephys switch for Neuropixels-like data is added by the
    # ephys simulator; it dispatches before the imaging path in run().)
    add_ephys_arguments(p)
    p.add_argument("--frames", type=int, default=2000, help="number of frames")
    p.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"), help="frame height and width in pixels")
    p.add_argument("--neurons", type=int, default=None, help="number of neurons; %(default)s means one per 800 pixels")
    p.add_argument("--photons", type=float, default=1.0, help="mean photons per pixel per frame at rest")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate in Hz")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same movie)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_fmri_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if getattr(args, "ephys", False):
        return run_ephys(args)
    from livedenoise.io.nifti import is_nifti_path

    if is_nifti_path(args.out):
        return run_fmri(args)
    return run_imaging(args)


def run_imaging(args) -> int:
    from livedenoise.sim.imaging import SimConfig, check_movie_path, save_simulation, simulate_movie

    if args.frames < 1:
        raise UserError(f"--frames must be >= 1 (got {args.frames})")
    h, w = args.size
    cfg = SimConfig(frames=args.frames, height=h, width=w, n_neurons=args.neurons, photons=args.photons,
                    frame_rate=args.fps, seed=args.seed)
    check_movie_path(args.out)  # before minutes of work, not after
    from livedenoise.progress import Progress

    t0 = time.perf_counter()
    bar = Progress(cfg.frames, "frame", "simulate: generating", leave=False)
    try:
        sim = simulate_movie(cfg, on_frames=bar.update)
    finally:
        bar.close()
    bar = Progress(cfg.frames, "frame", f"simulate: writing {Path(args.out).name} and its ground truth", leave=False)
    try:
        movie, truth = save_simulation(sim, args.out, on_frames=bar.update)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    mean_photons = (float(sim.clean.mean(dtype="float64")) - cfg.offset) / cfg.gain
    info = {
        "movie": str(movie),
        "truth": str(truth),
        "movie_mb": round(movie.stat().st_size / 1e6, 1),
        "truth_mb": round(truth.stat().st_size / 1e6, 1),
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
            f"{mean_photons:.2f} photons/pixel/frame, {info['movie_mb']:g} MB) and ground truth {truth} "
            f"({info['truth_mb']:g} MB) in {seconds:.1f} s"
        )
    return 0


# --------------------------------------------------------------------------- `simulate --ephys OUT`


def add_ephys_arguments(parser) -> None:
    g = parser.add_argument_group("extracellular (--ephys): a Neuropixels-like Open Ephys recording in folder OUT")
    g.add_argument("--ephys", action="store_true", help="simulate a Neuropixels recording instead of a movie")
    g.add_argument("--channels", type=int, default=384, help="--ephys: recording sites")
    g.add_argument("--duration", type=float, default=10.0, help="--ephys: seconds")
    g.add_argument("--sample-rate", type=float, default=30000.0, help="--ephys: Hz")
    g.add_argument("--units", type=int, default=None, help="--ephys: neurons (default one per 6 sites)")
    g.add_argument("--thermal-uv", type=float, default=8.0, help="--ephys: independent noise per site, µV rms")
    g.add_argument("--background-uv", type=float, default=5.0, help="--ephys: spatially correlated background, µV rms")
    g.add_argument("--no-clean", action="store_true", help="--ephys: do not write the noise-free recording")


def run_ephys(args) -> int:
    import time

    from livedenoise.errors import UserError

    if args.channels < 1 or args.duration <= 0 or args.sample_rate <= 0:
        raise UserError("--channels, --duration and --sample-rate must be positive")
    out = Path(args.out)
    if out.suffix in (".tif", ".tiff", ".h5", ".hdf5", ".npy"):
        raise UserError(f"--ephys writes an Open Ephys session folder; give a folder name, not {out.name}")
    t0 = time.perf_counter()
    from livedenoise.sim.ephys import simulate_ephys

    sim = simulate_ephys(out, args.channels, args.duration, args.sample_rate, args.units, args.thermal_uv,
                         args.background_uv, seed=args.seed, save_clean=not args.no_clean)
    info = {"session": str(sim.session), "recording": str(sim.recording), "ground_truth": str(sim.ground_truth),
            "clean": str(sim.clean_session) if sim.clean_session else None, "channels": args.channels,
            "duration_s": args.duration, "sample_rate": args.sample_rate, "units": int(len(sim.truth.unit_amplitudes)),
            "spikes": int(len(sim.truth.spike_samples)), "seconds": round(time.perf_counter() - t0, 2)}
    if getattr(args, "json", False):
        print(json.dumps(info))
    else:
        print(f"wrote {sim.recording} ({args.channels} channels x {args.duration:g} s at {args.sample_rate:g} Hz, "
              f"{info['units']} units, {info['spikes']} spikes), ground truth {sim.ground_truth}"
              + (f", clean recording under {sim.clean_session}" if sim.clean_session else ""))
    return 0


# --------------------------------------------------------------------------- `simulate run.nii.gz`


def add_fmri_arguments(parser) -> None:
    g = parser.add_argument_group("fMRI (OUT ending .nii or .nii.gz): a 4D run with task and resting BOLD")
    g.add_argument("--volumes", type=int, default=240, help="fMRI: volumes in the run")
    g.add_argument("--volume-size", type=int, nargs=3, default=[36, 44, 36], metavar=("I", "J", "K"),
                   help="fMRI: voxels along each axis")
    g.add_argument("--tr", type=float, default=2.0, help="fMRI: repetition time, seconds")
    g.add_argument("--tsnr", type=float, default=20.0,
                   help="fMRI: temporal SNR of the thermal noise alone (mean brain baseline / noise sigma)")
    g.add_argument("--task-percent", type=float, default=3.0, help="fMRI: task response in the active regions, %% of baseline")
    g.add_argument("--rest-percent", type=float, default=1.5, help="fMRI: resting fluctuation per network, %% of baseline")


def run_fmri(args) -> int:
    from livedenoise.sim.fmri import FmriConfig, save_fmri, simulate_fmri

    t0 = time.perf_counter()
    cfg = FmriConfig(shape=tuple(args.volume_size), volumes=args.volumes, tr=args.tr, tsnr=args.tsnr,
                     task_percent=args.task_percent, rest_percent=args.rest_percent, seed=args.seed)
    sim = simulate_fmri(cfg)
    run_path, truth = save_fmri(sim, args.out)
    info = {"run": str(run_path), "truth": str(truth), "volumes": cfg.volumes, "shape": list(cfg.shape),
            "tr": cfg.tr, "tsnr": cfg.tsnr, "sigma": sim.sigma, "brain_voxels": int(sim.mask.sum()),
            "active_voxels": int(sim.active.sum()), "seed": cfg.seed, "seconds": round(time.perf_counter() - t0, 2)}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"wrote {run_path} ({cfg.volumes} volumes of {'x'.join(map(str, cfg.shape))} voxels, TR {cfg.tr:g} s, "
              f"thermal tSNR {cfg.tsnr:g}, {info['brain_voxels']} brain voxels, {info['active_voxels']} active) and "
              f"ground truth {truth} in {info['seconds']:.1f} s")
    return 0

"""`livedenoise train`: self-supervised training on the user's own noisy movies.

    livedenoise train MOVIE... --arch interp2d --preset lite --pre 8 --post 1 --out model.pt

`--arch classic` needs no training: it writes a fixed filter (`--kind` and its
parameters), or the best filter for the lag budget `--post` found by grid
search against a ground-truth movie (`--tune-against TRUTH`, e.g. the
`*_truth` file written by `livedenoise simulate`).

Several GPUs: `torchrun --nproc_per_node N -m livedenoise train ...`
(DistributedDataParallel; rank 0 writes the checkpoint).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from livedenoise.errors import UserError
from livedenoise.models import registry


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a self-supervised denoiser on noisy movies (no clean data needed)",
        description=(
            "Train a self-supervised denoiser on one or more noisy movies (TIFF, ScanImage TIFF, HDF5, .npy) or 4D "
            "NIfTI fMRI runs (.nii, .nii.gz: --arch fmri-blind; windows --pre 2 --post 2 symmetric, --pre 3 --post 1 "
            "short-lag, --pre 4 --post 0 causal). The frame being predicted is never an input (fMRI: the voxel being "
            "predicted is hidden in its own volume), so no clean data is needed. The checkpoint holds the "
            "weights and the model card (window, lag, normalisation). --arch classic writes a zero-training filter."
        ),
    )
    p.add_argument("movies", nargs="+", metavar="MOVIE", help="noisy training movie(s)")
    p.add_argument("--out", "-o", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--arch", choices=registry.names(), default=None,
                   help=f"architecture (default {registry.default_name('2p')}; "
                        f"{registry.default_name('ephys')} for ephys recordings that carry their probe geometry, "
                        "else the next ephys architecture that needs none, with a note; "
                        f"{registry.default_name('fmri')} for 4D NIfTI fMRI runs)")
    p.add_argument("--preset", default=None,
                   help="size preset (interp2d: fast, lite, di; cad3d: rt); default fast / rt (with --init: the checkpoint's)")
    p.add_argument("--pre", type=int, default=None,
                   help="frames (ephys: samples) before the predicted one (default 16 for interp2d fast, else 8; ephys 30; "
                        "for --tune-against, the cap on past frames, default 64)")
    p.add_argument("--post", type=int, default=None, help="frames after it (0 = causal, zero lag; default 1, ephys 30)")
    p.add_argument("--omission", type=int, default=None,
                   help="frames hidden on each side of the predicted frame (default 0, ephys 1)")
    g = p.add_argument_group("training")
    g.add_argument("--loss", choices=("l1", "l2", "mixed", "nll"), default=None,
                   help="default: l2 (interp2d, block-ephys), mixed (cad3d), nll (site-ephys: likelihood of its posterior)")
    g.add_argument("--crop", type=int, default=None,
                   help="training crop: square side in pixels (default 128 for interp2d fast, else 64); ephys: samples (default 512)")
    g.add_argument("--batch", type=int, default=None,
                   help="crops per step (default 8 interp2d, 2 cad3d; ephys 32 interp-ephys, 8 block-ephys)")
    g.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 2e-3 interp2d fast, 1e-3 lite, 3e-4 cad3d)")
    g.add_argument("--steps", type=int, default=None, help="optimiser steps (default 2000 when --max-minutes is not given)")
    g.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget; stops at whichever of --steps/--max-minutes comes first")
    g.add_argument("--val-fraction", type=float, default=0.1, help="last fraction of each movie held out for validation")
    g.add_argument("--val", dest="val_movies", action="append", default=None, metavar="MOVIE", help="separate validation movie (instead of the held-out block)")
    g.add_argument("--val-every", type=int, default=50, help="steps between validations")
    g.add_argument("--init", default=None,
                   help="checkpoint to fine-tune (e.g. one made by `livedenoise import`); its architecture and window "
                        "unless --pre/--post/--omission change the window (the first layer is folded onto the new one: "
                        "docs/models.md)")
    g.add_argument("--seed", type=int, default=0, help="random seed (same seed + same --steps = same weights on CPU)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; on a CPU that other jobs share, 1 is faster)")
    g.add_argument("--modality", choices=("2p", "fmri"), default="2p",
                   help="recorded in the model card of a 2D imaging model (fMRI runs, .nii/.nii.gz, train the fmri "
                        "architecture, whose card says fmri)")
    g.add_argument("--no-tune-innovation", dest="tune_innovation", action="store_false",
                   help="skip tuning the innovation step (`denoise/serve --innovation`) on 100 validation frames after training")
    r = p.add_argument_group("reading")
    from livedenoise.commands.args import add_movie_arguments

    add_movie_arguments(r)
    r.add_argument("--probe", default=None, metavar="FILE",
                   help="ephys: probe geometry (probeinterface .json or .prb) for models that read neighbouring sites "
                        "(site-ephys), when the recording's settings.xml / .meta holds none")
    r.add_argument("--keep-noise", type=float, default=None, metavar="F",
                   help="site-ephys: the fraction (0..1) of the removed noise the output gives back; spike sorters "
                        "tuned on raw data find more units with some noise left (docs/benchmarks.md, issue 18)")
    c = p.add_argument_group("classic filters (--arch classic)")
    c.add_argument("--kind", choices=("exp", "boxcar", "halfgauss", "gauss", "spatial"), default=None, help="filter kind (default gauss, or the best kind with --tune-against)")
    c.add_argument("--tau", type=float, default=None, help="exp: time constant in frames")
    c.add_argument("--sigma-t", type=float, default=None, help="halfgauss/gauss: temporal sigma in frames")
    c.add_argument("--sigma-xy", type=float, default=None, help="spatial Gaussian sigma in pixels (0 = none)")
    c.add_argument("--tune-against", default=None, metavar="TRUTH", help="ground-truth movie: grid-search the filter for this lag budget")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    from livedenoise.commands.args import add_reading_arguments

    add_reading_arguments(p)  # ephys recordings: --stream, --channels, --sample-rate, --bit-volts
    p.set_defaults(func=run)


def _check_paths(args) -> Path:
    from livedenoise.commands.args import checkpoint_out

    out = checkpoint_out(args.out)
    inputs = list(args.movies) + list(args.val_movies or []) + [p for p in (args.init, args.tune_against) if p]
    for m in inputs:
        mp = Path(m)
        if mp.exists() and (mp.resolve() == out.resolve()):
            raise UserError(f"--out {out} is also an input; choose another output path")
    return out


def _open(path, args):
    from livedenoise.commands.args import open_movie_from_args

    return open_movie_from_args(path, args)


def _read_truth(path, args, n: int):
    """(shape, first n frames as float32) of a ground truth: a simulate `.truth.h5` (its clean movie) or any movie file."""
    import numpy as np

    if str(path).endswith(".truth.h5"):
        from livedenoise.sim.imaging import load_truth

        clean = load_truth(path).clean
        return tuple(clean.shape), np.asarray(clean[:n], dtype=np.float32)
    with _open(path, args) as mv:
        return tuple(mv.shape), mv.read(0, min(n, len(mv))).astype(np.float32)


def _default_window(args, init_card=None) -> tuple[int, int, int]:
    """(pre, post, omission) when not given: the --init checkpoint's, else the architecture's (DeepInterpolation's
    Neuropixels window for ephys); a filter grid-searched against ground truth caps past frames at `tune_pre`."""
    if init_card is not None:
        return int(init_card.pre), int(init_card.post), int(init_card.omission)
    d = registry.defaults(args.arch, args.preset)
    pre = d.get("tune_pre", d["pre"]) if args.tune_against else d["pre"]
    return int(pre), int(d["post"]), int(d["omission"])


def _resolve_arch(args) -> str:
    """The architecture to train: --arch, else the default of the recording's modality."""
    from livedenoise.io.nifti import is_nifti_path
    from livedenoise.io.readers_ephys import is_ephys_path

    data = "ephys" if is_ephys_path(args.movies[0]) else "fmri" if is_nifti_path(args.movies[0]) else "2p"
    for m in list(args.movies[1:]) + list(args.val_movies or []):
        if is_nifti_path(m) != (data == "fmri"):
            raise UserError(f"{m} and {args.movies[0]} are not the same kind of data (4D NIfTI runs and movies "
                            "train different models); train on one kind at a time")
    if args.arch is None and data == "ephys" and len(args.movies) == 1:
        from livedenoise.commands.args import open_from_args
        from livedenoise.train.ephys import default_arch

        arch, args.arch_note = default_arch(open_from_args(args.movies[0], args), args.probe)
        return arch
    if args.arch is None:
        return registry.default_name(data)
    if data == "ephys" and registry.modality(args.arch) != "ephys":
        raise UserError(f"{args.movies[0]} is an ephys recording; --arch {args.arch} reads {registry.modality(args.arch)} "
                        f"movies: choose one of {', '.join(registry.names(modality='ephys'))}")
    if (data == "fmri") != (registry.modality(args.arch) == "fmri"):
        what = "a 4D NIfTI run (fMRI)" if data == "fmri" else "a movie of 2D frames"
        fits = registry.names(modality=data)
        raise UserError(f"{args.movies[0]} is {what}; --arch {args.arch} reads {registry.modality(args.arch)} data: "
                        f"choose one of {', '.join(fits)}")
    return args.arch


def run(args) -> int:
    out = _check_paths(args)
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    init_card = None
    if args.init:
        from livedenoise.models.checkpoint import read_checkpoint

        init_card = read_checkpoint(args.init)[0]
        if args.arch is None:
            args.arch = init_card.arch
    args.arch = _resolve_arch(args)
    if init_card is not None and init_card.arch != args.arch:
        init_card = None  # train/ refuses the mismatch with its own message
    if init_card is not None and args.preset is None:
        args.preset = init_card.params.get("preset")  # fine-tuning keeps the network, so its training defaults too
    for name, default in zip(("pre", "post", "omission"), _default_window(args, init_card)):
        if getattr(args, name) is None:
            setattr(args, name, default)
    how = registry.trainer(args.arch)
    if how == "ephys":
        return run_ephys(args, out)
    if how == "filter":
        return _run_classic(args, out)
    return _run_train(args, out)


def _run_train(args, out: Path) -> int:
    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.train.imaging import TrainConfig, train

    for flag in ("kind", "tau", "sigma_t", "sigma_xy", "tune_against"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')} applies to --arch classic only")
    for flag, given in (("loss nll", args.loss == "nll"), ("probe", args.probe is not None),
                        ("keep-noise", args.keep_noise is not None)):
        if given:
            raise UserError(f"--{flag} applies to ephys models only")
    movies = [_open(m, args) for m in args.movies]
    val_movies = [_open(m, args) for m in args.val_movies] if args.val_movies else None
    cfg = TrainConfig(
        arch=args.arch, preset=args.preset, pre=args.pre, post=args.post, omission=args.omission,
        loss=args.loss, crop=args.crop, batch=args.batch, lr=args.lr, steps=args.steps,
        max_minutes=args.max_minutes, val_fraction=args.val_fraction, val_every=args.val_every,
        init=args.init, seed=args.seed, device=args.device, modality=args.modality,
        progress=not args.quiet, sources=[Path(m).name for m in args.movies], tune_innovation=args.tune_innovation,
    )
    try:
        card, state, history = train(movies, cfg, val_movies=val_movies)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        for m in movies + (val_movies or []):
            m.close()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    with _sigint_deferred():  # Ctrl-C now must not lose the run: the checkpoint is written first
        save_checkpoint(out, card, state)
    best = history.get("best_val_loss")
    msg = (
        f"wrote {out}: {card.summary()}; {history['steps']} steps in {history['seconds']:.0f} s"
        + (f", best validation loss {best:.5f} at step {history['best_step']}" if best is not None else "")
        + (" (interrupted)" if history.get("interrupted") else "")
        + _innovation_note(card)
    )
    lines = [msg] + _quality_lines(card)
    if args.json:
        selection = card.training.get("selection") or {}
        print(json.dumps({"out": str(out), "card": card.to_dict(), "steps": history["steps"],
                          "best_step": history["best_step"], "best_val_loss": best,
                          "seconds": history["seconds"], "interrupted": history["interrupted"],
                          "selected": selection.get("selected"), "quality": selection.get("quality")}))
        print("\n".join(lines), file=sys.stderr)
    else:
        print("\n".join(lines))
    return 0


class _sigint_deferred:
    """Hold SIGINT for the duration of the block (main thread only); afterwards, say it arrived."""

    def __enter__(self):
        import signal
        import threading

        self.got = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, *_):
        self.got = True

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.got:
            print("Ctrl-C: the checkpoint was written first", file=sys.stderr, flush=True)
        return False


def _quality_lines(card) -> list[str]:
    """The quality report's lines (train/quality.py), or why there is none."""
    from livedenoise.train.quality import summary_lines

    selection = card.training.get("selection")
    if not selection:
        return []
    lines = [f"checkpoint: the {selection['selected'].replace('_', ' ')} weights "
             f"(lowest self-supervised loss on {selection['selection_frames']} whole held-out frames)"]
    quality = selection.get("quality") or {}
    if "skipped" in quality:
        return lines + [f"no quality report: {quality['skipped']}"]
    if not quality.get("held_out", True):
        lines.append("note: no held-out frames (--val-fraction 0): the report below is on training frames")
    return lines + summary_lines(quality)


def _innovation_note(card) -> str:
    from livedenoise.models.innovation import tuning_summary

    tuned = card.training.get("innovation_tuning")
    return f"; innovation step tuned: {tuning_summary(tuned)}" if card.innovation and tuned else ""


def _run_classic(args, out: Path) -> int:
    import numpy as np

    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.models.registry import describe_receptive_field

    baselines = registry.arch_module(args.arch)  # a filter module: classic_card, build, tune, DEFAULT_GRID

    if args.omission:
        raise UserError("classic filters read the frame itself and cannot hide neighbours; use --omission 0")
    for flag in ("init", "val_movies"):
        if getattr(args, flag):
            raise UserError(f"--{flag.replace('_movies', '').replace('_', '-')} does not apply to --arch classic")
    given = {k: getattr(args, k) for k in ("tau", "sigma_t", "sigma_xy") if getattr(args, k) is not None}
    info = {}
    if args.tune_against:
        with _open(args.movies[0], args) as movie:
            n = min(len(movie), 600)
            shape, tr = _read_truth(args.tune_against, args, n)
            if tuple(movie.shape) != shape:
                raise UserError(f"--tune-against {args.tune_against} has shape {shape}, the movie {tuple(movie.shape)}; they must match")
            m = movie.read(0, n).astype(np.float32)
        kinds = [args.kind] if args.kind else None
        grid = None
        if given:
            grid = {k: {**v, **{name: [val] for name, val in given.items() if name in v}} for k, v in baselines.DEFAULT_GRID.items()}
        try:
            card, score, results = baselines.tune(m, tr, post=args.post, kinds=kinds, pre=max(args.pre, 1), grid=grid)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        info = {"tuned_against": Path(args.tune_against).name, "tuned_psnr_db": round(float(score), 3), "candidates": len(results)}
        card.training = {"kind": "classic (tuned against ground truth)", **info}
    else:
        try:
            card = baselines.classic_card(args.kind or "gauss", pre=args.pre, post=args.post, modality=args.modality, **given)
            baselines.build(card)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    for path in args.movies:  # a filter is not fitted to the movie, but it follows the one length rule
        with _open(path, args) as movie:
            registry.check_length(card, len(movie), Path(path).name)
    net = baselines.build(card)
    save_checkpoint(out, card, net.state_dict())
    rf = describe_receptive_field(card)
    msg = f"wrote {out}: {card.summary()} params {json.dumps({k: v for k, v in card.params.items() if k != 'preset'})}"
    if info:
        msg += f"; PSNR {info['tuned_psnr_db']:.2f} dB against {info['tuned_against']}"
    if args.json:
        print(json.dumps({"out": str(out), "card": card.to_dict(), "receptive_field": rf, **info}))
        print(msg, file=sys.stderr)
    else:
        print(msg)
    return 0


def run_ephys(args, out) -> int:
    """`livedenoise train` for ephys recordings (dispatched from commands/train.py)."""
    import json as _json

    import torch

    from livedenoise.commands.args import open_from_args
    from livedenoise.train.ephys import train_ephys

    arch = args.arch if args.arch and registry.trainer(args.arch) == "ephys" else registry.default_name("ephys")
    if len(args.movies) > 1:
        raise UserError("ephys training takes one recording (concatenate sessions or train on the longest)")
    rec = open_from_args(args.movies[0], args)
    pre, post, omission = args.pre, args.post, args.omission  # defaults resolved by commands/train.py
    device = args.device
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
    log = (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    if getattr(args, "arch_note", None):
        print(f"note: {args.arch_note}", file=sys.stderr, flush=True)
    log(f"training {arch} on {rec.describe()}; window pre={pre} post={post} omission={omission}")
    steps = args.steps or 2000
    d = registry.defaults(arch, args.preset)
    card, hist = train_ephys(
        rec, arch, out, pre=pre, post=post, omission=omission, preset=args.preset, steps=steps, batch=args.batch,
        lr=args.lr or d["lr"], crop=args.crop or d["crop"], seed=args.seed, device=device, val_fraction=args.val_fraction,
        log=log, time_limit=(args.max_minutes * 60 if args.max_minutes else None), init=args.init,
        probe=getattr(args, "probe", None), loss=args.loss, keep_noise=args.keep_noise,
    )
    if getattr(args, "json", False):
        print(_json.dumps({"out": str(out), "card": card.to_dict(), "steps": card.training.get("steps_done"),
                           "val_loss": hist["val_loss"], "seconds": card.training.get("train_seconds"),
                           "notes": rec.notes}))
    else:
        print(f"wrote {out}: {card.summary()}; {card.training.get('steps_done')} steps in "
              f"{card.training.get('train_seconds')} s" + (f", validation loss {hist['val_loss']:.4f}" if hist["val_loss"] else "")
              + "".join(f"; {n}" for n in rec.notes))
    return 0

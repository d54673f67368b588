"""`livedenoise tune-innovation`: fit the innovation step of a trained model to a movie.

    livedenoise tune-innovation model.pt today.tif --out model_today.pt

`train` already tunes the step on its validation frames. This verb re-tunes it
on another movie (today's first minute of imaging, say) or adds it to a model
trained before tuning existed. Self-supervised: no ground truth needed. The
model file given is never modified; the result is a new checkpoint.
"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "tune-innovation",
        help="fit the innovation step (`--innovation`) of a trained model to a movie, without ground truth",
        description=(
            "Denoise the first --frames frames of MOVIE with MODEL, pick the innovation step's spatial scale and "
            "threshold that best predict the raw frames (self-supervised: the step never reads the pixel it "
            "corrects), and write a copy of MODEL with those settings in its model card to --out."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="trained imaging checkpoint (.pt)")
    p.add_argument("movie", metavar="MOVIE", help="noisy movie to tune on (TIFF, ScanImage TIFF, HDF5, .npy)")
    p.add_argument("--out", "-o", required=True, help="checkpoint to write (.pt); never the model itself")
    p.add_argument("--frames", type=int, default=100, help="frames from the movie's start to tune on")
    from livedenoise.commands.args import add_movie_arguments

    add_movie_arguments(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import torch

    from livedenoise.errors import UserError
    from livedenoise.models.checkpoint import load_model, save_checkpoint
    from livedenoise.models.registry import min_frames
    from livedenoise.stream.offline import check_movie_fits, same_file
    from livedenoise.models.innovation import applies_to, tuning_summary
    from livedenoise.commands.args import open_movie_from_args
    from livedenoise.train.samples import MovieSource
    from livedenoise.train.imaging import tune_innovation

    model, out = Path(args.model), Path(args.out)
    if model.suffix.lower() != ".pt":
        raise UserError(f"{model.name}: tune the .pt checkpoint, then export it again (the card travels into ONNX and engines)")
    if out.suffix.lower() != ".pt":
        raise UserError(f"--out {out.name}: write a .pt checkpoint")
    if out.exists() and same_file(model, out):
        raise UserError(f"--out {out} is the model itself; choose another name (the model given is never modified)")
    card, net = load_model(model)
    why = applies_to(card)
    if why:
        raise UserError(why)
    need = min_frames(card)  # the one length rule: what denoise needs is what tuning needs
    if args.frames < need:
        raise UserError(f"--frames {args.frames} is too few: this {card.arch} model needs at least {need} frames")
    with open_movie_from_args(args.movie, args) as movie:
        check_movie_fits(movie, card)
        src = MovieSource(movie, 0, min(len(movie), args.frames), name=Path(args.movie).name)
        tuned = tune_innovation(net, card, src, torch.device("cpu"), max_frames=args.frames)
    if tuned is None:
        print(f"livedenoise tune-innovation: no setting lowered the self-supervised loss on {len(src)} frames of "
              f"{Path(args.movie).name}; nothing written (the model's predictions leave nothing to add back)", file=sys.stderr)
        return 1
    card.innovation = {"sigma_xy": tuned["sigma_xy"], "k": tuned["k"], "exclude": tuned.get("exclude", 0)}
    card.training = {**card.training, "innovation_tuning": {**tuned, "movie": Path(args.movie).name}}
    save_checkpoint(out, card, net.state_dict())
    if args.json:
        print(json.dumps({"out": str(out), "innovation": card.innovation, "frames": tuned["frames"],
                          "loss_prediction": tuned["loss_prediction"], "loss_best": tuned["loss_best"]}))
    else:
        print(f"wrote {out}: innovation step {tuning_summary(tuned)} of {Path(args.movie).name}")
    return 0

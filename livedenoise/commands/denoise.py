"""`livedenoise denoise`: apply a trained model to a movie file.

    livedenoise denoise raw.tif denoised.tif --model model.pt

Chunked and memory-bounded; writes TIFF or HDF5 with the same number of frames
as the input (edge frames use reflected windows), in the input's sample type
(rounded and clipped, never wrapped) or float32 with --dtype float32.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from livedenoise.errors import UserError

DEFAULT_BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


def _backends() -> tuple[str, ...]:
    try:
        from livedenoise.export.engines import base as engine
    except ImportError:
        return DEFAULT_BACKENDS
    return tuple(getattr(engine, "BACKENDS", DEFAULT_BACKENDS))


def add_innovation_arguments(p) -> None:
    """--innovation / --innovation-k, shared by `denoise` and `serve`."""
    g = p.add_argument_group("innovation step (imaging models)")
    g.add_argument("--innovation", action="store_true",
                   help="add back the shrunk, smoothed innovation of frame t (raw - prediction), so calcium onsets "
                        "show at their frame instead of a frame late or smeared; settings tuned at training, stored in the model")
    g.add_argument("--innovation-k", type=float, default=None, metavar="K",
                   help="override the shrinkage threshold (noise variances; implies --innovation): lower keeps more "
                        "of each onset and more noise")


def register(sub) -> None:
    p = sub.add_parser(
        "denoise",
        help="denoise a movie file with a trained model (TIFF/HDF5 out, same frame count)",
        description=(
            "Denoise a movie (TIFF, ScanImage TIFF, HDF5, .npy) with a model (.pt checkpoint, .onnx, or TensorRT "
            ".engine) and write TIFF or HDF5 (by OUT's extension) with exactly as many frames as the input. "
            "The input file is never modified."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("input", metavar="IN", help="movie to denoise")
    p.add_argument("output", metavar="OUT", help="denoised movie to write (.tif/.tiff or .h5/.hdf5)")
    p.add_argument("--model", "-m", required=True, help="trained model (.pt, .onnx or .engine)")
    p.add_argument("--backend", choices=_backends(), default="auto", help="inference backend")
    p.add_argument("--batch", type=int, default=8, help="frames per inference batch")
    p.add_argument("--dtype", choices=("same", "float32"), default="same",
                   help="output sample type: the input's (rounded, clipped) or float32")
    from livedenoise.commands.args import add_movie_arguments

    add_movie_arguments(p)
    add_innovation_arguments(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    from livedenoise.commands.args import add_reading_arguments

    add_reading_arguments(p)  # ephys recordings: --stream, --channels, --sample-rate, --bit-volts
    p.set_defaults(func=run)


def run(args) -> int:
    from livedenoise.io.readers_ephys import is_ephys_path

    if is_ephys_path(args.input):
        if args.innovation or args.innovation_k is not None:
            raise UserError("--innovation applies to imaging movies, not to ephys recordings")
        return run_ephys(args)
    from livedenoise.stream.offline import denoise_file

    if args.batch < 1:
        raise UserError(f"--batch must be >= 1 (got {args.batch})")
    stats = denoise_file(
        args.input,
        args.output,
        args.model,
        backend=args.backend,
        batch=args.batch,
        out_dtype=args.dtype,
        channel=args.channel,
        plane=args.plane,
        dataset=args.dataset,
        progress=not (args.quiet or args.json),
        innovation=args.innovation,
        innovation_k=args.innovation_k,
    )
    if args.json:
        print(json.dumps({"input": args.input, "output": args.output, "model": args.model, **stats.to_dict()}))
    else:
        extra = f", {stats.passthrough} passed through" if stats.passthrough else ""
        print(
            f"denoised {stats.frames} frames{extra} -> {args.output} ({stats.dtype}) in "
            f"{stats.seconds:.1f} s, {stats.fps:.1f} frames/s"
        )
    return 0


def run_ephys(args) -> int:
    """`livedenoise denoise` for ephys recordings (dispatched from commands/denoise.py)."""
    from livedenoise.commands.args import open_from_args
    from livedenoise.stream.ephys import denoise_recording, open_ephys_engine

    rec = open_from_args(args.input, args)
    out = Path(args.output)
    if out.exists() and rec.format == "openephys" and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new folder for the denoised recording")
    eng = open_ephys_engine(args.model, args.backend)
    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
    rep = denoise_recording(rec, args.model, out, engine=eng, progress=not quiet)
    if getattr(args, "json", False):
        print(json.dumps({"input": str(args.input), "output": rep["out"], "model": str(args.model), **rep}))
    else:
        seg = (f"; {rep['segments']} segments (sample numbers: {rep['gaps']} gaps, {rep['restarts']} restarts), "
               "each denoised on its own" if rep["segments"] > 1 else "")
        print(f"denoised {rep['samples']} samples x {rep['channels']} channels -> {rep['out']} in {rep['seconds']:.1f} s "
              f"({rep['realtime_factor']:.2f}x real time){seg}")
    return 0

"""`livedenoise denoise`: apply a trained model to a movie file or an extracellular recording.

    livedenoise denoise raw.tif denoised.tif --model model.pt
    livedenoise denoise run_g0_t0.imec0.ap.bin den_g0_t0.imec0.ap.bin --model np.pt
    livedenoise denoise sub-01_task-motor_bold.nii.gz den_bold.nii.gz --model fmri.pt

Chunked and memory-bounded; writes TIFF or HDF5 with the same number of frames
as the input (edge frames use reflected windows), in the input's sample type
(rounded and clipped, never wrapped) or float32 with --dtype float32; a recording
is written back in its own format. The input is checked before any output is
created; outputs are written under a partial name (`den.partial.tif`,
`den.partial.bin` + `.meta`, `den.partial/`) and take their final name only when
complete (`livedenoise.io.atomic`). Interrupted (Ctrl-C: exit 130) or failed, the
final name is untouched and the message says where the partial output is.
"""

from __future__ import annotations

import json
import sys

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
        help="denoise a movie, 4D NIfTI run or ephys recording with a trained model (same frames/samples out)",
        description=(
            "Denoise a movie (TIFF, ScanImage TIFF, HDF5, .npy) with a model (.pt checkpoint, .onnx, or TensorRT "
            ".engine) and write TIFF or HDF5 (by OUT's extension) with exactly as many frames as the input. "
            "A 4D NIfTI fMRI run (.nii, .nii.gz, BIDS names welcome) takes an fmri model and is written as NIfTI "
            "with its own header, affine, TR and units. "
            "The input file is never modified."
        ),
    )
    p.add_argument("input", metavar="IN", help="movie to denoise")
    p.add_argument("output", metavar="OUT",
                   help="denoised movie to write (.tif/.tiff or .h5/.hdf5; .nii/.nii.gz for a NIfTI run), or recording in IN's format (a new folder "
                        "for Open Ephys, NAME.bin for SpikeGLX, NAME.dat); written as OUT's .partial name until complete")
    p.add_argument("--model", "-m", required=True, help="trained model (.pt, .onnx or .engine)")
    p.add_argument("--backend", choices=_backends(), default="auto", help="inference backend")
    p.add_argument("--batch", type=int, default=8, help="frames per inference batch")
    p.add_argument("--dtype", choices=("same", "float32"), default="same",
                   help="output sample type: the input's (rounded, clipped) or float32")
    from livedenoise.commands.args import add_movie_arguments

    add_movie_arguments(p)
    add_innovation_arguments(p)
    from livedenoise.commands.args import add_norm_arguments

    add_norm_arguments(p, live=False)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the engine (default: all cores)")
    p.add_argument("--report", action="store_true",
                   help="also score the model on the first 300 frames (a centre crop): its self-supervised loss "
                        "against the best classic filter at the same lag, the previous frame and the noise floor "
                        "(no ground truth needed; docs/models.md); for a recording: the noise before and after "
                        "and the amplitude detected spikes keep over its first 10 s, with a warning when they lose "
                        "more than 5%%")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress (a bar on a terminal, else a line every 5 s)")
    from livedenoise.commands.args import add_reading_arguments

    add_reading_arguments(p)  # ephys recordings: --stream, --channels, --sample-rate, --bit-volts
    p.set_defaults(func=run)


def run(args) -> int:
    """Denoise one file; the outputs appear under their final names only if it all completes."""
    from livedenoise.io.atomic import Outputs

    outs = Outputs()
    try:
        with outs:
            report = _run(args)
    except KeyboardInterrupt:
        print(f"livedenoise denoise: interrupted; {_not_written(args, outs)}", file=sys.stderr)
        return 130
    except UserError as exc:
        if outs.kept:
            raise UserError(f"{exc}; {_not_written(args, outs)}") from None
        raise
    except BaseException:
        if outs.kept:
            print(f"livedenoise denoise: failed; {_not_written(args, outs)}", file=sys.stderr)
        raise
    print(report)  # only once the outputs have their final names
    return 0


def _not_written(args, outs) -> str:
    kept = outs.kept
    where = "; ".join(o.describe() for o in kept)
    if not kept:
        return f"{args.output} was not written"
    return f"{args.output} was not written; the incomplete output so far is kept in {where}: delete it or run again"


def _run(args) -> str:
    """Do the work; returns the summary to print."""
    from livedenoise.io.readers_ephys import is_ephys_path

    if is_ephys_path(args.input):
        if args.innovation or args.innovation_k is not None:
            raise UserError("--innovation applies to imaging movies, not to ephys recordings")
        return run_ephys(args)
    from livedenoise.stream.offline import denoise_file

    if args.batch < 1:
        raise UserError(f"--batch must be >= 1 (got {args.batch})")
    _set_threads(args)
    if not 0.0 <= args.renorm_rate <= 1.0:
        raise UserError(f"--renorm-rate must be in 0..1 (got {args.renorm_rate})")
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
        axes=args.axes,
        norm=args.norm,
        renorm=args.renorm,
        renorm_rate=args.renorm_rate,
        threads=args.threads,
    )
    quality = _quality(args) if args.report else None
    if args.json:
        return json.dumps({"input": args.input, "output": args.output, "model": args.model, **stats.to_dict(),
                           **({"quality": quality} if args.report else {})})
    extra = f", {stats.passthrough} passed through" if stats.passthrough else ""
    lines = [f"denoised {stats.frames} frames{extra} -> {args.output} ({stats.dtype}) in "
             f"{stats.seconds:.1f} s, {stats.fps:.1f} frames/s"]
    n = stats.norm or {}
    if n.get("mode") == "data":
        lines.append(f"normalised by the movie's own statistics (mean {n['mean']:.4g}, std {n['std']:.4g}, "
                     f"{n['frames']} frames); the model's: mean {n['card_mean']:.4g}, std {n['card_std']:.4g}")
    if n.get("note"):
        lines.append(f"note: {n['note']}")
    if stats.nonfinite:
        lines.append(f"note: {stats.nonfinite} NaN/Inf input pixels: filled for the model, written as NaN "
                     "(an integer output type writes them as 0; use --dtype float32 to keep them)")
    if quality is not None:
        from livedenoise.train.quality import summary_lines

        lines += summary_lines(quality) if "skipped" not in quality else [f"no quality report: {quality['skipped']}"]
    return "\n".join(lines)


def _quality(args, max_frames: int = 300, side: int = 128) -> dict:
    """The quality report (train/quality.py) of the model on the input's first frames, a centre crop."""
    import numpy as np

    from livedenoise.commands.args import open_movie_from_args
    from livedenoise.export.engines import open_engine
    from livedenoise.stream.offline import denoise_array
    from livedenoise.train.quality import quality_report

    engine = open_engine(args.model, args.backend, threads=args.threads)
    with open_movie_from_args(args.input, args) as movie:
        raw = np.asarray(movie.read(0, min(len(movie), max_frames)), np.float32)
    if engine.card.frame_shape is None:  # a fixed-size export runs on whole frames
        h, w = raw.shape[1:]
        y, x = (h - min(h, side)) // 2, (w - min(w, side)) // 2
        raw = np.ascontiguousarray(raw[:, y:y + min(h, side), x:x + min(w, side)])
    pred = denoise_array(engine, raw, norm=args.norm, renorm=args.renorm, renorm_rate=args.renorm_rate)
    try:
        report = quality_report(raw, pred, max(0, -min(engine.card.offsets)), engine.card.lag)
    except ValueError as exc:
        return {"skipped": str(exc)}
    if args.innovation or args.innovation_k is not None:
        from livedenoise.models.innovation import config_for, noise_passed

        cfg, origin = config_for(engine.card, args.innovation_k)
        report["innovation"] = {**cfg.to_dict(), "origin": origin, "noise_passed": noise_passed(raw, cfg)}
    return report


def _set_threads(args) -> None:
    """--threads must be >= 1 (the engine is opened with that many CPU threads)."""
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1 (got {args.threads})")


def run_ephys(args) -> str:
    """`livedenoise denoise` for an extracellular recording; returns the summary to print.

    The recording is opened by the shared reading flags (`commands/args.py`: refusals for
    an ambiguous stream or recording, a flat .dat without --sample-rate), the model's
    training sample rate is checked against it (`check_model_rate`, --force-rate), and
    the output is written in the input's format, as a complete copy (`writer_like`).
    """
    from livedenoise.commands.args import check_model_rate, open_from_args
    from livedenoise.stream.ephys import denoise_recording, open_ephys_engine

    _set_threads(args)
    rec = open_from_args(args.input, args)
    neural = rec.meta.get("neural_channels")
    if rec.format == "spikeglx" and neural is not None and len(neural) == 0:
        kinds = sorted(set(rec.meta.get("channel_kinds", [])))
        raise UserError(f"{args.input}: none of its {rec.n_channels} channels is a neural channel "
                        f"({', '.join(kinds) or 'sync/digital'} only); there is nothing to denoise")
    eng = open_ephys_engine(args.model, args.backend, threads=args.threads)
    notes = list(rec.notes) + check_model_rate(eng.card, rec, args.model, getattr(args, "force_rate", False))
    quiet = args.quiet or args.json
    rep = denoise_recording(rec, args.model, args.output, engine=eng, progress=not quiet)
    quality = _ephys_quality(rec, eng) if args.report else None
    if args.json:
        return json.dumps({"input": str(args.input), "output": rep["out"], "model": str(args.model),
                           "stream": rec.stream_name, "sample_rate": rec.sample_rate, "notes": notes, **rep,
                           **({"quality": quality} if quality is not None else {})})
    seg = (f"; {rep['segments']} segments (sample numbers: {rep['gaps']} gaps, {rep['restarts']} restarts), "
           "each denoised on its own" if rep["segments"] > 1 else "")
    what = f" (stream '{rec.stream_name}')" if rec.format == "openephys" else ""
    lines = [f"denoised {rep['samples']} samples x {rep['channels']} channels{what} -> {rep['out']} in "
             f"{rep['seconds']:.1f} s ({rep['realtime_factor']:.2f}x real time){seg}"]
    if rec.format == "openephys":
        lines.append("the rest of the recording is copied as it is (events, sync messages, settings, other "
                     "streams), its sample numbers and timestamps unchanged")
    if quality is not None:
        from livedenoise.train.quality import ephys_summary_lines

        lines += ephys_summary_lines(quality) if "skipped" not in quality else [f"no quality report: {quality['skipped']}"]
    return "\n".join(lines + notes)


def _ephys_quality(rec, eng, seconds: float = 10.0) -> dict:
    """The ephys quality report (train/quality.py) on the recording's first `seconds`, denoised by the same pipeline."""
    import numpy as np

    from livedenoise.stream.ephys import denoise_samples
    from livedenoise.train.quality import ephys_quality_report

    n = min(rec.n_samples, int(seconds * rec.sample_rate))
    neural = rec.meta.get("neural_channels")
    raw = rec.read(0, n) if neural is None else rec.read(0, n)[:, np.asarray(neural, np.int64)]
    try:
        den = denoise_samples(eng, raw, sample_numbers=rec.sample_numbers[:n])
        return ephys_quality_report(raw, den, rec.sample_rate)
    except (ValueError, UserError) as exc:
        return {"skipped": str(exc)}

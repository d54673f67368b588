"""Offline denoising: a movie file (or array) run through the imaging pipeline core, in bounded memory.

The file is a source for `stream.pipeline.FramePipeline`, the same object the
live service runs per acquisition: frames are pushed in chunks and the stream
is finished at the end of the file, so every window, edge rule (reflected at
the movie's edges and at gaps in its counters), length rule and normalisation
is the live service's. The output has exactly as many frames as the input; a
frame with no usable context at all (the first frame for a causal model)
passes through unchanged.

The movie is read in sequential chunks of whole batches, so memory holds one
chunk plus the window's margins, never the movie. Batches are frames
[k*batch, (k+1)*batch) (the pipeline's `full` batching) whatever the chunk
size: output is bit-identical between runs and between chunkings.

Output values keep the input's sample type, rounded and clipped to its range
(never wrapped around), unless `out_dtype` asks for float32.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.models.innovation import InnovationStep, step_for
from livedenoise.models.registry import check_length, min_frames
from livedenoise.stream.pipeline import FRAME_AXES, FramePipeline

DEFAULT_CHUNK = 128  # frames per read, rounded up to a whole number of batches


@dataclass
class DenoiseStats:
    frames: int
    passthrough: int
    seconds: float
    batch: int
    dtype: str
    innovation: dict | None = None
    """The innovation step's settings when it was applied."""
    norm: dict | None = None
    """How the frames were normalised: {"mode": "data" | "card" | "given", "frames", "mean", "std",
    "card_mean", "card_std", "note"} (`note`: a large mismatch between the movie and the card)."""
    nonfinite: int = 0
    """NaN/Inf pixels of the input (output as NaN)."""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "frames_per_s": self.fps}


def check_movie_fits(movie, card) -> None:
    """UserError when the movie is shorter than the model's minimum (`registry.check_length`,
    the rule `train` and `serve` use too), has the wrong frame size, or the model does not read its frames
    (an ephys model; a volume model on 2D frames or an imaging model on a NIfTI run)."""
    layout = getattr(card, "layout", "frames")
    if layout not in FRAME_AXES:
        raise UserError(f"this model expects {card.layout!r} input ({card.modality}), not imaging frames")
    ndim = len(movie.shape) - 1
    if ndim != FRAME_AXES[layout]:
        what = {2: "2D frames", 3: "3D volumes (a 4D NIfTI run)"}.get(ndim, f"{ndim}-axis frames")
        wants = "4D NIfTI runs (.nii, .nii.gz)" if layout == "volumes" else "movies of 2D frames"
        raise UserError(f"{movie.path.name} holds {what} but this {card.arch} model ({card.modality}) reads {wants}")
    check_length(card, len(movie), movie.path.name)
    if card.frame_shape is not None and list(movie.shape[1:]) != list(card.frame_shape):
        h, w = movie.shape[1:3]
        raise UserError(
            f"{movie.path.name} has {h}x{w} frames but this exported model is fixed to "
            f"{'x'.join(map(str, card.frame_shape))} frames; export the .pt checkpoint again with "
            f"--frame-shape {h} {w} (the .pt runs at any size)"
        )


def output_dtype(in_dtype, out_dtype) -> np.dtype:
    if out_dtype in (None, "same"):
        return np.dtype(in_dtype)
    dt = np.dtype(out_dtype)
    if dt != np.float32:
        raise UserError(f"output sample type must be 'same' or 'float32', not {out_dtype!r}")
    return dt


def _to_dtype(pred: np.ndarray, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """float32 -> dtype (into `out` when given): integers are rounded and clipped to the type's range (no wrap-around)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        r = np.rint(pred)
        np.clip(r, info.min, info.max, out=r)
        pred = r
    if out is None:
        return pred.astype(dtype, copy=False)
    np.copyto(out, pred, casting="unsafe")
    return out


def denoise_movie(movie, engine, writer, *, batch: int = 8, out_dtype=None, progress: bool = True,
                  chunk: int = DEFAULT_CHUNK, innovation: InnovationStep | None = None,
                  counters: np.ndarray | None = None, step: int = 1, norm="card", renorm: int = 0,
                  renorm_rate: float = 0.0) -> DenoiseStats:
    """Denoise every frame of `movie` ((T, H, W) reader) with `engine`, appending the results to `writer`.

    The frames go through the same `FramePipeline` as a live stream: pushed
    `chunk` frames at a time, then finished. With `innovation`, each prediction
    is corrected by its own raw frame (models/innovation.py). `counters` (T,)
    gives each frame's source counter (frame number; default 0..T-1), which
    advance by `step`: a jump or fall back splits the movie into segments
    exactly as the live service does (stream/gaps.py). Every frame gets an
    output. `norm` (models/norm.py): "card" (the model card's statistics),
    "data" (the movie's own: `sample_frames_norm` of the whole movie, or with
    `renorm=N` of its first N frames and, with `renorm_rate`, their slow update
    every N frames, exactly as `serve --renorm N --renorm-rate R`), or a
    (mean, std) pair. `progress`: True (a `livedenoise.progress.Progress` on
    stderr), False, or an object whose `update(n)` is called after every batch
    (not every written chunk). Errors: UserError for a movie the model cannot
    take (`check_movie_fits`) or batch < 1.
    """
    card = engine.card
    check_movie_fits(movie, card)
    if batch < 1:
        raise UserError(f"batch must be >= 1 (got {batch})")
    if counters is not None and len(counters) != len(movie):
        raise ValueError(f"{len(counters)} counters for a movie of {len(movie)} frames")
    dtype = output_dtype(movie.dtype, out_dtype)
    t_total = len(movie)
    fs = tuple(int(s) for s in movie.shape[1:])
    chunk = max(batch, -(-int(chunk) // batch) * batch)
    spec = card.window
    margin = 2 * (spec.lag - min(0, min(spec.offsets)) + batch + min_frames(card)) + 8
    stats_given, first_n, mode = _norm_plan(movie, card, norm, renorm)
    pipe = FramePipeline(engine, fs, movie.dtype, capacity=max(min(t_total, chunk), first_n) + 2 * first_n + margin,
                         max_batch=batch, innovation=innovation, step=step, name=movie.path.name,
                         norm=stats_given, renorm=first_n, renorm_rate=renorm_rate if first_n else 0.0)
    out = np.empty((chunk, *fs), dtype)
    filled = 0

    bar = own_bar = None
    if hasattr(progress, "update"):
        bar = progress
    elif progress:
        from livedenoise.progress import Progress

        bar = own_bar = Progress(t_total, "frame", "denoise", leave=False)

    def flush() -> None:
        nonlocal filled
        if filled:
            writer.write(out[:filled])
            filled = 0

    def drain() -> None:
        nonlocal filled
        for res in pipe.drain(full=True):
            k = 0
            while k < len(res):  # copy into the chunk buffer, flushing it when full
                m = min(len(res) - k, chunk - filled)
                _to_dtype(res.frames[k:k + m], dtype, out=out[filled:filled + m])
                filled += m
                k += m
                if bar is not None:  # every batch, not every written chunk: a slow model still shows progress
                    bar.update(m)
                if filled == chunk:
                    flush()

    started = time.perf_counter()
    try:
        for a in range(0, t_total, chunk):
            b = min(t_total, a + chunk)
            pipe.push_many(movie.read(a, b), None if counters is None else counters[a:b])
            drain()
        pipe.finish()
        drain()
        flush()
    finally:
        if own_bar is not None:
            own_bar.close()
    if pipe.next_out != t_total or pipe.stats.overflow:  # the ring is sized so that this cannot happen
        raise RuntimeError(f"internal error: {pipe.next_out} of {t_total} frames output, {pipe.stats.overflow} overflowed")
    seconds = time.perf_counter() - started
    return DenoiseStats(t_total, pipe.passthrough, seconds, batch, dtype.name,
                        innovation.cfg.to_dict() if innovation is not None else None,
                        _norm_report(mode, first_n, pipe, card, movie), int(pipe.stats.nonfinite))


def _norm_plan(movie, card, norm, renorm: int) -> tuple[tuple[float, float] | None, int, str]:
    """(statistics to give the pipeline, first-N frames for it to estimate them on, mode) for `norm`."""
    from livedenoise.models.norm import NORM_MODES, sample_frames_norm

    if isinstance(norm, tuple):
        return (float(norm[0]), float(norm[1])), 0, "given"
    if norm not in NORM_MODES:
        raise UserError(f"--norm must be one of {', '.join(NORM_MODES)} (got {norm!r})")
    if renorm < 0:
        raise UserError(f"--renorm must be >= 0 frames (got {renorm})")
    if norm == "card":
        return None, 0, "card"
    if renorm:
        return None, min(int(renorm), len(movie)), "data"
    return sample_frames_norm(len(movie), lambda i: movie.read(i, i + 1)[0]), 0, "data"


def _norm_report(mode: str, first_n: int, pipe, card, movie) -> dict:
    """What normalised the frames, and a note when the movie's statistics are far from the card's."""
    from livedenoise.models.norm import SAMPLE_FRAMES, mismatch, sample_frames_norm

    card_mean, card_std = float(card.norm_mean), float(card.norm_std)
    used = (card_mean, card_std) if pipe.mean is None else (float(pipe.mean), float(pipe.std))
    if mode == "card":  # the movie's own statistics, only to compare
        mean, std = sample_frames_norm(len(movie), lambda i: movie.read(i, i + 1)[0])
    else:
        mean, std = used
    note = mismatch(card_mean, card_std, mean, std)
    if note is not None:
        note += (": normalised by the movie's own (--norm card to use the model's)" if mode == "data" else
                 ": the model's normalisation may not fit this movie (--norm data normalises by its own)")
    frames = first_n or min(len(movie), SAMPLE_FRAMES)
    return {"mode": mode, "frames": frames, "mean": used[0], "std": used[1], "movie_mean": mean,
            "movie_std": std, "card_mean": card_mean, "card_std": card_std, "note": note}


def denoise_array(engine, data: np.ndarray, **kw) -> np.ndarray:
    """Denoise an in-memory recording with `engine`; the one in-memory entry point, imaging and ephys.

    Imaging (`engine.card.layout == "frames"`): `data` is a (T, H, W) movie;
    returns (T, H, W) float32, `denoise_movie` of it (keywords: batch,
    innovation, counters, step, chunk). fMRI (`layout == "volumes"`): the same
    with a (T, I, J, K) run. Ephys models: `data` is (samples,
    channels) in µV and the call goes to `livedenoise.stream.ephys`
    (keywords as documented there).
    """
    if getattr(engine.card, "layout", "frames") not in FRAME_AXES:
        from livedenoise.stream import ephys

        return ephys.denoise_samples(engine, data, **kw)
    from livedenoise.io.readers import ArrayMovie

    frames = np.asarray(data)
    out = np.empty(frames.shape, np.float32)

    class _Into:
        done = 0

        def write(self, chunk: np.ndarray) -> None:
            out[self.done:self.done + len(chunk)] = chunk
            self.done += len(chunk)

    denoise_movie(ArrayMovie(frames), engine, _Into(), out_dtype=np.float32, progress=False, **kw)
    return out


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def denoise_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model: str | os.PathLike,
    *,
    backend: str = "auto",
    batch: int = 8,
    out_dtype=None,
    channel: int | None = None,
    plane: int | None = None,
    dataset: str | None = None,
    progress: bool = True,
    chunk: int = DEFAULT_CHUNK,
    innovation: bool = False,
    innovation_k: float | None = None,
    axes: str | None = None,
    norm="data",
    renorm: int = 0,
    threads: int | None = None,
    renorm_rate: float = 0.0,
) -> DenoiseStats:
    """Open `src`, denoise it with `model`, write `dst` (TIFF or HDF5; a 4D NIfTI run is written as NIfTI,
    `.nii` or `.nii.gz`, with its own header, affine, TR and units). The input is never written.

    `innovation` applies the innovation step with the card's settings (`innovation_k` overrides k).
    `axes`: the stored layout when the file does not say (`open_movie`). `norm`/`renorm`: as in
    `denoise_movie`; by default the movie's own statistics (a model serves other sessions).
    """
    from livedenoise.export.engines import open_engine
    from livedenoise.io.nifti import NiftiWriter, is_nifti_path
    from livedenoise.io.readers import open_movie
    from livedenoise.io.writers import WRITER_EXTS

    src, dst = Path(src), Path(dst)
    if same_file(src, dst):
        raise UserError(f"output {dst} is the input file; choose another output name (the input is never overwritten)")
    nifti = is_nifti_path(src)
    if nifti and not is_nifti_path(dst):
        raise UserError(f"{src.name} is a NIfTI run: its output is NIfTI too, with the input's header, affine and TR; "
                        f"name the output .nii or .nii.gz (not {dst.name})")
    if is_nifti_path(dst) and not nifti:
        raise UserError(f"cannot write {dst.name}: NIfTI output needs a NIfTI input (its header says what the voxels "
                        f"are); write {src.name}'s output as one of {', '.join(WRITER_EXTS)}")
    if not nifti and dst.suffix.lower() not in WRITER_EXTS:
        raise UserError(f"cannot write {dst.name}: unknown output format {dst.suffix or '(no extension)'!r}; use one of {', '.join(WRITER_EXTS)}")
    from livedenoise.io.writers import open_writer

    with open_movie(src, channel=channel, plane=plane, dataset=dataset, axes=axes) as movie:
        engine = open_engine(model, backend, threads=threads)
        check_movie_fits(movie, engine.card)
        inno, _ = step_for(engine.card, innovation, innovation_k)
        dtype = output_dtype(movie.dtype, out_dtype)
        attrs = {"source": str(src.name), "model": engine.card.summary(), "lag": int(engine.card.lag)}
        if inno is not None:
            attrs["innovation"] = inno.describe()
        # the file's own frame numbers (ScanImage frameNumbers, a --record file's `frame`) split it at
        # gaps exactly as the live service splits the same stream
        counters = movie.counters()
        if nifti:  # the input's header (affine, TR, units, extensions); data type, shape and scaling are the output's
            if not dst.parent.exists():
                raise UserError(f"output folder {dst.parent} does not exist")
            writer = NiftiWriter(dst, movie.header, len(movie), movie.shape[1:], dtype)
        else:
            writer = open_writer(dst, len(movie), movie.shape[1:], dtype, attrs=attrs)
        with writer:
            return denoise_movie(movie, engine, writer, batch=batch, out_dtype=out_dtype, progress=progress, chunk=chunk,
                                 innovation=inno, counters=counters, step=movie.frame_step, norm=norm, renorm=renorm,
                                 renorm_rate=renorm_rate)

"""Synthetic two-photon movies with their noise-free ground truth.

The model of the data (see docs/data.md for the full description):

* a static baseline image: smooth, lognormal tissue brightness with a couple of
  dark blood vessels, plus every neuron at rest;
* neurons: soft-edged ellipses (radius ~`neuron_radius` px) with a dimmer
  nucleus, resting brightness `neuron_brightness` x the background; each has
  Poisson calcium events (rate per neuron drawn around `spike_rate` Hz) that
  rise within one frame and decay exponentially with time constant `tau` s,
  amplitude dF/F drawn around `dff`;
* neuropil: spatially smooth fields whose amplitudes drift slowly over seconds
  and follow the population activity, a `neuropil` fraction of the background;
* optional slow brightness drift (`bleach`: fraction lost by the last frame,
  no motion);
* noise: Poisson shot noise on the photon counts, Gaussian read noise of
  `read_noise` ADU, then ``ADU = gain * photons + offset`` rounded and clipped
  to int16.

`photons` sets the mean expected photon count per pixel per frame of the
resting movie (no calcium events, no neuropil fluctuation); at 1 photon the raw
frames are very noisy (a pixel's SNR is about 1).

`clean` is the expected value of `noisy`, in the same ADU (gain * expected
photons + offset), so metrics compare them directly. It is rounded to a grid of
`CLEAN_STEP` = 1/256 ADU (at most 0.002 ADU off, a 500th of the noisy movie's
own rounding step): the truth file then stores it losslessly in a third of the
space (gzip), and the file and the in-memory movie are the same numbers.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from livedenoise.errors import UserError

CHUNK = 64  # frames generated at a time (fixed: results do not depend on memory)
CLEAN_STEP = 1.0 / 256
"""The clean movie's grid in ADU (a power of two: exact in float32; lets the truth file compress)."""
TRUTH_CHUNK_BYTES = 1 << 20
"""About this many bytes of the clean movie per compressed HDF5 chunk (whole frames; h5py's default cache)."""


@dataclass
class SimConfig:
    frames: int = 2000
    height: int = 256
    width: int = 256
    n_neurons: int | None = None
    """None: about one neuron per 800 pixels (82 in 256 x 256)."""
    photons: float = 1.0
    """Mean expected photons per pixel per frame of the resting movie."""
    frame_rate: float = 30.0
    read_noise: float = 4.0
    """Gaussian read-noise std in ADU (0.2 photon at the default gain)."""
    gain: float = 20.0
    """ADU per detected photon."""
    offset: float = 50.0
    """ADU of a pixel that sees no photon."""
    seed: int = 0
    spike_rate: float = 0.3
    """Mean calcium-event rate per neuron in Hz (per-neuron rates are lognormal around it)."""
    tau: float = 0.7
    """Calcium decay time constant in seconds."""
    dff: float = 0.6
    """Median dF/F of one calcium event."""
    neuron_radius: float = 4.0
    """Mean soma radius in pixels."""
    neuron_brightness: float = 1.5
    """Resting soma brightness relative to the background."""
    neuropil: float = 0.1
    """Std of the neuropil fluctuation as a fraction of the background."""
    bleach: float = 0.05
    """Fraction of brightness lost, linearly, by the last frame (0: no drift)."""

    def __post_init__(self) -> None:
        if self.frames < 1 or self.height < 8 or self.width < 8:
            raise UserError(f"simulate: need at least 1 frame and 8x8 pixels (got {self.frames} frames of {self.height}x{self.width})")
        if not self.photons > 0:
            raise UserError(f"simulate: photons per pixel per frame must be > 0 (got {self.photons})")
        if not self.frame_rate > 0:
            raise UserError(f"simulate: frame rate must be > 0 (got {self.frame_rate})")
        if self.n_neurons is not None and self.n_neurons < 0:
            raise UserError(f"simulate: number of neurons must be >= 0 (got {self.n_neurons})")
        if not 0 <= self.bleach < 1:
            raise UserError(f"simulate: bleach must be in [0, 1) (got {self.bleach})")

    @property
    def neurons(self) -> int:
        return int(self.n_neurons) if self.n_neurons is not None else max(1, round(self.height * self.width / 800))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SimConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Simulation:
    config: SimConfig
    noisy: np.ndarray | None
    """(T, H, W) int16 raw movie (None when loaded from a truth file alone)."""
    clean: np.ndarray
    """(T, H, W) float32 expected value of `noisy`, same ADU."""
    masks: np.ndarray
    """(N, H, W) bool soma masks (soft footprint > 0.5)."""
    traces: np.ndarray
    """(N, T) float32 each neuron's own fluorescence at its brightest pixel, ADU above offset."""
    spikes: list[np.ndarray] = field(default_factory=list)
    """Per neuron, the frame indices where a calcium event starts (its rise frame)."""
    dff: np.ndarray | None = None
    """(N, T) float32 calcium signal dF/F0 of each neuron."""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.clean.shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------- pieces


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std spatially smooth random field (Gaussian-filtered white noise)."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    f -= f.mean()
    f /= f.std() + 1e-12
    return f


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    bg = np.exp(0.35 * _smooth_field(rng, (h, w), max(h, w) / 12))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for _ in range(2):  # dark vessels: straight bands with soft edges, slightly wiggly
        theta = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        along = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        d = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        d = d + 3.0 * np.sin(along / rng.uniform(15, 40))
        width = rng.uniform(2.0, 4.0)
        bg *= 1.0 - 0.6 * np.exp(-0.5 * (d / width) ** 2)
    return bg / bg.mean()


def _neurons(rng: np.random.Generator, cfg: SimConfig):
    """Soft elliptical footprints (sparse), masks, and resting brightness per neuron."""
    from scipy import sparse

    h, w, n = cfg.height, cfg.width, cfg.neurons
    r0 = cfg.neuron_radius
    centres: list[tuple[float, float]] = []
    tries = 0
    while len(centres) < n and tries < 200 * max(n, 1):
        tries += 1
        cy, cx = rng.uniform(r0, h - r0), rng.uniform(r0, w - r0)
        if all((cy - y) ** 2 + (cx - x) ** 2 > (1.6 * r0) ** 2 for y, x in centres):
            centres.append((cy, cx))
    n = len(centres)
    rows, cols, vals = [], [], []
    masks = np.zeros((n, h, w), bool)
    half = int(np.ceil(2.0 * r0)) + 2
    for i, (cy, cx) in enumerate(centres):
        a = r0 * rng.uniform(0.8, 1.25)
        b = r0 * rng.uniform(0.8, 1.25)
        th = rng.uniform(0, np.pi)
        y0, y1 = max(0, int(cy) - half), min(h, int(cy) + half + 1)
        x0, x1 = max(0, int(cx) - half), min(w, int(cx) + half + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(th) + dy * np.sin(th)
        v = -dx * np.sin(th) + dy * np.cos(th)
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        soma = 1.0 / (1.0 + np.exp((d - 1.0) / 0.12))
        nucleus = 1.0 / (1.0 + np.exp((d - 0.5) / 0.1))
        prof = soma * (1.0 - 0.5 * nucleus)  # GCaMP is cytosolic: a dimmer centre
        masks[i, y0:y1, x0:x1] = soma > 0.5
        keep = prof > 1e-3
        idx = (yy[keep].astype(np.int64) * w + xx[keep].astype(np.int64))
        rows.append(np.full(idx.size, i))
        cols.append(idx)
        vals.append(prof[keep] / prof.max())
    if n:
        fp = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, h * w))
    else:
        fp = sparse.csr_matrix((0, h * w))
    brightness = cfg.neuron_brightness * rng.uniform(0.7, 1.3, n)
    return fp, masks, brightness


def _activity(rng: np.random.Generator, cfg: SimConfig, n: int):
    """Calcium dF/F (n, T), and per neuron the frames where an event starts."""
    from scipy.signal import lfilter

    t = cfg.frames
    rates = cfg.spike_rate * rng.lognormal(0.0, 0.8, n) / np.exp(0.8**2 / 2)  # mean = spike_rate
    counts = rng.poisson(rates[:, None] / cfg.frame_rate, size=(n, t))
    amps = cfg.dff * rng.lognormal(0.0, 0.4, size=(n, t))
    drive = counts * amps
    g = np.exp(-1.0 / (cfg.tau * cfg.frame_rate))
    dff = lfilter([1.0], [1.0, -g], drive, axis=1) if t and n else np.zeros((n, t))
    spikes = [np.flatnonzero(counts[i]).astype(np.int64) for i in range(n)]
    return dff.astype(np.float32), spikes


def _neuropil(rng: np.random.Generator, cfg: SimConfig, dff: np.ndarray, k: int = 4):
    """Spatial fields (k, H*W) and temporal amplitudes (T, k); their product has std ~1."""
    from scipy.ndimage import gaussian_filter1d

    h, w, t = cfg.height, cfg.width, cfg.frames
    spatial = np.stack([1.0 + 0.5 * _smooth_field(rng, (h, w), max(h, w) / 8) for _ in range(k)]).reshape(k, -1)
    sigma = 2.0 * cfg.frame_rate  # fluctuations over a few seconds
    temporal = gaussian_filter1d(rng.standard_normal((t, k)), sigma, axis=0, mode="reflect") if t > 1 else np.zeros((t, k))
    if dff.size:  # the first component follows the population activity, blurred in time
        pop = gaussian_filter1d(dff.mean(axis=0).astype(np.float64), cfg.frame_rate / 3, mode="reflect")
        temporal[:, 0] = pop
    temporal -= temporal.mean(axis=0)
    temporal /= temporal.std(axis=0) + 1e-12
    temporal /= np.sqrt(k)
    return spatial.astype(np.float32), temporal.astype(np.float32)


# --------------------------------------------------------------------------- main


def simulate_movie(cfg: SimConfig | None = None, on_frames: Callable[[int], None] | None = None,
                   **overrides) -> Simulation:
    """Generate a noisy movie and its ground truth; deterministic for a given config.

    `on_frames(n)` is called after each chunk of n frames (progress).
    """
    cfg = cfg or SimConfig()
    if overrides:
        cfg = SimConfig.from_dict({**cfg.to_dict(), **overrides})
    h, w, t = cfg.height, cfg.width, cfg.frames
    ss = np.random.SeedSequence(int(cfg.seed))
    rng_struct, rng_act, rng_np, rng_noise = (np.random.default_rng(s) for s in ss.spawn(4))

    bg = _background(rng_struct, h, w).reshape(-1)
    fp, masks, brightness = _neurons(rng_struct, cfg)
    n = fp.shape[0]
    dff, spikes = _activity(rng_act, cfg, n)
    np_spatial, np_temporal = _neuropil(rng_np, cfg, dff)

    rest = bg + np.asarray(fp.T @ brightness).reshape(-1)  # resting photons, unscaled
    scale = cfg.photons / rest.mean()
    rest_s = (rest * scale).astype(np.float32)
    bg_np = (bg * scale * cfg.neuropil).astype(np.float32)  # neuropil amplitude per pixel
    fp_s = (fp.multiply(brightness[:, None] * scale)).tocsr().astype(np.float32)  # per-neuron peak photons
    drift = (1.0 - cfg.bleach * np.arange(t) / max(t - 1, 1)).astype(np.float32)

    noisy = np.empty((t, h, w), np.int16)
    clean = np.empty((t, h, w), np.float32)
    gain, offset = np.float32(cfg.gain), np.float32(cfg.offset)
    lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
    grid = np.float32(1.0 / CLEAN_STEP)
    for a in range(0, t, CHUNK):
        b = min(t, a + CHUNK)
        lam = np.broadcast_to(rest_s, (b - a, h * w)).copy()
        lam += (np_temporal[a:b] @ np_spatial) * bg_np
        if n:
            lam += np.asarray(fp_s.T @ dff[:, a:b]).T
        lam *= drift[a:b, None]
        np.maximum(lam, 0, out=lam)
        counts = rng_noise.poisson(lam).astype(np.float32)
        adu = counts * gain + offset
        adu += rng_noise.standard_normal(adu.shape, dtype=np.float32) * np.float32(cfg.read_noise)
        np.rint(adu, out=adu)
        np.clip(adu, lo, hi, out=adu)
        noisy[a:b] = adu.reshape(b - a, h, w)
        lam *= gain
        lam += offset
        lam *= grid
        np.rint(lam, out=lam)
        lam /= grid
        clean[a:b] = lam.reshape(b - a, h, w)
        if on_frames is not None:
            on_frames(b - a)

    peak = np.asarray(fp_s.max(axis=1).todense()).reshape(-1) if n else np.zeros(0, np.float32)
    traces = (gain * peak[:, None] * (1.0 + dff) * drift[None, :]).astype(np.float32)
    return Simulation(cfg, noisy, clean, masks, traces, spikes, dff)


# --------------------------------------------------------------------------- files


def truth_path(path: str | os.PathLike) -> Path:
    """`<dir>/<stem>.truth.h5` for a movie path; a truth path is returned as is."""
    path = Path(path)
    if path.name.endswith(".truth.h5"):
        return path
    return path.with_name(path.stem + ".truth.h5")


def check_movie_path(path: str | os.PathLike) -> Path:
    """The path `save_simulation` can write a movie to; UserError (one line) otherwise."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff", ".h5", ".hdf5", ".npy"):
        raise UserError(f"simulate: cannot write {path.name}; use a .tif, .h5 or .npy file name")
    if path.name.endswith(".truth.h5"):
        raise UserError(f"simulate: {path.name} is the name of a ground-truth file; pick another output name")
    if not path.parent.exists():
        raise UserError(f"simulate: folder {path.parent} does not exist")
    return path


def _truth_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    per_frame = int(np.prod(shape[1:])) * 4
    return (max(1, min(shape[0], CHUNK, TRUTH_CHUNK_BYTES // max(per_frame, 1))), *shape[1:])


def save_simulation(sim: Simulation, path: str | os.PathLike,
                    on_frames: Callable[[int], None] | None = None) -> tuple[Path, Path]:
    """Write the noisy movie to `path` (.tif/.tiff, .h5/.hdf5, .npy) and the truth beside it.

    The truth's clean movie is stored gzip-compressed (with the shuffle filter),
    in chunks of whole frames; `load_truth` reads it back on demand. The movie
    and the truth are written together, a few frames at a time: `on_frames(n)`
    is called after each n frames of both (progress).
    """
    import h5py

    from livedenoise.io.writers import open_writer

    path = check_movie_path(path)
    ext = path.suffix.lower()
    assert sim.noisy is not None
    attrs = {"source": "livedenoise simulate", "config": json.dumps(sim.config.to_dict(), sort_keys=True),
             "frame_rate": float(sim.config.frame_rate)}
    t = sim.noisy.shape[0]
    tpath = truth_path(path)
    tmp = tpath.with_name(tpath.name + ".partial")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["config"] = json.dumps(sim.config.to_dict(), sort_keys=True)
            f.attrs["movie"] = path.name
            f.attrs["default_dataset"] = "clean"  # open_movie(truth file) gives the clean movie
            f.attrs["units"] = ("clean and traces in ADU (clean = gain * expected photons + offset, on a grid of "
                                f"{CLEAN_STEP:g} ADU; traces exclude the offset)")
            chunks = _truth_chunks(sim.clean.shape)
            clean = f.create_dataset("clean", shape=sim.clean.shape, dtype=np.float32, chunks=chunks,
                                     compression="gzip", compression_opts=1, shuffle=True)
            f.create_dataset("masks", data=sim.masks, compression="gzip", shuffle=True)
            f.create_dataset("traces", data=sim.traces)
            if sim.dff is not None:
                f.create_dataset("dff", data=sim.dff)
            counts = np.array([len(s) for s in sim.spikes], np.int64)
            f.create_dataset("spike_frames", data=np.concatenate(sim.spikes) if sim.spikes else np.zeros(0, np.int64))
            f.create_dataset("spike_offsets", data=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
            step = CHUNK
            if ext == ".npy":
                mtmp = path.with_name(path.name + ".partial.npy")
                np.save(mtmp, sim.noisy)
                for a in range(0, t, step):
                    clean[a:a + step] = sim.clean[a:a + step]
                    if on_frames is not None:
                        on_frames(min(t, a + step) - a)
                os.replace(mtmp, path)
            else:
                with open_writer(path, t, sim.noisy.shape[1:], np.int16, attrs=attrs) as wr:
                    for a in range(0, t, step):
                        wr.write(sim.noisy[a:a + step])
                        clean[a:a + step] = sim.clean[a:a + step]
                        if on_frames is not None:
                            on_frames(min(t, a + step) - a)
        os.replace(tmp, tpath)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path, tpath


class TruthFrames:
    """The clean movie of a truth file, read on demand: (T, H, W) float32, like a read-only array.

    `shape`, `dtype`, `len()`, indexing (`x[a:b]`, `x[i]`, `x[[i, j]]`), `read(a, b)`
    and `np.asarray(x)` (loads it all). The file is opened on first use and
    closed with `close()` or when the object goes.
    """

    def __init__(self, path: str | os.PathLike, name: str = "clean"):
        import h5py

        self.path, self.name = Path(path), name
        with h5py.File(self.path, "r") as f:
            ds = f[name]
            self.shape, self.dtype = tuple(ds.shape), ds.dtype
        self.ndim = len(self.shape)
        self._file = None

    def _ds(self):
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file[self.name]

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._ds()[start:stop]

    def __getitem__(self, key):
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(first, (list, np.ndarray)):  # h5py wants increasing unique indices: read those, reorder
            idx = np.asarray(first)
            idx = np.flatnonzero(idx) if idx.dtype == bool else np.where(idx < 0, idx + self.shape[0], idx)
            uniq, inv = np.unique(idx, return_inverse=True)
            data = self._ds()[uniq] if uniq.size else np.empty((0, *self.shape[1:]), self.dtype)
            return data[inv.reshape(idx.shape)][(slice(None), *rest)]
        return self._ds()[key]

    def __array__(self, dtype=None, copy=None):
        data = self._ds()[()]
        return data if dtype is None else data.astype(dtype, copy=False)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"TruthFrames({str(self.path)!r}, shape={self.shape})"


def load_truth(path: str | os.PathLike) -> Simulation:
    """Ground truth saved by `save_simulation`, from the movie's path or the truth file's.

    `clean` is read on demand (nothing large is loaded): a `TruthFrames` for the
    compressed clean movie `save_simulation` writes, a read-only memory map for
    an older, uncompressed truth file. `noisy` is None (open the movie with `open_movie`).
    """
    import h5py

    tpath = truth_path(path)
    if not tpath.is_file():
        raise UserError(f"no ground truth {tpath} found for {Path(path).name}; it is written by `livedenoise simulate`")
    try:
        with h5py.File(tpath, "r") as f:
            cfg = SimConfig.from_dict(json.loads(f.attrs["config"]))
            ds = f["clean"]
            off = ds.id.get_offset() if ds.chunks is None else None
            shape, dtype = ds.shape, ds.dtype
            masks = f["masks"][()]
            traces = f["traces"][()]
            dff = f["dff"][()] if "dff" in f else None
            frames = f["spike_frames"][()]
            offsets = f["spike_offsets"][()]
    except UserError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{tpath} is not a readable ground-truth file (truncated or corrupt?): {first[:160]}") from None
    if off is not None:
        clean = np.memmap(tpath, dtype=dtype, mode="r", offset=off, shape=shape)
    else:
        clean = TruthFrames(tpath)
    spikes = [frames[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    return Simulation(cfg, None, clean, masks.astype(bool), traces, spikes, dff)

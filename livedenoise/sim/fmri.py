"""A synthetic fMRI run with ground truth: a brain-shaped mask, task-locked and resting BOLD, thermal noise.

The model of the data (every amplitude is a fraction of the voxel's baseline, as
BOLD signals are reported in percent signal change):

- **Brain mask**: an ellipsoid filling ~80 % of each axis, its surface rippled by
  a smooth random field (so it is not a perfect quadric), on a (I, J, K) grid.
- **Baseline** S0 inside the mask: `baseline` (a.u.) times 1 + 0.25 on a
  cortical shell 2 voxels deep (grey matter is brighter than white in T2*) +
  a smooth random field of +-10 %; zero outside the mask.
- **Task**: a block design (`block_s` seconds on, `block_s` off, starting off)
  convolved with the canonical double-gamma haemodynamic response (SPM's: a gamma
  peak at ~5 s minus 1/6 of a gamma undershoot at ~15 s; Friston et al. 1998,
  Glover 1999), scaled to a peak of 1. It drives `n_active` spheres of radius
  `active_radius` voxels (hard-edged: every voxel inside at `task_percent` %,
  none outside), so the true activation map has an exact extent.
- **Resting fluctuations**: `n_networks` spatially smooth networks (each a sum
  of 3 Gaussian blobs, sigma 4 voxels, so together they cover the brain) whose time
  courses are white noise low-passed below 0.1 Hz and convolved with the same
  HRF, at `rest_percent` % rms each, plus a slow drift (a random-walk-free
  linear trend of +-0.5 %) common to the brain.
- **Thermal noise**: independent Gaussian per voxel and volume (inside and
  outside the brain), sigma = mean baseline in the mask / `tsnr`: the temporal
  SNR the scanner alone would give. (Magnitude images make it Rician where the
  signal is near 0, outside the brain; this model keeps it Gaussian.)

`simulate_fmri(cfg)` returns an `FmriSimulation` (noisy run, clean run, mask,
active map, task regressor); `save_fmri` writes the noisy run as a 4D NIfTI
(float32, 3 mm voxels, TR in the header in seconds, `xyzt_units` mm and s) and
the ground truth beside it (`<stem>.truth.h5`); `load_fmri_truth` reads it.
Metrics on it are in `livedenoise.sim.fmri_metrics`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import UserError


@dataclass
class FmriConfig:
    """Parameters of `simulate_fmri` (see the module docstring for the model)."""

    shape: tuple[int, int, int] = (36, 44, 36)
    """Volume (I, J, K) in voxels."""
    volumes: int = 240
    tr: float = 2.0
    """Repetition time, seconds."""
    tsnr: float = 20.0
    """Temporal SNR of the thermal noise alone: mean baseline in the mask / noise sigma."""
    voxel_mm: float = 3.0
    baseline: float = 1000.0
    task_percent: float = 3.0
    """Task response amplitude inside the active spheres, % of baseline (peak of the HRF-convolved blocks)."""
    rest_percent: float = 1.5
    """Resting fluctuation of each network, % of baseline, rms over time at its centre."""
    n_networks: int = 8
    n_active: int = 2
    active_radius: float = 3.0
    """Radius of each active sphere, voxels."""
    block_s: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise UserError(f"an fMRI volume needs 3 axes of at least 8 voxels, got {self.shape}")
        if self.volumes < 8:
            raise UserError(f"an fMRI run needs at least 8 volumes, got {self.volumes}")
        if not (self.tr > 0 and self.tsnr > 0 and self.baseline > 0 and self.voxel_mm > 0):
            raise UserError("--tr, --tsnr, the baseline and the voxel size must be > 0")
        if self.active_radius <= 0 or self.n_active < 0 or self.n_networks < 0 or self.block_s <= 0:
            raise UserError("active radius and block length must be > 0; counts of networks and active spheres >= 0")

    @property
    def sigma(self) -> float:
        """Thermal noise sigma (a.u.), from the mean baseline in the mask (set by `simulate_fmri`)."""
        return float(getattr(self, "_sigma", self.baseline / self.tsnr))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class FmriSimulation:
    """A simulated run: `noisy` and `clean` (T, I, J, K) float32, `mask` and `active` (I, J, K) bool,
    `task` (T,) float64 (the HRF-convolved block regressor, peak 1), `sigma` (thermal noise, a.u.), `cfg`."""

    noisy: np.ndarray
    clean: np.ndarray
    mask: np.ndarray
    active: np.ndarray
    task: np.ndarray
    sigma: float
    cfg: FmriConfig


def hrf(tr: float, length_s: float = 32.0) -> np.ndarray:
    """The canonical double-gamma HRF sampled every `tr` seconds, summing to 1.

    SPM's `spm_hrf` defaults: gamma(6, 1) (peak at 5 s) minus gamma(16, 1) / 6 (undershoot at 15 s).
    """
    from scipy.stats import gamma

    t = np.arange(0.0, length_s, tr)
    h = gamma.pdf(t, 6.0) - gamma.pdf(t, 16.0) / 6.0
    return h / h.sum()


def task_regressor(volumes: int, tr: float, block_s: float) -> np.ndarray:
    """(volumes,) block design (off first, `block_s` off / on) convolved with `hrf`, scaled to a peak of 1."""
    t = np.arange(volumes) * tr
    boxcar = ((t // block_s) % 2 == 1).astype(np.float64)
    reg = np.convolve(boxcar, hrf(tr))[:volumes]
    peak = reg.max()
    return reg / peak if peak > 0 else reg


def _smooth(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return f / (f.std() or 1.0)


def brain_mask(shape, rng: np.random.Generator) -> np.ndarray:
    """(I, J, K) bool: an ellipsoid of semi-axes 0.42 x each axis, its surface rippled by +-6 %."""
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) / (0.42 * n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g * g for g in grids))
    return r < 1.0 + 0.06 * _smooth(rng, shape, 3.0)


def _lowpass_noise(rng: np.random.Generator, n: int, tr: float, cutoff_hz: float = 0.1) -> np.ndarray:
    """(n,) white noise low-passed below `cutoff_hz` (FFT brick wall), unit rms."""
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[np.fft.rfftfreq(n, tr) > cutoff_hz] = 0.0
    x = np.fft.irfft(spec, n)
    return x / (x.std() or 1.0)


def simulate_fmri(cfg: FmriConfig | None = None) -> FmriSimulation:
    """A simulated run (module docstring). Same config and seed: the same run. Memory: ~3 x T x I x J x K x 4 bytes."""
    from scipy.ndimage import binary_erosion

    cfg = cfg or FmriConfig()
    rng = np.random.default_rng(cfg.seed)
    shape, n = cfg.shape, cfg.volumes
    mask = brain_mask(shape, rng)
    shell = mask & ~binary_erosion(mask, iterations=2)
    s0 = cfg.baseline * (1.0 + 0.25 * shell + 0.10 * _smooth(rng, shape, 4.0)) * mask
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in shape], indexing="ij"), axis=-1).astype(np.float64)

    # task: hard-edged spheres, centred inside the brain away from each other
    inner = np.argwhere(binary_erosion(mask, iterations=int(np.ceil(cfg.active_radius)) + 2))
    active = np.zeros(shape, bool)
    centres: list[np.ndarray] = []
    for _ in range(cfg.n_active):
        for _try in range(200):
            c = inner[int(rng.integers(len(inner)))].astype(np.float64) if len(inner) else np.array(shape) / 2
            if all(np.linalg.norm(c - o) > 4 * cfg.active_radius for o in centres):
                break
        centres.append(c)
        active |= np.linalg.norm(grid - c, axis=-1) <= cfg.active_radius
    active &= mask
    task = task_regressor(n, cfg.tr, cfg.block_s)

    # resting networks: smooth spatial maps with low-passed, HRF-convolved time courses
    frac = np.zeros((n, *shape), np.float32)
    frac += (cfg.task_percent / 100.0) * task[:, None, None, None].astype(np.float32) * active
    h = hrf(cfg.tr)
    for _ in range(cfg.n_networks):
        sp = np.zeros(shape)
        for _b in range(3):
            c = np.argwhere(mask)[int(rng.integers(int(mask.sum())))]
            sp += np.exp(-np.sum((grid - c) ** 2, axis=-1) / (2 * 4.0 ** 2))
        tc = np.convolve(_lowpass_noise(rng, n + len(h), cfg.tr), h)[len(h):len(h) + n]
        tc = tc / (tc.std() or 1.0)
        frac += (cfg.rest_percent / 100.0) * (tc[:, None, None, None] * sp).astype(np.float32)
    drift = np.linspace(-1.0, 1.0, n) * 0.005 * rng.choice([-1.0, 1.0])
    frac += drift[:, None, None, None].astype(np.float32)
    clean = (s0.astype(np.float32) * (1.0 + frac)).astype(np.float32)
    sigma = float(s0[mask].mean() / cfg.tsnr)
    object.__setattr__(cfg, "_sigma", sigma)
    noisy = clean + rng.normal(0.0, sigma, clean.shape).astype(np.float32)
    return FmriSimulation(noisy, clean, mask, active, task, sigma, cfg)


def fmri_header(cfg: FmriConfig):
    """A NIfTI-1 header for the run: `voxel_mm` isotropic voxels, TR in seconds, units mm and s, an affine
    centring the volume on the scanner origin (sform and qform code 1: scanner)."""
    import nibabel as nib

    affine = np.diag([cfg.voxel_mm] * 3 + [1.0])
    affine[:3, 3] = -(np.asarray(cfg.shape) - 1) / 2 * cfg.voxel_mm
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((*cfg.shape, cfg.volumes))
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_zooms((cfg.voxel_mm,) * 3 + (float(cfg.tr),))
    hdr.set_sform(affine, code=1)
    hdr.set_qform(affine, code=1)
    hdr["descrip"] = b"livedenoise simulate (fMRI)"
    return hdr


def truth_path(path: str | os.PathLike) -> Path:
    """`run.nii.gz` -> `run.truth.h5` beside it."""
    from livedenoise.io.nifti import split_ext

    stem, _ = split_ext(path)
    return Path(path).with_name(stem + ".truth.h5")


def save_fmri(sim: FmriSimulation, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write the noisy run (4D NIfTI, float32, `fmri_header`) and its ground truth (`truth_path`: datasets
    clean, mask, active, task; attributes sigma and the config as JSON), each under a partial name first.
    Returns (run path, truth path)."""
    import json

    import h5py

    from livedenoise.io import atomic
    from livedenoise.io.nifti import write_nifti

    path = Path(path)
    if not path.parent.exists():
        raise UserError(f"output folder {path.parent} does not exist")
    truth = truth_path(path)
    write_nifti(path, sim.noisy, fmri_header(sim.cfg))
    out = atomic.Output(truth)
    out.prepare()
    with h5py.File(out.partial, "w") as f:
        f.create_dataset("clean", data=sim.clean, compression="gzip", compression_opts=1,
                         chunks=(1, *sim.clean.shape[1:]))
        f.create_dataset("mask", data=sim.mask.astype(np.uint8))
        f.create_dataset("active", data=sim.active.astype(np.uint8))
        f.create_dataset("task", data=sim.task)
        f.attrs["sigma"] = sim.sigma
        f.attrs["config"] = json.dumps(sim.cfg.to_dict())
        f.attrs["axes"] = "TIJK (clean); IJK (mask, active); T (task)"
    out.complete()
    return path, truth


def load_fmri_truth(path: str | os.PathLike) -> FmriSimulation:
    """The ground truth written by `save_fmri` (`noisy` is None: read the run itself). UserError when it is not one."""
    import json

    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            cfgd = json.loads(f.attrs["config"])
            cfgd["shape"] = tuple(cfgd["shape"])
            cfg = FmriConfig(**cfgd)
            sim = FmriSimulation(None, np.asarray(f["clean"], np.float32), np.asarray(f["mask"], bool),  # type: ignore[arg-type]
                                 np.asarray(f["active"], bool), np.asarray(f["task"], np.float64),
                                 float(f.attrs["sigma"]), cfg)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: not an fMRI ground truth written by `livedenoise simulate` ({exc})") from None
    object.__setattr__(cfg, "_sigma", sim.sigma)
    return sim

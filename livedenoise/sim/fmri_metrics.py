"""Metrics of a denoised fMRI run against the simulator's ground truth (`livedenoise.sim.fmri`).

- **Voxel temporal SNR** (`tsnr`): per voxel, the mean over time divided by the
  standard deviation over time of the linearly detrended series (the usual fMRI
  definition: Triantafyllou et al. 2005; detrending removes the scanner drift
  that is not noise). Summarised as the median over the brain mask.
- **Time-series correlation with the truth** (`truth_correlation`): per voxel
  inside the mask, Pearson's r between the (detrended) estimate and the
  (detrended) clean series; summarised as the median.
- **Extent of the task activation map** (`activation_map`): a GLM per voxel
  (task regressor, intercept, linear drift; ordinary least squares), its t
  statistic for the task, thresholded at `t > T` (default 5.0, about a
  Bonferroni-corrected p < 0.05 for 30 000 voxels). The map's widening is how
  far its voxels lie outside the true active region: for every supra-threshold
  voxel the Euclidean distance (voxels) to the nearest truly active voxel;
  `max_distance` over the map's voxels (0 when every voxel is truly active),
  and `outside_1` the count of voxels more than 1 voxel away. Smearing grows
  the clusters that hold the true activation, so the widening is measured on
  them: `cluster_max_distance` and `cluster_outside_1` are the same over the
  map's connected clusters (26-connectivity) that touch the true region only
  (separate clusters far away are resting fluctuations that happen to correlate
  with the task, or false positives; not a spread of the activation). A
  denoiser that smears activation across voxels widens those clusters; one that
  only removes noise does not. Also `sensitivity`
  (fraction of truly active voxels detected) and `detected` (voxels in the map).

Inputs are (T, I, J, K) arrays; `mask` and `active` (I, J, K) bool.
"""

from __future__ import annotations

import numpy as np


def _detrend(x: np.ndarray) -> np.ndarray:
    """(T, N) minus its least-squares line over time (float64)."""
    x = np.asarray(x, np.float64)
    t = np.arange(x.shape[0], dtype=np.float64)
    t -= t.mean()
    slope = (t[:, None] * (x - x.mean(0))).sum(0) / (t * t).sum()
    return x - x.mean(0) - t[:, None] * slope


def tsnr(run: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(voxels in mask,) temporal SNR: mean over time / std over time of the detrended series."""
    v = np.asarray(run, np.float64)[:, mask]
    sd = _detrend(v).std(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, v.mean(0) / sd, np.inf)


def truth_correlation(run: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(voxels in mask,) Pearson r between each voxel's detrended series and the clean one's."""
    a = _detrend(np.asarray(run)[:, mask])
    b = _detrend(np.asarray(clean)[:, mask])
    num = (a * b).sum(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, 0.0)


def glm_t(run: np.ndarray, task: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(I, J, K) t statistic of the task regressor (design: task, intercept, linear drift; OLS), 0 outside `mask`."""
    y = np.asarray(run, np.float64)[:, mask]
    n = y.shape[0]
    x = np.column_stack([task, np.ones(n), np.linspace(-1.0, 1.0, n)])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    dof = n - x.shape[1]
    s2 = (resid * resid).sum(0) / dof
    c = np.linalg.inv(x.T @ x)[0, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(s2 > 0, beta[0] / np.sqrt(s2 * c), 0.0)
    out = np.zeros(mask.shape)
    out[mask] = t
    return out


def activation_map(run: np.ndarray, task: np.ndarray, mask: np.ndarray, active: np.ndarray,
                   threshold: float = 5.0) -> dict:
    """The thresholded task map and its extent against the true active region (module docstring).

    Returns {"cluster_max_distance", "cluster_outside_1", "threshold", "detected", "true_active",
    "sensitivity", "max_distance", "outside_1", "mean_t_active"}; distances in voxels.
    """
    from scipy.ndimage import distance_transform_edt

    from scipy.ndimage import label

    t = glm_t(run, task, mask)
    hit = (t > threshold) & mask
    dist = distance_transform_edt(~active) if active.any() else np.full(active.shape, np.inf)
    d = dist[hit]
    labels, _ = label(hit, structure=np.ones((3, 3, 3), bool))
    touching = np.setdiff1d(np.unique(labels[hit & active]), [0])
    dc = dist[np.isin(labels, touching) & hit]
    return {
        "cluster_max_distance": float(dc.max()) if dc.size else 0.0,
        "cluster_outside_1": int((dc > 1.0).sum()),
        "threshold": float(threshold),
        "detected": int(hit.sum()),
        "true_active": int(active.sum()),
        "sensitivity": float((hit & active).sum() / max(1, active.sum())),
        "max_distance": float(d.max()) if d.size else 0.0,
        "outside_1": int((d > 1.0).sum()),
        "mean_t_active": float(t[active].mean()) if active.any() else 0.0,
    }


def score(run: np.ndarray, truth, threshold: float = 5.0) -> dict:
    """All metrics of `run` (T, I, J, K) against an `FmriSimulation` truth: median tSNR, median correlation,
    the activation map's extent (`activation_map`)."""
    mask, active = truth.mask, truth.active
    return {
        "tsnr_median": float(np.median(tsnr(run, mask))),
        "corr_median": float(np.median(truth_correlation(run, truth.clean, mask))),
        "activation": activation_map(run, truth.task, mask, active, threshold),
    }

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
  map's voxels in the connected clusters (26-connectivity) that touch the true region only
  (separate clusters far away are resting fluctuations that happen to correlate
  with the task, or false positives; not a spread of the activation). A
  denoiser that smears activation across voxels widens those clusters; one that
  only removes noise does not. `cluster_max_steps` is the same widening in
  voxel steps (chessboard distance: a diagonal neighbour is 1 step, 1.41
  Euclidean). Also `sensitivity`
  (fraction of truly active voxels detected) and `detected` (voxels in the map).

- **Spread of the task response** (`response_profile`): the t map above is
  what a user thresholds, but its extent barely moves under smearing in runs
  whose residual is dominated by resting fluctuations (a blur lowers t inside
  as much as it raises it outside). So the task response itself is also
  measured as a radial profile around the true active region: the GLM task
  amplitude in % signal change (beta / intercept) averaged over the active
  voxels (d = 0) and over shells d = 1, 2, 3 voxels outside them (Euclidean
  distance rounded), relative to the clean run's amplitude in the active
  voxels. `spread[d]` is the run's shell mean minus the clean run's (what moved
  out of the region: ~0 for noise, > 0 for smearing); `fwhm_widening` compares
  where each profile first falls below half its own inside value (the
  full-width-at-half-maximum edge, the usual measure of an fMRI map's spatial
  extent): the run's edge minus the clean run's, in voxels.

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

    Returns {"cluster_max_steps" (chessboard distance: voxel steps, a diagonal neighbour is 1), "cluster_max_distance",
    "cluster_outside_1", "threshold", "detected", "true_active",
    "sensitivity", "max_distance", "outside_1", "mean_t_active"}; distances in voxels.
    """
    from scipy.ndimage import distance_transform_cdt, distance_transform_edt, label

    t = glm_t(run, task, mask)
    hit = (t > threshold) & mask
    dist = distance_transform_edt(~active) if active.any() else np.full(active.shape, np.inf)
    d = dist[hit]
    labels, _ = label(hit, structure=np.ones((3, 3, 3), bool))
    touching = np.setdiff1d(np.unique(labels[hit & active]), [0])
    in_clusters = np.isin(labels, touching) & hit
    dc = dist[in_clusters]
    steps = distance_transform_cdt(~active, metric="chessboard") if active.any() else np.zeros(active.shape, int)
    sc = steps[in_clusters]
    return {
        "cluster_max_steps": int(sc.max()) if sc.size else 0,
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


def task_amplitude(run: np.ndarray, task: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(I, J, K) GLM task amplitude in % of the voxel's intercept (design as `glm_t`), 0 outside `mask`."""
    y = np.asarray(run, np.float64)[:, mask]
    n = y.shape[0]
    x = np.column_stack([task, np.ones(n), np.linspace(-1.0, 1.0, n)])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    out = np.zeros(mask.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[mask] = np.where(np.abs(beta[1]) > 0, 100.0 * beta[0] / beta[1], 0.0)
    return out


def response_profile(run: np.ndarray, truth, max_d: int = 3) -> dict:
    """The task response around the true active region, against the clean run's (module docstring).

    Returns {"inside": run's mean amplitude in the active voxels / clean's, "profile": [d = 0..max_d] run's
    shell means / clean's inside amplitude, "clean_profile": the same for the clean run, "spread": [d = 1..max_d]
    run minus clean, "fwhm_widening": voxels}.
    """
    from scipy.ndimage import distance_transform_edt

    mask, active = truth.mask, truth.active
    dist = distance_transform_edt(~active)
    shells = [active] + [(dist > d - 0.5) & (dist <= d + 0.5) & mask for d in range(1, max_d + 1)]
    b_run = task_amplitude(run, truth.task, mask)
    b_clean = task_amplitude(truth.clean, truth.task, mask)
    amp = float(b_clean[active].mean())
    prof = [float(b_run[sh].mean() / amp) if sh.any() else 0.0 for sh in shells]
    cprof = [float(b_clean[sh].mean() / amp) if sh.any() else 0.0 for sh in shells]

    def edge(p: list[float]) -> int:
        return next((d for d in range(1, len(p)) if p[d] < 0.5 * p[0]), len(p))

    return {"inside": prof[0] / cprof[0], "profile": prof, "clean_profile": cprof,
            "spread": [prof[d] - cprof[d] for d in range(1, len(prof))],
            "fwhm_widening": edge(prof) - edge(cprof)}


def score(run: np.ndarray, truth, threshold: float = 5.0) -> dict:
    """All metrics of `run` (T, I, J, K) against an `FmriSimulation` truth: median tSNR, median correlation,
    the activation map's extent (`activation_map`) and the spread of the task response (`response_profile`)."""
    mask, active = truth.mask, truth.active
    return {
        "tsnr_median": float(np.median(tsnr(run, mask))),
        "corr_median": float(np.median(truth_correlation(run, truth.clean, mask))),
        "activation": activation_map(run, truth.task, mask, active, threshold),
        "response": response_profile(run, truth),
    }

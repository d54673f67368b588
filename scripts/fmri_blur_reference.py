#!/usr/bin/env python
"""For scale in docs/benchmarks.md ("fMRI"): the response-spread metrics of the raw run blurred by a Gaussian.

    .venv/bin/python scripts/fmri_blur_reference.py bench-fmri/sub-01_task-motor_run-1_bold.nii.gz 0.5 0.7 1.0
"""

import sys

import numpy as np
from scipy.ndimage import gaussian_filter

from livedenoise.io.nifti import open_nifti
from livedenoise.sim import fmri_metrics as M
from livedenoise.sim.fmri import load_fmri_truth, truth_path

run = sys.argv[1]
truth = load_fmri_truth(truth_path(run))
with open_nifti(run) as r:
    data = r.read(0, len(r))
for s in map(float, sys.argv[2:]):
    sc = M.score(gaussian_filter(data, sigma=(0, s, s, s)), truth)
    a, p = sc["activation"], sc["response"]
    print(f"| raw blurred, sigma {s:g} voxel | {sc['tsnr_median']:.1f} | {sc['corr_median']:.3f} | {a['sensitivity']:.2f} | "
          f"{a['cluster_max_steps']} ({a['cluster_max_distance']:.2f}) | {p['inside']:.2f} | "
          f"{', '.join(f'{x:+.3f}' for x in p['spread'])} | {p['fwhm_widening']} |")

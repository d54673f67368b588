"""How much noise the innovation step passes on a real movie's own noise structure (docs/benchmarks.md, "Real data").

    .venv/bin/python scripts/bench_innovation_noise.py ../shared/realdata/optinist_mouse2p/sample_mouse2p_image.tiff

Noise-only frames with the movie's spatial noise structure (`models.innovation.noise_passed`: its second
temporal differences, scaled to the noise variance, with a prediction of 0, so every bit of output is noise
the step let through). Prints the fraction of the noise variance passed for several settings, with the
centre tap only left out (exclude 0) and with the measured block.
"""

import sys

import numpy as np

from livedenoise.io.readers import open_movie
from livedenoise.models.innovation import InnovationConfig, noise_passed, noise_radius


def main(path: str, frames: int = 400) -> None:
    with open_movie(path) as mv:
        m = np.asarray(mv.read(0, min(frames, len(mv))), np.float32)
    r = noise_radius(m)
    print(f"{path}: {len(m)} frames; noise correlated within {r} pixel(s) (noise_radius)")
    for sigma, k in [(1.5, 1.0), (1.5, 2.0), (3.0, 4.0)]:
        for ex in sorted({0, r}):
            passed = noise_passed(m, InnovationConfig(sigma, k, ex), frames=len(m))
            print(f"  sigma_xy {sigma:g} k {k:g} exclude {ex}: passes {100 * passed:.2f}% of the noise variance")


if __name__ == "__main__":
    main(sys.argv[1])

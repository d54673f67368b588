"""ScanImage integration: the MATLAB user functions that publish frames, and TIFF replay.

This folder ships the MATLAB/Octave side (``livedenoise_*.m``): ScanImage user
functions for the ``acqModeStart``, ``frameAcquired``, ``acqDone`` and
``acqAbort`` events that publish every saved channel and plane over a ZeroMQ
PUB socket (JeroMQ) in the imaging wire protocol (`livedenoise.stream.protocols.frames`).
Add `matlab_path()` to the MATLAB path (`livedenoise scanimage-path` prints it);
set-up steps are in docs/scanimage.md.

`livedenoise.stream.sources.scanimage_tiff.scanimage_acquisition(path)` replays a ScanImage TIFF as the same
stream (start metadata + frames de-interleaved by channel and plane).
"""

from __future__ import annotations

from pathlib import Path

USER_FUNCTIONS = {
    "acqModeStart": "livedenoise_acqModeStart",
    "frameAcquired": "livedenoise_frameAcquired",
    "acqDone": "livedenoise_acqDone",
    "acqAbort": "livedenoise_acqAbort",
}
"""ScanImage event name -> user function to register for it."""


def matlab_path() -> Path:
    """The folder to add to the MATLAB (or Octave) path: it holds the user functions."""
    return Path(__file__).resolve().parent

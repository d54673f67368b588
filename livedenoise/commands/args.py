"""Argument groups shared by several verbs: how a movie or a recording is picked from a file.

The readers (livedenoise.io) take plain keyword arguments; this module turns the
command line into them, so every verb offers the same flags with the same help.
"""

from __future__ import annotations

from livedenoise.io.readers_ephys import open_recording


def add_movie_arguments(parser) -> None:
    """--channel / --plane (ScanImage TIFF) and --dataset (HDF5): what `open_movie` needs to pick a movie."""
    parser.add_argument("--channel", type=int, default=None, help="ScanImage TIFF channel")
    parser.add_argument("--plane", type=int, default=None, help="ScanImage TIFF plane")
    parser.add_argument("--dataset", default=None, help="HDF5 dataset holding the movie")


def add_reading_arguments(parser) -> None:
    """--stream / --channels / --sample-rate / --bit-volts for ephys inputs (shared by train and denoise)."""
    g = parser.add_argument_group("extracellular recordings (Open Ephys Binary, SpikeGLX .bin, flat .dat)")
    g.add_argument("--stream", default=None, help="Open Ephys stream to read (name or index; default the first)")
    g.add_argument("--channels", type=int, default=None, help="channel count of a flat int16 .dat file")
    g.add_argument("--sample-rate", type=float, default=None, help="sample rate of a flat .dat file (default 30000)")
    g.add_argument("--bit-volts", type=float, default=0.195, help="µV per bit of a flat .dat file")


def open_from_args(path, args):
    return open_recording(path, stream=getattr(args, "stream", None), channels=getattr(args, "channels", None),
                          sample_rate=getattr(args, "sample_rate", None), bit_volts=getattr(args, "bit_volts", 0.195))

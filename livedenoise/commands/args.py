"""Argument groups shared by several verbs: how a movie or a recording is picked from a file.

The readers (livedenoise.io) take plain keyword arguments; this module turns the
command line into them, so every verb offers the same flags with the same help.
"""

from __future__ import annotations

import argparse

from livedenoise.io.readers_ephys import open_recording


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every verb's --help: "(default: X)" added once, and only where it says something.

    Left out when the help text already names its default ("default 8, ...": the
    value depends on the architecture or the data), when the default is None
    (chosen later) or False (a switch), or when there is no default.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is False or default == argparse.SUPPRESS
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        return super()._get_help_string(action)


MOVIE_OPTIONS = ("channel", "plane", "dataset", "axes")
"""The `open_movie` keyword arguments that `add_movie_arguments` puts on the command line."""


def add_movie_arguments(parser) -> None:
    """--channel / --plane, --dataset (HDF5) and --axes: what `open_movie` needs to pick a movie."""
    parser.add_argument("--channel", type=int, default=None,
                        help="channel to read: a ScanImage channel number, or 1-based along a C axis")
    parser.add_argument("--plane", type=int, default=None,
                        help="plane to read: 1 = the first plane of a ScanImage volume, or 1-based along a Z axis")
    parser.add_argument("--dataset", default=None, help="HDF5 dataset holding the movie")
    parser.add_argument("--axes", default=None, metavar="LETTERS",
                        help="layout of the stored array, first axis first, in letters T (time) Z (plane) Y (line) "
                             "X (pixel) C (channel), e.g. YXT for a time-last (H, W, T) HDF5 or .npy, TZYXC; "
                             "default: the file's own axis labels, else (T, Y, X) where that is unambiguous")


def movie_options(args) -> dict:
    """`open_movie(path, **movie_options(args))`: the movie flags of `add_movie_arguments`."""
    return {k: getattr(args, k, None) for k in MOVIE_OPTIONS}


def open_movie_from_args(path, args):
    """`open_movie(path, channel=, plane=, dataset=, axes=)` from the parsed flags."""
    from livedenoise.io.readers import open_movie

    return open_movie(path, **movie_options(args))


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


def add_norm_arguments(parser, live: bool) -> None:
    """--norm / --renorm: whose statistics normalise the frames (models/norm.py), for `denoise` and `serve`."""
    g = parser.add_argument_group("normalisation")
    g.add_argument("--norm", choices=("data", "card"), default="data",
                   help="data: the frames' own mean/std, so a model serves other sessions, brighter or dimmer; "
                        "card: the model's (those of its training movies)")
    if live:
        g.add_argument("--renorm", type=int, default=30, metavar="N",
                       help="with --norm data: estimate mean/std on the first N frames of each acquisition "
                            "(outputs wait for them)")
    else:
        g.add_argument("--renorm", type=int, default=0, metavar="N",
                       help="with --norm data: estimate mean/std on the first N frames only, exactly as `serve "
                            "--renorm N` does (default 0: on up to 256 frames spread over the whole movie)")


def renorm_frames(args) -> int:
    """The live service's `renorm` for the --norm / --renorm flags (0: the card's statistics)."""
    if args.renorm < 0:
        from livedenoise.errors import UserError

        raise UserError(f"--renorm must be >= 0 frames (got {args.renorm})")
    return 0 if args.norm == "card" else int(args.renorm)

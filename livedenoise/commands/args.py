"""Argument groups shared by several verbs: how a movie or a recording is picked from a file.

The readers (livedenoise.io) take plain keyword arguments; this module turns the
command line into them, so every verb offers the same flags with the same help.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from livedenoise.errors import UserError
from livedenoise.io.readers_ephys import open_recording
from livedenoise.models.card import RATE_TOLERANCE, rate_mismatch


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


def checkpoint_out(path) -> Path:
    """The `--out` path of a checkpoint to write: a `.pt` file name in an existing folder; UserError otherwise."""
    out = Path(path)
    if out.suffix != ".pt":
        raise UserError(f"--out {out}: a checkpoint file must end in .pt")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name ending in .pt")
    if not out.parent.exists():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    return out


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
    """--stream / --recording / --channels / --sample-rate / --bit-volts for ephys inputs (train, denoise);
    --force-rate as well where the verb takes a --model."""
    g = parser.add_argument_group("extracellular recordings (Open Ephys Binary, SpikeGLX .bin, flat .dat)")
    g.add_argument("--stream", default=None, metavar="NAME|INDEX",
                   help="Open Ephys stream to read, by name, folder name or 0-based index; needed when a recording has "
                        "several streams that may hold neural data (without it: the only one whose channel metadata "
                        "is not that of ADC/NI-DAQ/TTL inputs)")
    g.add_argument("--recording", default=None, metavar="N|PATH",
                   help="Open Ephys recording to read when the folder holds several: N for recordingN, or a path "
                        "such as experiment2/recording1 or 'Record Node 102/experiment1/recording1'; the output keeps "
                        "its name and number")
    g.add_argument("--channels", type=int, default=None, help="channel count of a flat int16 .dat file (required)")
    g.add_argument("--sample-rate", type=float, default=None, metavar="HZ",
                   help="sample rate of a flat .dat file (required: the file does not say)")
    g.add_argument("--bit-volts", type=float, default=0.195, help="µV per bit of a flat .dat file")
    if "--model" in getattr(parser, "_option_string_actions", {}):
        g.add_argument("--force-rate", action="store_true",
                       help="run an ephys model on a recording whose sample rate differs by more than "
                            f"{100 * RATE_TOLERANCE:g}%% from the rate it was trained at (refused without it)")


def open_from_args(path, args):
    """`open_recording` with the flags of `add_reading_arguments` (refusals: UserError, one line)."""
    return open_recording(path, stream=getattr(args, "stream", None), channels=getattr(args, "channels", None),
                          sample_rate=getattr(args, "sample_rate", None), bit_volts=getattr(args, "bit_volts", 0.195),
                          recording=getattr(args, "recording", None))


def check_model_rate(card, rec, model, force: bool = False) -> list[str]:
    """Refuse an ephys model on a recording at another sample rate than the one it was trained at
    (`models.card.rate_mismatch`, the rule the live sidecar applies too).

    Raises UserError naming both rates and --force-rate, or with `force` returns a warning
    line. Returns the lines to print (a note when the card does not record its rate).
    """
    if not (card.training or {}).get("sample_rate"):
        return [f"note: {model} does not record the sample rate it was trained at; the recording is at "
                f"{rec.sample_rate:g} Hz"]
    why = rate_mismatch(card, rec.sample_rate)
    if why is None:
        return []
    what = f"{model}: {why} ({rec.path})"
    if not force:
        check = " (or check --sample-rate)" if rec.format == "dat" else ""
        raise UserError(f"{what}; train a model on data at {rec.sample_rate:g} Hz{check}, or add --force-rate to run "
                        "it anyway")
    return [f"warning: {what} (--force-rate)"]


def add_norm_arguments(parser, live: bool) -> None:
    """--norm / --renorm: whose statistics normalise the frames (models/norm.py), for `denoise` and `serve`."""
    g = parser.add_argument_group("normalisation")
    g.add_argument("--norm", choices=("data", "card"), default="data",
                   help="data: the frames' own mean/std, so a model serves other sessions, brighter or dimmer; "
                        "card: the model's (those of its training movies)")
    g.add_argument("--renorm-rate", type=float, default=RENORM_RATE, metavar="R",
                   help="with --renorm N: every N frames the statistics move this fraction of the way to those of "
                        "the last N frames (0: keep the first N frames')")
    if live:
        g.add_argument("--renorm", type=int, default=30, metavar="N",
                       help="with --norm data: estimate mean/std on the first N frames of each acquisition "
                            "(outputs wait for them)")
    else:
        g.add_argument("--renorm", type=int, default=0, metavar="N",
                       help="with --norm data: estimate mean/std on the first N frames only, exactly as `serve "
                            "--renorm N` does (default 0: on up to 256 frames spread over the whole movie)")


RENORM_RATE = 0.1
"""`--renorm-rate`: each N frames, the statistics move 10% towards those of the last N frames (time constant
about 10 N frames: slow drifts such as bleaching are followed, a calcium transient is not)."""


def renorm_frames(args) -> int:
    """The live service's `renorm` for the --norm / --renorm flags (0: the card's statistics)."""
    if args.renorm < 0:
        from livedenoise.errors import UserError

        raise UserError(f"--renorm must be >= 0 frames (got {args.renorm})")
    if not 0.0 <= args.renorm_rate <= 1.0:
        from livedenoise.errors import UserError

        raise UserError(f"--renorm-rate must be in 0..1 (got {args.renorm_rate})")
    return 0 if args.norm == "card" else int(args.renorm)

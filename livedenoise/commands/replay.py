"""`livedenoise replay`: publish a movie like a microscope (or, with `openephys`, a recording like Open Ephys)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

from livedenoise.errors import UserError
from livedenoise.stream.protocols.frames import DEFAULT_INPUT


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "replay",
        help="publish a movie file as a live microscope stream (or `replay openephys RECORDING`)",
        description=(
            "Bind a ZeroMQ PUB socket and publish MOVIE (.tif, ScanImage .tif, .h5, .npy) exactly as the "
            "ScanImage publisher does: a start message, frames paced in real time, a stop message. "
            "A 4D NIfTI fMRI run (.nii, .nii.gz) is published volume by volume at its TR, as a scanner's "
            "real-time export would (`serve` denoises it with an fmri model). "
            "`livedenoise replay openephys RECORDING` instead emulates the Open Ephys ZMQ Interface plugin."
        ),
    )
    p.add_argument("what", metavar="MOVIE", help="movie file to publish, or the word `openephys`")
    p.add_argument("path", nargs="?", metavar="RECORDING", help="with `openephys`: the Open Ephys recording folder")
    p.add_argument("--endpoint", default=None, help=f"endpoint to bind (imaging default {DEFAULT_INPUT})")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate (default 30; a ScanImage TIFF is paced by its recorded frame times, a NIfTI run "
                        "at 1 / TR volumes per second)")
    p.add_argument("--loop", action="store_true", help="repeat the movie until Ctrl-C (frame numbers keep counting)")
    p.add_argument("--channel", type=int, default=None,
                   help="channel number in the headers; for a ScanImage TIFF, publish only this channel")
    p.add_argument("--plane", type=int, default=None,
                   help="plane number in the headers; for a ScanImage TIFF, publish only this plane")
    p.add_argument("--dataset", default=None, help="HDF5 dataset holding the movie")
    p.add_argument("--frames", type=int, default=None, metavar="N", help="publish only the first N frames")
    p.add_argument("--wait", type=float, default=10.0, metavar="S",
                   help="wait up to S s for the subscribers before the first frame (0: do not wait)")
    p.add_argument("--subscribers", type=int, default=1, metavar="N",
                   help="subscribers to wait for, e.g. 2 for `serve` plus a `view` or `listen` on the same stream")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_openephys_arguments(p.add_argument_group("Open Ephys (`replay openephys RECORDING`)"))
    p.set_defaults(func=run)


def run(args) -> int:
    if args.what == "openephys":
        if not args.path:
            raise UserError("`replay openephys` needs the recording: livedenoise replay openephys RECORDING")
        from livedenoise.stream.openephys import replay as openephys_replay

        return int(openephys_replay.run(args) or 0)
    if args.path:
        raise UserError(f"unexpected argument {args.path!r}: replay takes one movie file (or `openephys RECORDING`)")
    if args.frames is not None and args.frames < 1:
        raise UserError(f"--frames must be >= 1, got {args.frames}")
    if args.wait < 0:
        raise UserError(f"--wait must be >= 0 s, got {args.wait}")
    if args.subscribers < 1:
        raise UserError(f"--subscribers must be >= 1, got {args.subscribers}")
    from livedenoise.stream.replay import replay_movie

    logger = logging.getLogger("livedenoise.stream")
    if not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("livedenoise replay: %(message)s"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    endpoint = args.endpoint or DEFAULT_INPUT
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    def announce(line: str) -> None:  # once the movie is open and the endpoint bound
        if not args.json:
            print(f"livedenoise replay: {line}" + (" (looping; Ctrl-C stops)" if args.loop else ""), flush=True)

    try:
        summary = replay_movie(args.what, endpoint, fps=args.fps, loop=args.loop, stop_event=stop,
                               channel=args.channel, plane=args.plane, dataset=args.dataset, frames=args.frames,
                               wait_s=args.wait, subscribers=args.subscribers, announce=announce)
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"sent {summary['frames']} frames in {summary['seconds']:.1f} s ({summary['fps'] or 0:.1f} frames/s), "
              f"{summary['late']} late", flush=True)
    return 0


def add_openephys_arguments(group) -> None:
    """Options of `replay openephys` (added to the shared replay parser)."""
    from livedenoise.stream.protocols.zmq_interface import DEFAULT_DATA_PORT

    group.add_argument("--port", type=int, default=DEFAULT_DATA_PORT, help="data port (PUB); heartbeats on port + 1")
    group.add_argument("--host", default="127.0.0.1", help="address to bind (use * for every interface, as the plugin)")
    group.add_argument("--block", type=int, default=1024, help="samples per block (the GUI's buffer size)")
    group.add_argument("--speed", type=float, default=1.0, help="pace at SPEED x the sample rate; 0 = as fast as possible")
    group.add_argument("--stream", default=None, help="Open Ephys stream to publish (name or index; default the first)")
    group.add_argument("--stream-name", default=None, help="stream name in the messages (default the recording's)")
    group.add_argument("--channels", type=int, default=None, help="channel count of a flat .dat file")
    group.add_argument("--sample-rate", type=float, default=None, help="sample rate of a flat .dat file (default 30000)")
    group.add_argument("--seconds", type=float, default=None, help="publish only the first SECONDS of the recording")
    group.add_argument("--ttl-every", type=float, default=0.0, metavar="S", help="also send a TTL event every S seconds")

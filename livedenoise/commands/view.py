"""`livedenoise view`: the live viewer (imaging or ephys), or a screenshot of it."""

from __future__ import annotations


from livedenoise.errors import UserError
from livedenoise.gui.ephys_source import DEFAULT_DENOISED as EPHYS_DENOISED  # the sidecar's PUB (5560)
from livedenoise.gui.ephys_source import DEFAULT_RAW as EPHYS_RAW  # the ZMQ Interface plugin (5556)
from livedenoise.stream.protocols.frames import DEFAULT_INPUT, DEFAULT_OUTPUT


def register(sub) -> None:
    p = sub.add_parser(
        "view",
        help="live viewer: raw vs denoised imaging or ephys, ROI traces, service stats",
        description=(
            "Watch a live session: raw | denoised | residual | mean-subtracted images with ROI traces "
            f"(imaging; defaults {DEFAULT_INPUT} and {DEFAULT_OUTPUT}), or stacked traces and a heat map "
            f"of Open Ephys ZMQ Interface streams (--ephys; defaults {EPHYS_RAW} and {EPHYS_DENOISED}). "
            "Headless: QT_QPA_PLATFORM=offscreen, or --screenshot OUT.png --frames N."
        ),
    )
    p.add_argument("--raw", metavar="ENDPOINT", default=None,
                   help=f"raw stream (imaging: {DEFAULT_INPUT}; ephys: {EPHYS_RAW}); 'none' to leave it out")
    p.add_argument("--denoised", metavar="ENDPOINT", default=None,
                   help=f"denoised stream (imaging: {DEFAULT_OUTPUT}; ephys: {EPHYS_DENOISED}); 'none' to leave it out")
    p.add_argument("--file", metavar="RAW",
                   help="play a raw movie instead of a stream: any movie `denoise` reads (TIFF, BigTIFF, "
                        "ScanImage TIFF, HDF5, .npy; a `serve --record` file finds its denoised_* partner)")
    p.add_argument("--denoised-file", metavar="DEN", help="play a denoised movie beside --file")
    p.add_argument("--fps", type=float, default=30.0, help="file playback rate (0: as fast as possible)")
    p.add_argument("--loop", action="store_true", help="loop file playback")
    p.add_argument("--ephys", action="store_true", help="ephys view (Open Ephys ZMQ Interface format)")
    p.add_argument("--screenshot", metavar="OUT.png", help="render --frames frames, save the window, exit")
    p.add_argument("--frames", type=int, default=30,
                   help="frames (imaging) or messages (ephys) to receive before the screenshot")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds without any data on an endpoint before saying so (and failing a screenshot)")
    p.add_argument("--roi", action="append", default=[], metavar="X,Y,W,H",
                   help="add a rectangle ROI (pixels; repeatable)")
    p.add_argument("--levels", metavar="LO,HI", help="fixed contrast for raw and denoised (locks it)")
    p.add_argument("--channel", type=int, help="imaging channel to show first (with a ScanImage TIFF --file: the channel to play)")
    p.add_argument("--plane", type=int, help="imaging plane to show first (with a ScanImage TIFF --file: the plane to play)")
    p.add_argument("--dataset", default=None, help="HDF5 dataset holding the --file movie")
    p.add_argument("--window", type=float, default=None,
                   help="trace window in s (imaging ROI traces: 10; ephys: 0.5)")
    p.add_argument("--first-channel", type=int, default=0, help="ephys: first channel shown")
    p.add_argument("--n-channels", type=int, default=32, help="ephys: number of stacked traces")
    p.add_argument("--gain", type=float, default=100.0, help="ephys: µV between neighbouring traces")
    p.add_argument("--channel-positions", metavar="FILE",
                   help="ephys: (channels, 2) x, y in µm (.npy or CSV) for depth order; default Neuropixels 1.0")
    p.add_argument("--size", default="1700x950", metavar="WxH", help="window size in pixels")
    p.set_defaults(func=run)


def _endpoint(value: str | None, default: str) -> str | None:
    if value is None:
        return default
    if value.strip().lower() in ("", "none", "off"):
        return None
    return value


def options(args):
    from livedenoise.gui.app import ViewOptions

    try:
        rois = tuple(tuple(int(v) for v in r.split(",")) for r in args.roi)
        if any(len(r) != 4 or r[2] < 1 or r[3] < 1 for r in rois):
            raise ValueError
    except ValueError:
        raise UserError(f"--roi takes X,Y,W,H in pixels with W, H >= 1, got {args.roi}") from None
    levels = None
    if args.levels:
        try:
            lo, hi = (float(v) for v in args.levels.split(","))
        except ValueError:
            raise UserError(f"--levels takes LO,HI, got {args.levels!r}") from None
        if not hi > lo:
            raise UserError(f"--levels needs HI > LO, got {args.levels!r}")
        levels = (lo, hi)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise UserError(f"--size takes WxH, got {args.size!r}") from None
    if args.frames < 1:
        raise UserError("--frames must be >= 1")
    files = bool(args.file or args.denoised_file)
    raw_default = EPHYS_RAW if args.ephys else DEFAULT_INPUT
    den_default = EPHYS_DENOISED if args.ephys else DEFAULT_OUTPUT
    return ViewOptions(
        raw=None if files else _endpoint(args.raw, raw_default),
        denoised=None if files else _endpoint(args.denoised, den_default),
        file=args.file, denoised_file=args.denoised_file, fps=args.fps, loop=args.loop, ephys=args.ephys,
        screenshot=args.screenshot, frames=args.frames, timeout=args.timeout, rois=rois, levels=levels,
        channel=args.channel, plane=args.plane, dataset=args.dataset,
        window_s=args.window if args.window is not None else (0.5 if args.ephys else 10.0),
        first_channel=args.first_channel, n_channels=args.n_channels, gain=args.gain,
        positions=args.channel_positions, size=(w, h),
    )


def run(args) -> int:
    from livedenoise.gui.app import run as run_viewer

    return run_viewer(options(args))

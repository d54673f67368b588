"""`livedenoise serve`: denoise frames live from a ZeroMQ stream (docs/serve.md)."""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import subprocess
import sys
import threading

from livedenoise.commands.args import renorm_frames
from livedenoise.commands.denoise import add_innovation_arguments
from livedenoise.stream.protocols.frames import DEFAULT_INPUT, DEFAULT_OUTPUT


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="denoise a live frame stream (ScanImage or `livedenoise replay`) and publish the result",
        description=(
            "Subscribe to an acquisition's ZeroMQ PUB socket, denoise every frame as soon as the model's "
            "window is complete (lag 0 for causal models), publish denoised frames and once-a-second "
            "stats on --output, and optionally record raw and denoised frames. Ctrl-C or SIGTERM stops cleanly: it "
            "says how many frames are queued, denoises them for at most --drain-timeout s, and says how many it "
            "gave up; a second Ctrl-C gives them up at once."
        ),
    )
    p.add_argument("--model", required=True, help="model file: a .pt checkpoint, .onnx or TensorRT engine")
    p.add_argument("--backend", default="auto", help="auto, torch, onnxruntime or tensorrt")
    p.add_argument("--input", default=DEFAULT_INPUT, help="acquisition PUB endpoint to subscribe to")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="endpoint to bind for denoised frames and stats")
    p.add_argument("--record", metavar="DIR", help="write every raw frame received and every denoised frame here")
    p.add_argument("--record-format", choices=("h5", "tiff"), default="h5", help="file format for --record")
    p.add_argument("--max-batch", type=int, default=8, help="most windows run in one engine call when catching up")
    p.add_argument("--policy", choices=("all", "latest"), default="all",
                   help="all: denoise every frame in order; latest: under load skip to the newest frames")
    p.add_argument("--ring", type=int, default=256, help="frames kept per stream (bounds memory and backlog)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="S",
                   help="on Ctrl-C / SIGTERM, denoise what is queued for at most S seconds, then give the rest up "
                        "(counted; with --record their raw frames are kept). A second Ctrl-C gives up at once")
    p.add_argument("--stats-interval", type=float, default=1.0, metavar="S", help="seconds between stats")
    p.add_argument("--rcvhwm", type=int, default=100_000, help="ZeroMQ receive high-water mark (messages)")
    p.add_argument("--max-streams", type=int, default=256, metavar="N",
                   help="most (channel, plane) streams open at once; one more closes the least recently used")
    p.add_argument("--record-max-open", type=int, default=256, metavar="N",
                   help="most --record files open at once (idle ones are closed; a stream continues in a new part)")
    add_innovation_arguments(p)
    from livedenoise.commands.args import add_norm_arguments

    add_norm_arguments(p, live=True)
    p.add_argument("--view", action="store_true", help="also open the live viewer (`livedenoise view`)")
    p.add_argument("--json", action="store_true", help="print stats as JSON lines")
    p.add_argument("--quiet", action="store_true", help="print only the final stats")
    p.set_defaults(func=run)


def _setup_logging() -> None:
    logger = logging.getLogger("livedenoise.stream")
    if not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("livedenoise serve: %(message)s"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def start_viewer(raw: str, endpoint: str) -> subprocess.Popen | None:
    """`livedenoise view` in its own process, or None (with a line saying why)."""
    if importlib.util.find_spec("livedenoise.commands.view") is None:
        print("livedenoise serve: --view: the viewer (`livedenoise view`) is not in this build; running headless",
              file=sys.stderr)
        return None
    return subprocess.Popen([sys.executable, "-m", "livedenoise", "view", "--raw", raw, "--denoised", endpoint])


def run(args) -> int:
    from livedenoise.stream.service import ServeConfig, Service, ServiceFailed
    from livedenoise.stream.stats import stats_line

    _setup_logging()
    cfg = ServeConfig(
        model=args.model, backend=args.backend, input=args.input, output=args.output, record=args.record,
        record_format=args.record_format, ring=args.ring, max_batch=args.max_batch, policy=args.policy,
        renorm=renorm_frames(args), renorm_rate=args.renorm_rate, stats_interval=args.stats_interval, rcvhwm=args.rcvhwm, duration=args.duration,
        view=args.view, innovation=args.innovation, innovation_k=args.innovation_k,
        max_streams=args.max_streams, record_max_open=args.record_max_open, drain_timeout=args.drain_timeout,
    )

    idle = {"since": 0.0}

    def on_stats(s: dict) -> None:
        if args.quiet:
            return
        if not args.json and not s["fps_in"] and not s["fps_out"]:  # idle: a line every 10 s is enough
            if s["uptime_s"] - idle["since"] < 10:
                return
            idle["since"] = s["uptime_s"]
        print(json.dumps(s) if args.json else stats_line(s), flush=True)

    stop = threading.Event()
    service = Service(cfg, stop_event=stop, on_stats=on_stats)
    if not args.json:
        print(
            f"livedenoise serve: {service.engine.describe()}, lag {service.lag} frame(s); "
            f"listening on {cfg.input}, publishing on {cfg.output}"
            + (f", recording to {cfg.record}" if cfg.record else "") + "; Ctrl-C stops",
            flush=True,
        )
    viewer = start_viewer(cfg.input, cfg.output) if cfg.view else None
    previous = {}
    service.announce_give_up = True

    def on_signal(*_) -> None:  # the first stops and drains (the service says so); the next gives the queue up
        if stop.is_set():
            service.give_up_drain()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    failed = None
    try:
        final = service.run()
    except ServiceFailed as exc:  # a thread could not go on: the service stopped cleanly; say so, exit 1
        failed, final = exc, exc.final
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
        if viewer is not None and viewer.poll() is None:
            viewer.terminate()
    if args.json:
        print(json.dumps({**final, "final": True}), flush=True)
    else:
        print("final: " + stats_line(final)
              + (f" | gave up {final['drain_given_up']} queued frame(s) when stopping" if final.get("drain_given_up") else ""),
              flush=True)
        for path in final.get("recorded", []):
            print(f"recorded {path}")
    if failed is not None:
        raise failed  # cli.main prints `livedenoise serve: error: <line>` and exits 1
    return 0

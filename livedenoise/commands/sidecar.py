"""Owns the `livedenoise sidecar openephys --model M` command line (arguments -> `Sidecar`): denoise Open Ephys data live."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from livedenoise.errors import UserError


def _backends() -> tuple[str, ...]:
    try:
        from livedenoise.export.engines import BACKENDS
    except ImportError:
        return ("auto", "torch", "onnxruntime", "tensorrt")
    return tuple(BACKENDS)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sidecar",
        help="run beside acquisition software: `sidecar openephys --model M` denoises Open Ephys data live",
        description=(
            "Subscribe to the Open Ephys ZMQ Interface plugin, denoise the chosen stream with an ephys model "
            "(site-ephys before spike sorting, block-ephys or interp-ephys) and send it back into the GUI "
            "through an Ephys Socket server, "
            "on a ZMQ PUB in the plugin's own format, and optionally to disk as Open Ephys Binary recordings."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("target", choices=["openephys"], help="acquisition software to attach to")
    p.add_argument("--model", required=True, help="ephys model: .pt checkpoint, .onnx or TensorRT .engine")
    p.add_argument("--input", default="tcp://127.0.0.1:5556",
                   help="the ZMQ Interface plugin's data port (heartbeats go to port + 1)")
    p.add_argument("--stream", default=None, help="stream to denoise (default: the first one seen)")
    p.add_argument("--channels", type=int, default=None,
                   help="channel count of the stream: a channel_num beyond it is malformed, and blocks leave without "
                        "waiting for the next one (default: learned from complete blocks; see docs/openephys.md)")
    p.add_argument("--backend", default="auto", choices=_backends(), help="inference backend")
    p.add_argument("--batch", type=int, default=256,
                   help="samples per engine call for per-sample models (interp-ephys); raise it on a GPU")
    p.add_argument("--device", default=None, help="torch device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for onnxruntime")
    p.add_argument("--socket-port", type=int, default=9001,
                   help="Ephys Socket server port the GUI connects to (-1: off)")
    p.add_argument("--socket-host", default="127.0.0.1", help="address of the Ephys Socket server")
    p.add_argument("--socket-samples", type=int, default=None,
                   help="samples per Ephys Socket packet (default: the input block size)")
    p.add_argument("--zmq-output", default="tcp://127.0.0.1:5560",
                   help="PUB endpoint for denoised data in the ZMQ Interface format ('off' to disable)")
    p.add_argument("--zmq-stream-name", default=None, help="stream name on the ZMQ output (default: the input's)")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="write raw and denoised Open Ephys Binary recordings under DIR/raw and DIR/denoised")
    p.add_argument("--record-bit-volts", type=float, default=0.195, help="µV per bit of the recorded int16 data")
    p.add_argument("--record-settings", default=None, metavar="SETTINGS_XML",
                   help="the Open Ephys GUI's settings.xml of this acquisition: copied into both --record recordings "
                        "(Record Node folder), so that SpikeInterface and probeinterface read the probe geometry "
                        "from them as from the GUI's own recording")
    p.add_argument("--stats-every", type=float, default=5.0, help="seconds between stats lines (0: only at the end)")
    p.add_argument("--stats-file", default=None, help="append every stats snapshot as a JSON line to this file")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--stop-after-idle", type=float, default=None, metavar="S",
                   help="exit once data has arrived and then no message was received for S seconds (scripted runs); "
                        "everything received is processed and recorded first")
    p.add_argument("--idle-flush", type=float, default=0.5,
                   help="seconds without data after which the last `lag` samples are flushed (end of acquisition)")
    p.add_argument("--max-backlog", type=float, default=10.0, metavar="S",
                   help="when the engine falls more than S seconds of data behind, skip the oldest (counted as overflow)")
    p.add_argument("--max-queue-mb", type=float, default=1024.0, metavar="MB",
                   help="the most received data waiting for the engine thread; beyond it blocks are lost "
                        "(counted as lost_samples; only when the engine thread cannot even record)")
    p.add_argument("--force-rate", action="store_true",
                   help="denoise a stream whose sample rate differs by more than 1%% from the model's training rate "
                        "(without it such a stream stops the sidecar with exit status 2)")
    p.add_argument("--json", action="store_true", help="print the final stats as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no periodic stats lines")
    p.set_defaults(func=run)


def make_sidecar(args):
    """Arguments -> a `Sidecar` (sockets bound, engine opened); UserError for bad values or busy ports."""
    from livedenoise.stream.openephys.sidecar import Sidecar, SidecarConfig
    from livedenoise.stream.protocols.zmq_interface import MAX_CHANNELS

    if args.socket_port is not None and args.socket_port < 0:
        args.socket_port = None
    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")
    if args.socket_samples is not None and args.socket_samples < 1:
        raise UserError(f"--socket-samples must be >= 1, got {args.socket_samples}")
    if args.channels is not None and not 1 <= args.channels <= MAX_CHANNELS:
        raise UserError(f"--channels must be 1 .. {MAX_CHANNELS}, got {args.channels}")
    head, _, port = str(args.input).rpartition(":")
    if not head or not port.isdigit() or not 0 < int(port) < 65535:
        raise UserError(f"--input must be an endpoint like tcp://127.0.0.1:5556 (heartbeats go to port + 1), "
                        f"got {args.input!r}")
    logger = logging.getLogger("livedenoise.stream.openephys")
    if not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("livedenoise sidecar: %(message)s"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    stream_logger = logging.getLogger("livedenoise.stream")  # the thread supervisor's messages
    if not stream_logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("livedenoise sidecar: %(message)s"))
        stream_logger.addHandler(h)
        stream_logger.setLevel(logging.WARNING)
    if not args.max_queue_mb > 0:
        raise UserError(f"--max-queue-mb must be > 0 (got {args.max_queue_mb}); the default is 1024")
    if args.record_settings is not None:
        from pathlib import Path

        if not args.record:
            raise UserError("--record-settings goes with --record DIR (it is copied into the recordings)")
        if not Path(args.record_settings).is_file():
            raise UserError(f"--record-settings {args.record_settings}: no such file")
    cfg = SidecarConfig(
        model=args.model, input=args.input, stream=args.stream, channels=args.channels, backend=args.backend,
        device=args.device, threads=args.threads, batch=args.batch, socket_port=args.socket_port,
        socket_host=args.socket_host,
        socket_samples=args.socket_samples,
        zmq_output=None if str(args.zmq_output).lower() in ("off", "none", "") else args.zmq_output,
        zmq_stream_name=args.zmq_stream_name, record=args.record, record_bit_volts=args.record_bit_volts,
        record_settings=args.record_settings,
        stats_every=args.stats_every, stats_file=args.stats_file, duration=args.duration,
        stop_after_idle=args.stop_after_idle, idle_flush_s=args.idle_flush, max_backlog_s=args.max_backlog,
        max_queue_mb=args.max_queue_mb,
        quiet=args.quiet, force_rate=args.force_rate,
    )
    try:
        return Sidecar(cfg)
    except OSError as exc:
        raise UserError(f"cannot open the sidecar's sockets: {exc} (Ephys Socket port {cfg.socket_port}; is another "
                        "sidecar running on these ports? --socket-port picks another)") from None
    except Exception as exc:
        import zmq

        if isinstance(exc, zmq.ZMQError):
            raise UserError(f"cannot bind {cfg.zmq_output}: {exc} (use --zmq-output to pick another port)") from None
        raise


def serve(sc, args) -> int:
    """Run a made sidecar on this thread until Ctrl-C / --duration / --stop-after-idle / a fatal error.

    Returns 0, or 1 after a fatal error (one line on stderr: `livedenoise sidecar: fatal: ...`).
    A first Ctrl-C (or SIGTERM) stops and processes what was received; a second one stops at once.
    """
    cfg = sc.cfg
    print(f"livedenoise sidecar: {sc.engine.describe()}", file=sys.stderr)
    print(f"livedenoise sidecar: listening to {cfg.input}; Ephys Socket on "
          f"{'off' if sc.socket is None else f'{cfg.socket_host}:{sc.socket.port}'}; ZMQ out on {cfg.zmq_output or 'off'}"
          + (f"; recording to {cfg.record}" if cfg.record else "") + " (Ctrl-C stops)", file=sys.stderr, flush=True)

    def on_signal(*_):
        if sc.stop_event.is_set():
            sc.abort_event.set()
        else:
            print("livedenoise sidecar: stopping: processing and recording what was received "
                  "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
            sc.stop_event.set()

    prev = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stats = sc.run()
    finally:
        for s, h in prev.items():
            signal.signal(s, h)
    if args.json:
        print(json.dumps(stats), flush=True)
    if sc.refused:
        print(f"livedenoise sidecar: error: {sc.refused}", file=sys.stderr, flush=True)
        return 2
    if sc.fatal:
        print(f"livedenoise sidecar: fatal: {sc.fatal}", file=sys.stderr, flush=True)
        return 1
    return 0


def run(args) -> int:
    return serve(make_sidecar(args), args)

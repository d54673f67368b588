"""`livedenoise listen`: print what arrives on a stream, to check a set-up (docs/protocol.md)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

from livedenoise.errors import UserError
from livedenoise.stream.protocols.frames import DEFAULT_INPUT


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "listen",
        help="print the messages arriving on a livedenoise / ScanImage stream (set-up check)",
        description=(
            "Subscribe to ENDPOINT and print one line per message (frame, start, stop, stats), validating "
            "each against the protocol; a summary line at the end. Use it to confirm that ScanImage (default "
            f"{DEFAULT_INPUT}) or `livedenoise serve` (tcp://127.0.0.1:5571) is publishing."
        ),
    )
    p.add_argument("--endpoint", default=DEFAULT_INPUT, help="PUB endpoint to subscribe to")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="stop after N frames (start, stop and stats messages are shown but not counted)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="fail (exit 1) if nothing arrives within S seconds")
    p.add_argument("--summary", action="store_true", help="no line per message, only the summary")
    p.add_argument("--json", action="store_true", help="JSON lines (headers) instead of text")
    p.set_defaults(func=run)


def describe(msg) -> str:
    from livedenoise.stream.protocols.frames import ControlMessage

    if isinstance(msg, ControlMessage):
        meta = {k: v for k, v in msg.meta.items() if k not in ("v", "latency_hist")}
        return f"{msg.topic} {json.dumps(meta, default=str)}"
    h = msg.header
    line = (f"frame {h.frame} ch{h.channel} plane{h.plane} {'x'.join(map(str, h.shape))} {h.dtype} t={h.t:.3f}s "
            f"mean={float(msg.pixels.mean()):.4g}")
    if "latency_ms" in h.extra:
        line += f" latency={h.extra['latency_ms']:.1f}ms lag={h.extra.get('lag')}"
    if h.source:
        line += f" source={h.source}"
    return line


def listen(endpoint: str, count: int | None = None, duration: float | None = None, timeout: float | None = None,
           stop_event: threading.Event | None = None, on_message=None) -> dict:
    """Receive until `count` frames, `duration` seconds or `stop_event`; returns {messages, frames, malformed,
    by_topic, seconds, fps, ...}. Raises UserError when nothing arrives within `timeout` seconds."""
    import zmq

    from livedenoise.stream.sinks.publisher import subscriber
    from livedenoise.stream.protocols.frames import FrameMessage, ProtocolError, decode

    stop_event = stop_event or threading.Event()
    ctx = zmq.Context()
    sock = subscriber(ctx, endpoint, topics=(b"",), option="--endpoint")
    summary = {"endpoint": endpoint, "messages": 0, "frames": 0, "malformed": 0, "by_topic": {}, "streams": {}}
    t0 = time.monotonic()
    first = None
    try:
        while not stop_event.is_set():
            now = time.monotonic()
            if duration is not None and now - t0 >= duration:
                break
            if timeout is not None and first is None and now - t0 >= timeout:
                raise UserError(f"nothing arrived on {endpoint} within {timeout:g} s; is the publisher running "
                                "and is the endpoint right?")
            if not sock.poll(100):
                continue
            parts = sock.recv_multipart()
            first = first or time.monotonic()
            summary["messages"] += 1
            try:
                msg = decode(parts)
            except ProtocolError as exc:
                summary["malformed"] += 1
                if on_message is not None:
                    on_message(None, str(exc))
            else:
                topic = "frame" if isinstance(msg, FrameMessage) else msg.topic
                summary["by_topic"][topic] = summary["by_topic"].get(topic, 0) + 1
                if isinstance(msg, FrameMessage):
                    summary["frames"] += 1
                    key = f"ch{msg.header.channel}_plane{msg.header.plane}"
                    s = summary["streams"].setdefault(key, {"frames": 0, "first": msg.header.frame})
                    s["frames"] += 1
                    s["last"] = msg.header.frame
                if on_message is not None:
                    on_message(msg, None)
            if count is not None and summary["frames"] >= count:
                break
    finally:
        sock.close(linger=0)
        ctx.term()
    span = (time.monotonic() - first) if first else 0.0
    summary["seconds"] = round(time.monotonic() - t0, 3)
    summary["fps"] = round(summary["frames"] / span, 2) if span > 0 else None
    return summary


def run(args) -> int:
    from livedenoise.stream.protocols.frames import ControlMessage

    for name in ("count", "duration", "timeout"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise UserError(f"--{name} must be > 0, got {v}")

    def show(msg, error):
        if args.summary:
            return
        if args.json:
            if error:
                print(json.dumps({"malformed": error}), flush=True)
            elif isinstance(msg, ControlMessage):
                print(json.dumps({"topic": msg.topic, **msg.meta}, default=str), flush=True)
            else:
                h = msg.header
                print(json.dumps({"topic": "frame", "frame": h.frame, "t": h.t, "channel": h.channel,
                                  "plane": h.plane, "shape": list(h.shape), "dtype": h.dtype, "source": h.source,
                                  **h.extra}), flush=True)
        else:
            print(f"malformed: {error}" if error else describe(msg), flush=True)

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = listen(args.endpoint, args.count, args.duration, args.timeout, stop, show)
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    if args.json:
        print(json.dumps({"summary": summary}), flush=True)
    else:
        print(f"{summary['messages']} messages ({summary['frames']} frames, {summary['malformed']} malformed) "
              f"from {args.endpoint} in {summary['seconds']:.1f} s"
              + (f", {summary['fps']:.1f} frames/s" if summary["fps"] else ""), file=sys.stdout, flush=True)
    return 0

"""Owns `livedenoise replay openephys RECORDING`: being the ZMQ Interface plugin without the GUI.

Publishes a recording (Open Ephys Binary, SpikeGLX, .dat) exactly as the
plugin does while the GUI acquires: a PUB socket (an XPUB, so that `--wait` sees
the subscription arrive) on the data port with one
[b"DATA\\0", JSON, float32 µV] message per channel per block (message_num from 0,
the recording's sample numbers, sender timestamps in ms), and a REP socket on
data port + 1 answering client heartbeats with `heartbeat received`. Blocks are
paced at the sample rate (x --speed; 0 = as fast as possible).

A block never spans a gap or restart in the recording's sample numbers
(`stream/gaps.py`): it is cut there, so each block's `sample_num` is true for
all its samples, as the plugin's are. `--loop` continues the sample numbers
after the last one of the recording.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time


import numpy as np
import zmq

from livedenoise.errors import UserError
from livedenoise.stream import gaps
from livedenoise.stream.protocols.zmq_interface import DATA, DEFAULT_DATA_PORT, MAX_NUM_SAMPLES, DataEncoder, encode_ttl
from livedenoise.stream.replay import drain_subscriptions, wait_for_subscriber
from livedenoise.stream.sinks.zmq_interface_out import HeartbeatResponder

log = logging.getLogger("livedenoise.stream.openephys")


class OpenEphysReplay:
    """Publisher + heartbeat responder; `run()` blocks until done or `stop()`."""

    def __init__(self, rec, port: int = DEFAULT_DATA_PORT, host: str = "127.0.0.1", block: int = 1024, speed: float = 1.0,
                 stream_name: str | None = None, loop: bool = False, wait: float = 0.0, n_samples: int | None = None,
                 ttl_every: float = 0.0, ctx: zmq.Context | None = None):
        if not 1 <= block <= MAX_NUM_SAMPLES:
            raise UserError(f"--block must be 1 .. {MAX_NUM_SAMPLES} samples (the ZMQ Interface format's limit), "
                            f"got {block}")
        self.rec, self.block, self.speed, self.loop, self.wait = rec, int(block), float(speed), loop, float(wait)
        self.n_samples = rec.n_samples if n_samples is None else min(int(n_samples), rec.n_samples)
        self.ctx = ctx or zmq.Context.instance()
        self.stop_event = threading.Event()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription reaches `run`, even a repeated one
        self.pub.setsockopt(zmq.SNDHWM, 1_000_000)
        self.pub.setsockopt(zmq.LINGER, 1000)
        try:
            self.pub.bind(f"tcp://{host}:{port}")
        except zmq.ZMQError as exc:
            raise UserError(f"cannot bind tcp://{host}:{port} ({exc}); is the GUI or another replay using the port?") from None
        self.endpoint = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        hb_host = "127.0.0.1" if host in ("*", "0.0.0.0") else host
        try:
            self.rep = HeartbeatResponder(self.ctx, f"tcp://{host}:{port + 1}", self.stop_event)
        except zmq.ZMQError as exc:
            self.pub.close(linger=0)
            raise UserError(f"cannot bind tcp://{host}:{port + 1} for heartbeats ({exc})") from None
        self.rep.start()
        self.heartbeat_endpoint = f"tcp://{hb_host}:{port + 1}"
        self.stream_name = stream_name or rec.stream_name or "example_data"
        self.encoder = DataEncoder(self.stream_name, list(rec.channel_names), rec.sample_rate)
        self.ttl_every = float(ttl_every)
        self.sent_blocks = self.sent_messages = self.sent_samples = 0

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> dict:
        if self.wait > 0:  # a client's subscription to the data has reached us: nothing sent from now on is lost
            if not wait_for_subscriber(self.pub, self.wait, self.stop_event, topic=DATA) and not self.stop_event.is_set():
                log.warning("replay: no client subscribed to %s within %g s; publishing anyway (what nobody "
                            "receives is lost: start the sidecar first, or raise --wait)", self.endpoint, self.wait)
        fs = self.rec.sample_rate
        t0 = time.monotonic()
        sent_time = 0.0
        next_ttl = self.ttl_every
        ttl_state = False
        offset = 0
        sn = np.asarray(self.rec.sample_numbers[:self.n_samples], np.int64)
        pieces = [(a, min(b, a + self.block)) for s0, b in gaps.segments(sn) for a in range(s0, b, self.block)]
        try:
            while not self.stop_event.is_set():
                for a, b in pieces:
                    if self.stop_event.is_set():
                        break
                    x = self.rec.read(a, b).T  # (channels, samples) µV
                    sample_num = int(sn[a]) + offset
                    if self.speed > 0:
                        due = t0 + sent_time / self.speed
                        delay = due - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    for parts in self.encoder.encode_block(sample_num, x):
                        self.pub.send_multipart(parts, copy=False)
                    self.sent_messages += x.shape[0]
                    if self.ttl_every and sent_time >= next_ttl:
                        ttl_state = not ttl_state
                        self.pub.send_multipart(encode_ttl(self.encoder.message_num, self.stream_name, sample_num, 0, ttl_state))
                        self.encoder.message_num += 1
                        next_ttl += self.ttl_every
                    self.sent_blocks += 1
                    self.sent_samples += b - a
                    sent_time += (b - a) / fs
                drain_subscriptions(self.pub)  # an XPUB queues every (un)subscription: empty that queue each pass
                if not self.loop:
                    break
                if len(sn):
                    offset += int(sn.max()) + 1 - int(sn[0])
        finally:
            time.sleep(0.05)
        return {"blocks": self.sent_blocks, "messages": self.sent_messages, "samples": self.sent_samples,
                "seconds": round(time.monotonic() - t0, 3), "heartbeats": self.rep.count}

    def close(self) -> None:
        self.stop_event.set()
        self.rep.join(1.0)
        self.pub.close(linger=200)


def run(args) -> int:
    """Entry point for `livedenoise replay openephys RECORDING`."""
    import signal

    from livedenoise.io.readers_ephys import open_recording

    rec = open_recording(args.path, stream=getattr(args, "stream", None), channels=getattr(args, "channels", None),
                         sample_rate=getattr(args, "sample_rate", None))
    port = getattr(args, "port", DEFAULT_DATA_PORT)
    host = getattr(args, "host", "127.0.0.1")
    endpoint = getattr(args, "endpoint", None)
    if endpoint:  # tcp://host:port overrides --host/--port
        h, _, p = endpoint.replace("tcp://", "").rpartition(":")
        host, port = (h or host), int(p)
    seconds = getattr(args, "seconds", None)
    n = int(seconds * rec.sample_rate) if seconds else None
    wait = getattr(args, "wait", 0.0) or 0.0
    rp = OpenEphysReplay(rec, port, host, getattr(args, "block", 1024), getattr(args, "speed", 1.0),
                         getattr(args, "stream_name", None), bool(getattr(args, "loop", False)), wait, n,
                         getattr(args, "ttl_every", 0.0) or 0.0)
    prev = {s: signal.signal(s, lambda *_: rp.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    if not getattr(args, "json", False):
        print(f"livedenoise replay: emulating the Open Ephys ZMQ Interface on {rp.endpoint} (heartbeats on "
              f"{rp.heartbeat_endpoint}): {rec.describe()}, blocks of {rp.block} samples"
              + (" (looping; Ctrl-C stops)" if rp.loop else ""), file=sys.stderr, flush=True)
    try:
        summary = rp.run()
    finally:
        rp.close()
        for s, h in prev.items():
            signal.signal(s, h)
    if getattr(args, "json", False):
        print(json.dumps(summary))
    else:
        print(f"livedenoise replay: sent {summary['samples']} samples in {summary['blocks']} blocks "
              f"({summary['messages']} messages) in {summary['seconds']} s; {summary['heartbeats']} heartbeats answered",
              file=sys.stderr)
    return 0




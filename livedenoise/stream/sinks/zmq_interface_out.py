"""Owns denoised data out in the ZMQ Interface plugin's own format (PUB + heartbeat REP).

A PUB socket (default tcp://127.0.0.1:5560) sends one DATA message per channel
per output block, exactly as the plugin does (message_num from 0, stream and
channel names of the input, sample_num of each block), and a REP socket on
port + 1 answers client heartbeats with `heartbeat received`. A client written
for the plugin reads the denoised stream unchanged by pointing it at port 5560.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import zmq

from livedenoise.stream.protocols.zmq_interface import BAD_JSON_REPLY, HEARTBEAT_REPLY, DataEncoder

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5560"


class HeartbeatResponder(threading.Thread):
    """REP socket answering heartbeats like the plugin (and remembering who is alive)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, stop: threading.Event):
        super().__init__(name="zmq-heartbeat-rep", daemon=True)
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.stop_event = stop
        self.clients: dict[str, float] = {}
        self.count = 0
        self.first = threading.Event()

    def run(self) -> None:
        import time

        try:
            while not self.stop_event.is_set():
                if not self.sock.poll(100, zmq.POLLIN):
                    continue
                msg = self.sock.recv()
                try:
                    hb = json.loads(msg)
                    ok = isinstance(hb, dict)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    ok = False
                if ok:
                    self.clients[str(hb.get("uuid", ""))] = time.monotonic()
                    self.count += 1
                    self.first.set()
                self.sock.send(HEARTBEAT_REPLY if ok else BAD_JSON_REPLY)
        finally:
            self.sock.close(linger=0)


def port_plus_one(endpoint: str) -> str:
    head, _, port = endpoint.rpartition(":")
    return f"{head}:{int(port) + 1}"


class ZmqInterfaceOutput:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, ctx: zmq.Context | None = None, heartbeat: bool = True,
                 stream_name: str | None = None, sndhwm: int = 200_000):
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.endpoint = endpoint
        self._stop = threading.Event()
        self.rep = None
        if heartbeat:
            self.rep = HeartbeatResponder(self.ctx, port_plus_one(endpoint), self._stop)
            self.rep.start()
        self.stream_name = stream_name
        self.encoder: DataEncoder | None = None
        self.messages = 0

    def configure(self, stream: str, channel_names: list[str], sample_rate: float) -> None:
        name = self.stream_name or stream
        if self.encoder is None or self.encoder.names_js != [json.dumps(n) for n in channel_names] or self.encoder.rate != sample_rate:
            self.encoder = DataEncoder(name, channel_names, sample_rate)

    def restart(self) -> None:
        """A restarted acquisition restarts message_num, as the plugin would."""
        if self.encoder is not None:
            self.encoder.message_num = 0

    def write(self, sample_num: int, block: np.ndarray) -> None:
        """(samples, channels) float32 µV starting at `sample_num`."""
        assert self.encoder is not None, "configure() first"
        for parts in self.encoder.encode_block(sample_num, block.T):
            try:
                self.sock.send_multipart(parts, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                pass
            self.messages += 1

    def close(self) -> None:
        self._stop.set()
        if self.rep is not None:
            self.rep.join(1.0)
        self.sock.close(linger=0)

"""Owns denoised data out in the ZMQ Interface plugin's own format (PUB + heartbeat REP).

A PUB socket (default tcp://127.0.0.1:5560) sends one DATA message per channel
per output block, exactly as the plugin does (message_num from 0, stream and
channel names of the input, sample_num of each block), and a REP socket on
port + 1 answers client heartbeats with `heartbeat received`. A client written
for the plugin reads the denoised stream unchanged by pointing it at port 5560.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict

import numpy as np
import zmq

from livedenoise.stream.health import SupervisedThread, ThreadHealth
from livedenoise.stream.protocols.zmq_interface import (
    BAD_JSON_REPLY, HEARTBEAT_REPLY, MAX_HEARTBEAT_FRAME, DataEncoder, ProtocolError, decode_heartbeat, reason_key,
)

log = logging.getLogger("livedenoise.stream.openephys")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5560"
MAX_CLIENTS = 256
"""Heartbeat clients remembered (the oldest are forgotten first)."""


class HeartbeatResponder:
    """REP socket answering heartbeats like the plugin (and remembering who is alive).

    Every request is validated (`decode_heartbeat`): a valid heartbeat gets
    `heartbeat received`, anything else `JSON message could not be read` and
    is counted in `malformed` (with its reason in `reasons`); a REP socket
    answers every request, so a bad one never blocks the next. Runs on a
    supervised thread (stream/health.py; `health`); the socket is bound here,
    so a busy port raises zmq.ZMQError at construction.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, stop: threading.Event, on_fatal=None,
                 name: str = "zmq-heartbeat-rep"):
        self.ctx, self.endpoint = ctx, endpoint
        self.sock: zmq.Socket | None = self._socket()
        self.stop_event = stop
        self.clients: OrderedDict[str, float] = OrderedDict()
        """uuid -> time.monotonic() of its last heartbeat (at most MAX_CLIENTS)."""
        self.count = 0
        """Valid heartbeats answered."""
        self.malformed = 0
        self.reasons: dict[str, int] = {}
        self.first = threading.Event()
        self.health = ThreadHealth(name)
        self.thread = SupervisedThread(name, self._body, stop, cleanup=self._close, on_fatal=on_fatal,
                                       health=self.health)

    def _socket(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.REP)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_HEARTBEAT_FRAME)
            sock.bind(self.endpoint)
        except Exception:
            sock.close(linger=0)
            raise
        return sock

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self.thread.thread.ident is not None:
            self.thread.join(timeout)
        else:
            self._close()

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def counters(self) -> dict:
        return {"heartbeats_in": self.count, "heartbeat_malformed": self.malformed,
                "heartbeat_clients": len(self.clients)}

    def _body(self) -> None:
        if self.sock is None:  # restarted after an error: a fresh socket on the same endpoint
            self.sock = self._socket()
        sock = self.sock
        try:
            while not self.stop_event.is_set():
                if not sock.poll(100, zmq.POLLIN):
                    continue
                parts = sock.recv_multipart()
                try:
                    _app, uuid = decode_heartbeat(parts)
                    ok = True
                except ProtocolError as exc:
                    ok = False
                    self.malformed += 1
                    key = reason_key(str(exc))
                    if key in self.reasons or len(self.reasons) < 32:
                        self.reasons[key] = self.reasons.get(key, 0) + 1
                if ok:
                    self.clients[uuid] = time.monotonic()
                    self.clients.move_to_end(uuid)
                    while len(self.clients) > MAX_CLIENTS:
                        self.clients.popitem(last=False)
                    self.count += 1
                    self.first.set()
                sock.send(HEARTBEAT_REPLY if ok else BAD_JSON_REPLY)
        except BaseException:
            self._close()  # its REQ/REP state is unknown: the restart binds a fresh one
            raise


def port_plus_one(endpoint: str) -> str:
    head, _, port = endpoint.rpartition(":")
    return f"{head}:{int(port) + 1}"


class ZmqInterfaceOutput:
    """PUB of denoised data in the plugin's format, plus its heartbeat REP (a supervised thread: `rep.health`)."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, ctx: zmq.Context | None = None, heartbeat: bool = True,
                 stream_name: str | None = None, sndhwm: int = 200_000, on_fatal=None):
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.endpoint = endpoint
        self._stop = threading.Event()
        self.rep = None
        if heartbeat:
            try:
                self.rep = HeartbeatResponder(self.ctx, port_plus_one(endpoint), self._stop, on_fatal=on_fatal)
            except Exception:
                self.sock.close(linger=0)
                raise
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

    def stop_heartbeats(self) -> None:
        """Stop answering heartbeats now (the data PUB goes on until `close()`): after a fatal error a
        client must see this service gone, not alive and deaf."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self.rep is not None:
            self.rep.join(1.0)
        self.sock.close(linger=0)

"""Owns Open Ephys ingest: ZMQ Interface messages -> [channels x samples] blocks of one stream, and gap/restart items.

`BlockAssembler` is pure logic (no sockets, easy to test and to benchmark):
messages of the chosen stream are grouped by `sample_num`; a block is
emitted, in sample order, once every channel arrived, or as soon as
`max_pending` newer blocks are waiting (the missing channels are then zeros and
counted). Anomalies are counted, never fatal, and never stall the stream:

- duplicates (same channel and sample_num twice) are dropped;
- out-of-order messages are placed in their block while it is pending, and
  counted as `late` (and dropped) once the block has left;
- `message_num` gaps are counted (`gaps`: messages the plugin numbered but
  we never saw);
- sample numbers follow the one gap/restart policy (`stream/gaps.py`), and no
  sample is ever invented: a sample_num jump forward emits a `Gap` item before
  the block (`sample_gaps` jumps, `dropped_samples` samples skipped); a
  sample_num falling back (in a message numbered after everything seen so far,
  or by more than a few seconds), message_num going back to 0, a new channel or
  a new sample rate is a restarted acquisition: what is pending goes out, then
  a `Restart` item, and the assembler starts over (`restarts`);
- event messages (TTL, spikes) are counted (`events`) and ignored.

`OpenEphysReceiver` runs the SUB socket and the heartbeat REQ socket in threads
and puts the assembler's output (Block, Gap, Restart, "idle") on a queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field

import numpy as np
import zmq

from livedenoise.stream.protocols.zmq_interface import (
    DataMessage,
    EventMessage,
    ProtocolError,
    decode,
    heartbeat,
)

log = logging.getLogger("livedenoise.stream.openephys")

COUNTERS = (
    "messages", "data_messages", "malformed", "duplicates", "late", "gaps", "missing_channels",
    "incomplete_blocks", "restarts", "events", "other_stream", "dropped_samples", "sample_gaps", "blocks_in",
    "samples_in", "partial_first",
)


@dataclass
class Block:
    sample_num: int
    data: np.ndarray
    """(channels, samples) float32 µV."""
    arrival: float
    """time.monotonic() when the block was complete (or forced out)."""
    stream: str = ""
    sample_rate: float = 0.0
    channel_names: list[str] = field(default_factory=list)
    missing: int = 0

    @property
    def sample_numbers(self) -> np.ndarray:
        return np.arange(self.sample_num, self.sample_num + self.data.shape[1], dtype=np.int64)


@dataclass
class Gap:
    """Sample numbers expected..got-1 never arrived: the segment ends; the next block starts a new one at `got`."""

    expected: int
    got: int

    @property
    def samples(self) -> int:
        return self.got - self.expected


@dataclass
class Restart:
    """The acquisition restarted (counter fell back, message_num reset, new channel or rate): a new segment."""

    reason: str


class BlockAssembler:
    def __init__(self, stream: str | None = None, n_channels: int | None = None, max_pending: int = 3):
        self.want_stream = stream or None
        self.fixed_channels = n_channels
        self.max_pending = max_pending
        for k in COUNTERS:
            setattr(self, k, 0)
        self._reset()

    def _reset(self) -> None:
        self.stream = self.want_stream
        self.n_channels = self.fixed_channels
        self.sample_rate = 0.0
        self.names: dict[int, str] = {}
        self.pending: dict[int, dict[int, np.ndarray]] = {}
        self.next_sample: int | None = None
        self.last_msg: int | None = None
        self.first_sample_num: int | None = None

    def counters(self) -> dict:
        return {k: int(getattr(self, k)) for k in COUNTERS}

    # ------------------------------------------------------------------ input

    def add(self, msg) -> list:
        """Feed one decoded message; returns the Block / Gap / Restart items now ready, in stream order."""
        self.messages += 1
        out: list = []
        if isinstance(msg, EventMessage):
            self.events += 1
            self._track_message_num(msg.message_num, None, out)
            return out
        assert isinstance(msg, DataMessage)
        if self.stream is None:
            self.stream = msg.stream
        if msg.stream != self.stream:
            self.other_stream += 1
            return out
        self.data_messages += 1
        newest = self.last_msg is None or msg.message_num > self.last_msg
        self._track_message_num(msg.message_num, msg, out)
        if self.sample_rate and msg.sample_rate != self.sample_rate and self.next_sample is not None:
            out += self._restart("sample rate changed")
        self.sample_rate = msg.sample_rate
        if self.n_channels is not None and msg.channel_num >= self.n_channels:
            if self.fixed_channels is not None:
                self.malformed += 1
                return out
            out += self._restart(f"channel {msg.channel_num} appeared (had {self.n_channels})")
        s = msg.sample_num
        if self.next_sample is not None and s < self.next_sample:
            # before what was emitted: a duplicate or late copy of an old message (numbered before the
            # newest one seen), or the counter fell back (a message numbered after it: a restart)
            if newest or self.next_sample - s > self._restart_margin():
                out += self._restart(f"sample_num went back from {self.next_sample} to {s}")
            else:
                self.late += 1
                return out
        if newest and self.pending and s not in self.pending and s < max(self.pending):
            # a newer message starts a block before the blocks still waiting: the counter fell back
            # before anything was emitted (e.g. a stale counter at the start); same rule as above
            out += self._restart(f"sample_num went back from {max(self.pending)} to {s}")
        blk = self.pending.get(s)
        if blk is None:
            blk = self.pending[s] = {}
            if self.n_channels is None and len(self.pending) > 1:
                self._learn_channels()
        if msg.channel_num in blk:
            self.duplicates += 1
            return out
        if blk and len(next(iter(blk.values()))) != msg.num_samples:
            self.malformed += 1
            return out
        blk[msg.channel_num] = msg.samples
        self.names.setdefault(msg.channel_num, msg.channel_name)
        out += self._drain(now=time.monotonic())
        return out

    def flush(self) -> list:
        """Emit everything pending (end of stream / idle), missing channels as zeros."""
        if self.n_channels is None and self.pending:
            self._learn_channels()
        return self._drain(time.monotonic(), force_all=True)

    # ------------------------------------------------------------------ internals

    def _restart_margin(self) -> int:
        return max(4 * 30000, 8 * self._block_len())

    def _block_len(self) -> int:
        for blk in self.pending.values():
            for v in blk.values():
                return len(v)
        return 1024

    def _track_message_num(self, n: int, msg: DataMessage | None, out: list) -> None:
        last = self.last_msg
        if last is not None:
            if n == 0 and last > 0:
                out += self._restart("message_num back to 0")
                self.last_msg = 0
                return
            if n > last + 1:
                self.gaps += n - last - 1
            if n > last:
                self.last_msg = n
            return
        self.last_msg = n

    def _restart(self, reason: str) -> list:
        self.restarts += 1
        log.warning("acquisition restarted (%s): starting over", reason)
        out = self.flush()  # what was received before the restart still goes out
        self.pending.clear()
        last = self.last_msg
        self._reset()
        self.last_msg = last
        return out + [Restart(reason)]

    def _learn_channels(self) -> None:
        first = next(iter(self.pending))  # the block that arrived first
        chans = self.pending[first]
        self.n_channels = (max(chans) + 1) if chans else 0
        log.info("stream %r: %d channels", self.stream, self.n_channels)
        if len(chans) < self.n_channels and self.next_sample is None:
            # we subscribed in the middle of the very first block: drop its tail, not a "missing channel"
            del self.pending[first]
            self.partial_first += 1

    def _drain(self, now: float, force_all: bool = False) -> list:
        out: list = []
        while self.pending and self.n_channels:
            s = min(self.pending)
            blk = self.pending[s]
            complete = len(blk) >= self.n_channels
            if not (complete or force_all or len(self.pending) > self.max_pending):
                break
            del self.pending[s]
            if self.next_sample is not None and s > self.next_sample:
                self.dropped_samples += s - self.next_sample  # counted, never filled
                self.sample_gaps += 1
                log.warning("sample_num jumped from %d to %d: %d samples missing, a new segment starts",
                            self.next_sample, s, s - self.next_sample)
                out.append(Gap(self.next_sample, s))
            n = len(next(iter(blk.values())))
            out.append(self._make(s, blk, n, now))
            if self.first_sample_num is None:
                self.first_sample_num = s
            self.next_sample = s + n
        return out

    def _make(self, s: int, blk: dict, n: int, now: float) -> Block:
        data = np.zeros((self.n_channels, n), np.float32)
        for k, v in blk.items():
            if k < self.n_channels:
                data[k] = v
        missing = self.n_channels - sum(1 for k in blk if k < self.n_channels)
        if missing:  # TODO(issue: missing channels): still zeros within a block for now
            self.missing_channels += missing
            self.incomplete_blocks += 1
        self.blocks_in += 1
        self.samples_in += n
        names = [self.names.get(k, f"CH{k + 1}") for k in range(self.n_channels)]
        return Block(s, data, now, self.stream or "", self.sample_rate, names, missing)


class Heartbeat(threading.Thread):
    """REQ to the plugin's listening port every `interval` s; never blocks on a missing peer.

    Lazy-pirate: a request without a reply within `timeout` s closes the socket
    (linger 0) and opens a fresh one for the next beat.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, uuid: str, stop: threading.Event, interval: float = 2.0,
                 timeout: float = 1.0, application: str = "livedenoise"):
        super().__init__(name="openephys-heartbeat", daemon=True)
        self.ctx, self.endpoint, self.uuid = ctx, endpoint, uuid
        self.stop_event, self.interval, self.timeout, self.app = stop, interval, timeout, application
        self.sent = self.replies = self.timeouts = 0
        self.last_reply: bytes | None = None

    def _socket(self) -> zmq.Socket:
        s = self.ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
        s.connect(self.endpoint)
        return s

    def run(self) -> None:
        sock = self._socket()
        try:
            while not self.stop_event.is_set():
                try:
                    sock.send(heartbeat(self.uuid, self.app))
                    self.sent += 1
                    if sock.poll(int(self.timeout * 1000), zmq.POLLIN):
                        self.last_reply = sock.recv()
                        self.replies += 1
                    else:
                        raise zmq.Again()
                except zmq.ZMQError:
                    self.timeouts += 1
                    sock.close(linger=0)
                    sock = self._socket()
                self.stop_event.wait(self.interval)
        finally:
            sock.close(linger=0)


def heartbeat_endpoint(data_endpoint: str) -> str:
    """tcp://host:5556 -> tcp://host:5557."""
    head, _, port = data_endpoint.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"cannot find the port in {data_endpoint!r}")
    return f"{head}:{int(port) + 1}"


class OpenEphysReceiver(threading.Thread):
    """SUB to the plugin; decoded, assembled blocks go to `out` (a queue)."""

    def __init__(self, endpoint: str, out: "queue.Queue", stop: threading.Event, stream: str | None = None,
                 n_channels: int | None = None, rcvhwm: int = 200_000, heartbeat_s: float = 2.0,
                 uuid: str | None = None, idle_flush_s: float = 0.5, ctx: zmq.Context | None = None,
                 max_pending: int = 3):
        super().__init__(name="openephys-receiver", daemon=True)
        self.endpoint = endpoint
        self.out = out
        self.stop_event = stop
        self.ctx = ctx or zmq.Context.instance()
        self.asm = BlockAssembler(stream, n_channels, max_pending=max_pending)
        self.uuid = uuid or str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"livedenoise-sidecar-{endpoint}"))
        self.rcvhwm = rcvhwm
        self.idle_flush_s = idle_flush_s
        self.heart = Heartbeat(self.ctx, heartbeat_endpoint(endpoint), self.uuid, stop, heartbeat_s) if heartbeat_s else None
        self.last_reason = ""
        self.ready = threading.Event()
        self.cpu_s = 0.0
        """CPU seconds this thread used (receive + decode + assemble), set when it ends."""

    def run(self) -> None:
        sock = self.ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"DATA")
        sock.setsockopt(zmq.SUBSCRIBE, b"EVENT")
        sock.connect(self.endpoint)
        if self.heart is not None:
            self.heart.start()
        self.ready.set()
        cpu0 = time.thread_time()
        last_data = time.monotonic()
        flushed = True
        try:
            while not self.stop_event.is_set():
                if not sock.poll(50, zmq.POLLIN):
                    if not flushed and time.monotonic() - last_data > self.idle_flush_s:
                        for item in self.asm.flush():
                            self.out.put(item)
                        self.out.put("idle")
                        flushed = True
                    continue
                for _ in range(10000):
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK, copy=True)
                    except zmq.Again:
                        break
                    try:
                        msg = decode(parts)
                    except ProtocolError as exc:
                        self.asm.messages += 1
                        self.asm.malformed += 1
                        if str(exc) != self.last_reason:
                            log.warning("malformed message ignored: %s", exc)
                            self.last_reason = str(exc)
                        continue
                    for item in self.asm.add(msg):
                        self.out.put(item)
                    last_data = time.monotonic()
                    flushed = False
        finally:
            self.cpu_s = time.thread_time() - cpu0
            sock.close(linger=0)

    def counters(self) -> dict:
        c = self.asm.counters()
        if self.heart is not None:
            c.update(heartbeats=self.heart.sent, heartbeat_replies=self.heart.replies, heartbeat_timeouts=self.heart.timeouts)
        return c

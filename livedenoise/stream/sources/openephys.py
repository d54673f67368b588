"""Owns Open Ephys ingest: ZMQ Interface messages -> [channels x samples] blocks of one stream, and gap/restart items.

`BlockAssembler` is pure logic (no sockets, easy to test and to benchmark):
messages of the chosen stream are grouped by `sample_num` into blocks, emitted
in sample order. Anomalies are counted, never fatal, and never stall the
stream; no received sample is thrown away and none is invented:

- **When a block leaves.** With a given channel count (`n_channels`, the
  sidecar's `--channels`) a block leaves as soon as its channels 0..C-1 are
  there. With a learned count it leaves once the next block has started (the
  plugin sends a block's channels together, so a newer `sample_num` proves the
  block complete; this is what lets a growing channel count be seen without
  losing the first grown block: one block period more latency than with
  `--channels`). A block still missing channels once `max_pending` newer
  blocks wait, or at a restart, an idle flush or the end, leaves with the
  missing channels filled with zeros and flagged (`Block.filled`;
  `missing_channels`, `incomplete_blocks`).
- **Channel count.** Given: a `channel_num` at or beyond it is malformed.
  Learned: from the first block that has every channel 0..max (a first block
  that lacks its lowest channels was joined mid-block: dropped, counted
  `partial_first`). It changes only when `confirm` (3) consecutive blocks
  each hold exactly the channels 0..C'-1 of another count C' (then: a
  `Restart`, and the blocks go out at C'); channels beyond the count that are
  not confirmed that way (a stray `channel_num`) are malformed
  (`stray_channels`). `MAX_CHANNELS` (4096) is the absolute cap
  (protocols/zmq_interface.py), and a block is at most `MAX_BLOCK_VALUES`
  channels x samples.
- duplicates (same channel and sample_num twice) are dropped (`duplicates`);
  out-of-order messages are placed in their block while it is pending, and
  counted as `late` (and dropped) once the block has left;
- `message_num` gaps are counted (`gaps`: messages the plugin numbered but we
  never saw); a message_num more than `MAX_MESSAGE_GAP` ahead is not counted
  as a gap (`message_num_jumps`): counters count what was received;
- sample numbers follow the one gap/restart policy (`stream/gaps.py`): a
  forward jump of at most `max_gap` samples emits a `Gap` item before the
  block (`sample_gaps` jumps, `dropped_samples` samples skipped, never filled);
  a larger one (`jumps`) and a counter falling back (in a message numbered
  after everything seen so far, or by more than a few seconds), message_num
  going back to 0, or a new sample rate (`restarts`) are a new acquisition:
  what is pending goes out first (missing channels filled), then a `Restart`
  item. Nothing is allocated in proportion to a jump.
- event messages (TTL, spikes) are counted (`events`) and ignored.

`OpenEphysReceiver` runs the SUB socket and the heartbeat REQ socket on
supervised threads (stream/health.py) and puts the assembler's output (Block,
Gap, Restart, "idle") on a queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import zmq

from livedenoise.stream import gaps
from livedenoise.stream.health import SupervisedThread, ThreadHealth
from livedenoise.stream.sources.waiting import take_waiting
from livedenoise.stream.protocols.zmq_interface import (
    MAX_CHANNELS,
    MAX_FRAME_BYTES,
    MAX_HEARTBEAT_FRAME,
    DataMessage,
    EventMessage,
    ProtocolError,
    check_heartbeat_reply,
    decode,
    heartbeat,
    reason_key,
)

log = logging.getLogger("livedenoise.stream.openephys")

COUNTERS = (
    # every message received is counted in `messages` and in exactly one of `malformed`, `data_messages`
    # (valid, of our stream: placed in a block, or a duplicate, or late), `events`, `other_stream`, `internal_errors`
    "messages", "data_messages", "malformed", "duplicates", "late", "gaps", "missing_channels",
    "incomplete_blocks", "restarts", "jumps", "channel_changes", "stray_channels", "message_num_jumps", "events",
    "other_stream", "dropped_samples", "sample_gaps", "blocks_in", "samples_in", "partial_first", "internal_errors",
)

MAX_BLOCK_VALUES = 1 << 25
"""Channels x samples of one block (128 MiB as float32): a message that would make its block larger is malformed."""
MAX_MESSAGE_GAP = 1 << 24
"""A message_num further ahead than this is not believed (not counted as lost messages) unless the next one follows it."""
MAX_REASONS = 32
"""Distinct malformed reasons kept in the counts (the rest are counted under "other")."""
DEFAULT_MAX_GAP = 1 << 20
"""A sample_num jump forward of more than this many samples is a new acquisition (the sidecar passes its ring's size)."""
CONFIRM = 3
"""Consecutive complete blocks at another channel count that change a learned count."""


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
    """Channels that never arrived for this block (filled with zeros: see `filled`)."""
    filled: list[int] = field(default_factory=list)
    """Indices of the channels filled with zeros (they never arrived)."""

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
    """A new acquisition (counter fell back or jumped, message_num reset, new rate or channel count): a new segment."""

    reason: str


class _Pending:
    """One block being assembled: its channels' payloads (views of the messages)."""

    __slots__ = ("n", "chans")

    def __init__(self, n: int):
        self.n = n
        self.chans: dict[int, np.ndarray] = {}

    def count_if_complete(self) -> int | None:
        """C' when the block holds exactly the channels 0..C'-1, else None."""
        if not self.chans:
            return None
        top = max(self.chans) + 1
        return top if len(self.chans) == top else None

    def complete_at(self, c: int) -> bool:
        if len(self.chans) < c:  # the common case while a block fills: O(1)
            return False
        return sum(1 for k in self.chans if k < c) == c


class BlockAssembler:
    """ZMQ Interface messages -> Block / Gap / Restart items, in stream order (see the module docstring).

    stream: the stream to keep (None: the first one seen). n_channels: the
    channel count (None: learned). max_pending: newer blocks a block missing
    channels waits for. max_gap: the largest forward jump (samples) that is a
    gap rather than a new acquisition. confirm: consecutive complete blocks
    that change a learned channel count.
    """

    def __init__(self, stream: str | None = None, n_channels: int | None = None, max_pending: int = 3,
                 max_gap: int | None = DEFAULT_MAX_GAP, confirm: int = CONFIRM):
        if n_channels is not None and not 1 <= int(n_channels) <= MAX_CHANNELS:
            raise ValueError(f"the channel count must be 1 .. {MAX_CHANNELS}, got {n_channels}")
        self.want_stream = stream or None
        self.fixed_channels = None if n_channels is None else int(n_channels)
        self.max_pending = max(1, int(max_pending))
        self.max_gap = max_gap
        self.confirm = max(1, int(confirm))
        for k in COUNTERS:
            setattr(self, k, 0)
        self.reasons: dict[str, int] = {}
        self.last_reason = ""
        self._last_log = 0.0
        self.stream = self.want_stream
        self.n_channels = self.fixed_channels
        self.names: dict[int, str] = {}
        self.last_msg: int | None = None
        self._msg_probe: int | None = None
        self.emitted_any = False
        self._reset()

    def _reset(self) -> None:
        """Forget the acquisition (not the stream, the channel count or message numbering)."""
        self.sample_rate = 0.0
        self.pending: dict[int, _Pending] = {}
        self.next_sample: int | None = None
        self.first_sample_num: int | None = None

    def counters(self) -> dict:
        out = {k: int(getattr(self, k)) for k in COUNTERS}
        out["malformed_reasons"] = dict(self.reasons)
        out["last_malformed"] = self.last_reason
        return out

    def bad(self, reason: str, n: int = 1) -> None:
        """Count `n` malformed messages with their reason."""
        self.malformed += n
        key = reason_key(reason)
        if key not in self.reasons and len(self.reasons) >= MAX_REASONS:
            key = "other"
        first = key not in self.reasons
        self.reasons[key] = self.reasons.get(key, 0) + n
        self.last_reason = reason
        now = time.monotonic()
        if first or now - self._last_log > 5.0:  # a new kind of reason, else at most one line per 5 s
            self._last_log = now
            log.warning("malformed message ignored: %s (%d malformed so far)", reason, self.malformed)

    # ------------------------------------------------------------------ input

    def add(self, msg) -> list:
        """Feed one decoded message; returns the Block / Gap / Restart items now ready, in stream order."""
        self.messages += 1
        out: list = []
        if isinstance(msg, EventMessage):
            self.events += 1
            self._track_message_num(msg.message_num, out)
            return out
        if not isinstance(msg, DataMessage):
            self.bad(f"not a decoded message: {type(msg).__name__}")
            return out
        if self.stream is None:
            self.stream = msg.stream
        if msg.stream != self.stream:
            self.other_stream += 1
            return out
        ch, n, s = msg.channel_num, msg.num_samples, msg.sample_num
        # message-local checks first: a malformed message changes no state
        if self.fixed_channels is not None and ch >= self.fixed_channels:
            self.bad(f"channel_num {ch} beyond the {self.fixed_channels} channels given (--channels)")
            return out
        width = max(ch + 1, self.n_channels or 0)
        if width * n > MAX_BLOCK_VALUES:
            self.bad(f"a block of {width} channels x {n} samples is larger than {MAX_BLOCK_VALUES} values")
            return out
        self.data_messages += 1  # valid: placed in a block, or counted as a duplicate, late (or later a stray)
        newest = self._track_message_num(msg.message_num, out)
        if self.sample_rate and msg.sample_rate != self.sample_rate and (self.pending or self.next_sample is not None):
            out += self._restart(f"sample rate changed from {self.sample_rate:g} to {msg.sample_rate:g} Hz")
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
        end = self._known_end()
        if end is not None and s not in self.pending and gaps.classify(end, s, self.max_gap) is gaps.Step.JUMP:
            out += self._restart(f"sample_num jumped from {end} to {s}", kind="jumps")
        self.sample_rate = msg.sample_rate  # after any restart (which forgets it)
        blk = self.pending.get(s)
        if blk is None:
            blk = self.pending[s] = _Pending(n)
        elif blk.n != n:
            self.data_messages -= 1
            self.bad(f"num_samples {n} differs from the {blk.n} of the other channels of block {s}")
            return out
        if ch in blk.chans:
            self.duplicates += 1
            return out
        blk.chans[ch] = msg.samples
        self.names[ch] = msg.channel_name
        out += self._drain()
        return out

    def flush(self) -> list:
        """Emit everything pending (end of stream / idle / restart), missing channels filled and flagged."""
        return self._drain(force_all=True)

    # ------------------------------------------------------------------ internals

    def _restart_margin(self) -> int:
        return max(4 * 30000, 8 * self._block_len())

    def _block_len(self) -> int:
        for blk in self.pending.values():
            return blk.n
        return 1024

    def _known_end(self) -> int | None:
        """One past the newest sample known (pending or emitted); None at the start of an acquisition."""
        end = self.next_sample
        if self.pending:
            s = max(self.pending)
            e = s + self.pending[s].n
            end = e if end is None else max(end, e)
        return end

    def _track_message_num(self, n: int, out: list) -> bool:
        """Follow message numbering; returns whether this message is the newest so far."""
        last = self.last_msg
        if last is None:
            self.last_msg = n
            return True
        if n == 0 and last > 0:
            out += self._restart("message_num back to 0")
            self.last_msg = 0
            self._msg_probe = None
            return True
        if n <= last:
            return False
        if n - last - 1 > MAX_MESSAGE_GAP:
            # not believed unless the next message follows it (a stray number would stop every later
            # message from being the newest); never counted as lost messages
            if self._msg_probe is not None and n == self._msg_probe + 1:
                self.last_msg = n
                self._msg_probe = None
                return True
            self._msg_probe = n
            self.message_num_jumps += 1
            return False
        self.gaps += n - last - 1
        self.last_msg = n
        self._msg_probe = None
        return True

    def _restart(self, reason: str, kind: str = "restarts") -> list:
        setattr(self, kind, getattr(self, kind) + 1)
        log.warning("new acquisition (%s): what was pending goes out, then a new segment", reason)
        out = self.flush()  # what was received before the restart still goes out
        self.pending.clear()
        self._reset()
        return out + [Restart(reason)]

    def _strip(self, blk: _Pending, c: int) -> None:
        """Channels at or beyond the count `c` are strays: malformed."""
        for k in [k for k in blk.chans if k >= c]:
            del blk.chans[k]
            self.stray_channels += 1
            self.data_messages -= 1
            self.bad(f"channel_num {k} beyond the stream's {c} channels (not confirmed by {self.confirm} complete blocks)")

    def _decide_count(self, keys: list[int], force_all: bool) -> tuple[str, int | None]:
        """From the oldest pending block on: ("confirmed", C') | ("wait", None) | ("no", None)."""
        c_new = self.pending[keys[0]].count_if_complete()
        if c_new is None or c_new == self.n_channels:
            return "no", None
        run = 0
        for i, k in enumerate(keys):
            done = force_all or i < len(keys) - 1
            if not done:
                break
            if self.pending[k].count_if_complete() != c_new:
                return "no", None
            run += 1
            if run >= self.confirm:
                return "confirmed", c_new
        if force_all or len(self.pending) > self.max_pending + self.confirm:
            return "no", None
        return "wait", None

    def _learn(self, keys: list[int], force_all: bool) -> bool:
        """Learn the channel count from the first done, complete block; returns False to wait."""
        done = [k for i, k in enumerate(keys) if force_all or i < len(keys) - 1]
        if not done:
            return False
        first = self.pending[done[0]]
        if not self.emitted_any and first.count_if_complete() is None and first.chans:
            lo, top = min(first.chans), max(first.chans) + 1
            if lo > 0 and len(first.chans) == top - lo:
                # we subscribed in the middle of the very first block: drop its tail, not a "missing channel"
                del self.pending[done[0]]
                self.partial_first += 1
                return True
        for k in done:
            c = self.pending[k].count_if_complete()
            if c is not None:
                self.n_channels = c
                break
        else:
            if not (force_all or len(self.pending) > self.max_pending + self.confirm):
                return False
            tops = [max(self.pending[k].chans) + 1 for k in done if self.pending[k].chans]
            self.n_channels = min(tops, key=lambda t: (-tops.count(t), t)) if tops else None
            if self.n_channels is None:
                for k in done:
                    del self.pending[k]
                return True
        log.info("stream %r: %d channels", self.stream, self.n_channels)
        return True

    def _drain(self, force_all: bool = False) -> list:
        out: list = []
        now = time.monotonic()
        while self.pending:
            keys = sorted(self.pending)
            if self.n_channels is None:
                if not self._learn(keys, force_all):
                    break
                continue
            s = keys[0]
            blk = self.pending[s]
            c = self.n_channels
            done = force_all or len(keys) > 1
            learned = self.fixed_channels is None
            if learned and done:
                verdict, c_new = self._decide_count(keys, force_all)
                if verdict == "wait":
                    break
                if verdict == "confirmed":
                    self.channel_changes += 1
                    self.n_channels = c_new
                    out.append(Restart(f"channel count changed from {c} to {c_new}"))
                    self.next_sample = None
                    continue
                self._strip(blk, c)
            complete = blk.complete_at(c)
            ready = force_all or len(keys) > self.max_pending or (complete and (done or not learned))
            if not ready:
                break
            if learned and not done:
                break
            if not blk.chans:  # every message of it was a stray
                del self.pending[s]
                continue
            del self.pending[s]
            if self.next_sample is not None and s > self.next_sample:
                if gaps.classify(self.next_sample, s, self.max_gap) is gaps.Step.JUMP:
                    self.jumps += 1
                    log.warning("sample_num jumped from %d to %d: a new acquisition", self.next_sample, s)
                    out.append(Restart(f"sample_num jumped from {self.next_sample} to {s}"))
                else:
                    self.dropped_samples += s - self.next_sample  # counted, never filled
                    self.sample_gaps += 1
                    log.warning("sample_num jumped from %d to %d: %d samples missing, a new segment starts",
                                self.next_sample, s, s - self.next_sample)
                    out.append(Gap(self.next_sample, s))
            out.append(self._make(s, blk, now))
            if self.first_sample_num is None:
                self.first_sample_num = s
            self.next_sample = s + blk.n
            self.emitted_any = True
        return out

    def _make(self, s: int, blk: _Pending, now: float) -> Block:
        c, n = self.n_channels, blk.n
        data = np.empty((c, n), np.float32)
        filled = []
        for k in range(c):
            v = blk.chans.get(k)
            if v is None:
                data[k] = 0.0
                filled.append(k)
            else:
                data[k] = v
        if filled:
            self.missing_channels += len(filled)
            self.incomplete_blocks += 1
        self.blocks_in += 1
        self.samples_in += n
        names = [self.names.get(k, f"CH{k + 1}") for k in range(c)]
        return Block(s, data, now, self.stream or "", self.sample_rate, names, len(filled), filled)


# --------------------------------------------------------------------------- sockets


class Heartbeat:
    """REQ to the plugin's listening port every `interval` s; never blocks on a missing peer.

    Lazy-pirate: a request without a reply within `timeout` s closes the socket
    (linger 0) and opens a fresh one for the next beat. Replies are validated
    (`check_heartbeat_reply`): anything but `heartbeat received` is counted in
    `bad_replies`. Runs on a supervised thread; it stops with `stop`.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, uuid: str, stop: threading.Event, interval: float = 2.0,
                 timeout: float = 1.0, application: str = "livedenoise",
                 on_fatal: Callable[[str], None] | None = None):
        self.ctx, self.endpoint, self.uuid = ctx, endpoint, uuid
        self.stop_event, self.interval, self.timeout, self.app = stop, interval, timeout, application
        self.sent = self.replies = self.timeouts = self.bad_replies = 0
        self.last_reply: bytes | None = None
        self.health = ThreadHealth("openephys-heartbeat")
        self.thread = SupervisedThread("openephys-heartbeat", self._body, stop, on_fatal=on_fatal, health=self.health)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def _socket(self) -> zmq.Socket:
        s = self.ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
        s.setsockopt(zmq.MAXMSGSIZE, MAX_HEARTBEAT_FRAME)
        s.connect(self.endpoint)
        return s

    def _body(self) -> None:
        sock = self._socket()
        try:
            while not self.stop_event.is_set():
                try:
                    sock.send(heartbeat(self.uuid, self.app))
                    self.sent += 1
                    if not sock.poll(int(self.timeout * 1000), zmq.POLLIN):
                        raise zmq.Again()
                    parts = sock.recv_multipart()
                    self.last_reply = bytes(parts[0][:64]) if parts else b""
                    try:
                        check_heartbeat_reply(parts)
                        self.replies += 1
                    except ProtocolError:
                        self.bad_replies += 1
                except zmq.Again:
                    self.timeouts += 1
                    sock.close(linger=0)
                    sock = self._socket()
                except zmq.ZMQError as exc:
                    if exc.errno == zmq.ETERM:
                        raise
                    self.timeouts += 1
                    sock.close(linger=0)
                    sock = self._socket()
                self.stop_event.wait(self.interval)
        finally:
            sock.close(linger=0)


def heartbeat_endpoint(data_endpoint: str) -> str:
    """tcp://host:5556 -> tcp://host:5557."""
    head, _, port = data_endpoint.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65535:
        raise ValueError(f"cannot find the port in {data_endpoint!r}")
    return f"{head}:{int(port) + 1}"


class OpenEphysReceiver:
    """SUB to the plugin; decoded, assembled blocks go to `out` (a queue).

    Runs two supervised threads (stream/health.py): `openephys-receiver` (the
    SUB socket: decode, assemble, hand over) and `openephys-heartbeat`. A
    malformed message is counted with its reason (`malformed`,
    `malformed_reasons`); an unexpected exception while handling one message
    is counted (`internal_errors`, and in the thread's health) and the thread
    goes on; an exception in the loop itself restarts the thread (the
    assembler's state is kept); too many restarts call `on_fatal(line)`.
    When `stop` is set the thread flushes what is pending (the end of the
    stream) and ends; `done` is set once everything it received is on `out`.
    """

    def __init__(self, endpoint: str, out: "queue.Queue", stop: threading.Event, stream: str | None = None,
                 n_channels: int | None = None, rcvhwm: int = 200_000, heartbeat_s: float = 2.0,
                 uuid: str | None = None, idle_flush_s: float = 0.5, ctx: zmq.Context | None = None,
                 max_pending: int = 3, max_gap: int | None = DEFAULT_MAX_GAP,
                 on_fatal: Callable[[str], None] | None = None, heartbeat_timeout_s: float = 1.0):
        self.endpoint = endpoint
        self.out = out
        self.stop_event = stop
        self.ctx = ctx or zmq.Context.instance()
        self.asm = BlockAssembler(stream, n_channels, max_pending=max_pending, max_gap=max_gap)
        self.uuid = uuid or str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"livedenoise-sidecar-{endpoint}"))
        self.rcvhwm = rcvhwm
        self.idle_flush_s = idle_flush_s
        self.on_fatal = on_fatal
        self.heart = (Heartbeat(self.ctx, heartbeat_endpoint(endpoint), self.uuid, stop, heartbeat_s, heartbeat_timeout_s,
                                on_fatal=on_fatal)
                      if heartbeat_s else None)
        self.health = ThreadHealth("openephys-receiver")
        self.thread = SupervisedThread("openephys-receiver", self._body, stop, on_fatal=self._fatal, health=self.health)
        self.ready = threading.Event()
        self.done = threading.Event()
        """Set when the thread has ended and everything it received is on `out`."""
        self.last_message: float | None = None
        """time.monotonic() of the last message received (valid or not); None before the first."""
        self.cpu_s = 0.0
        """CPU seconds this thread used (receive + decode + assemble), set when it ends."""
        self._started = False
        self._flushed = True

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.heart is not None:
            self.heart.start()
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)
        if self.heart is not None:
            self.heart.join(timeout)

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    @property
    def started(self) -> bool:
        return self._started

    def threads(self) -> dict:
        """Each thread's health (`ThreadHealth.as_dict()`), by name."""
        out = {self.health.name: self.health.as_dict()}
        if self.heart is not None:
            out[self.heart.health.name] = self.heart.health.as_dict()
        return out

    def _fatal(self, line: str) -> None:
        if self.on_fatal is not None:
            self.on_fatal(line)

    def finish(self, timeout: float | None = None) -> bool:
        """After `stop`: wait for the thread to end and make sure everything it received is on `out`.

        Returns False when the thread is still running after `timeout` s.
        """
        if self._started:
            self.thread.join(timeout)
        if self.thread.is_alive():
            return False
        if not self.done.is_set():  # it ended without its final flush (failed, or stopped while restarting)
            try:
                self._put(self.asm.flush())
            except Exception as exc:  # noqa: BLE001
                self.health.record(exc, "final flush: ")
            self.done.set()
        if self.heart is not None:
            self.heart.join(timeout)
        return True

    # ------------------------------------------------------------------ the thread

    def _socket(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
            sock.setsockopt(zmq.SUBSCRIBE, b"DATA")
            sock.setsockopt(zmq.SUBSCRIBE, b"EVENT")
            sock.connect(self.endpoint)
        except Exception:
            sock.close(linger=0)
            raise
        return sock

    def _put(self, items: list) -> None:
        for item in items:
            self.out.put(item)

    def _handle(self, parts: list) -> None:
        """One message: decode, assemble, hand over; never raises."""
        asm = self.asm
        try:
            msg = decode(parts)
        except ProtocolError as exc:
            asm.messages += 1
            asm.bad(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 -- decode lets nothing else out; a last net all the same
            asm.messages += 1
            asm.internal_errors += 1
            self.health.record(exc, "message: ")
            return
        try:
            self._put(asm.add(msg))
        except Exception as exc:  # noqa: BLE001 -- a bug on one message must not end reception
            asm.internal_errors += 1
            self.health.record(exc, "message: ")
            log.exception("unexpected error on one message (counted; reception goes on)")

    def _read_waiting(self, sock: zmq.Socket, seconds: float) -> None:
        """Handle the messages already waiting on `sock`, for at most `seconds`."""
        take_waiting(sock, self._received, seconds)

    def _received(self, parts: list[bytes]) -> None:
        self.last_message = time.monotonic()
        self._flushed = False
        self._handle(parts)

    def _body(self) -> None:
        sock = self._socket()
        self.ready.set()
        cpu0 = time.thread_time()
        try:
            while not self.stop_event.is_set():
                if not sock.poll(50, zmq.POLLIN):
                    if (not self._flushed and self.last_message is not None
                            and time.monotonic() - self.last_message > self.idle_flush_s):
                        self._put(self.asm.flush())
                        self.out.put("idle")
                        self._flushed = True
                    continue
                self._read_waiting(sock, 0.1)
            # the end of the stream: what is already on the socket is read (up to 2 s of it), then what is
            # pending goes out (missing channels filled)
            self._read_waiting(sock, 2.0)
            self._put(self.asm.flush())
            self.done.set()
        finally:
            self.cpu_s += time.thread_time() - cpu0
            sock.close(linger=0)

    def counters(self) -> dict:
        c = self.asm.counters()
        if self.heart is not None:
            c.update(heartbeats=self.heart.sent, heartbeat_replies=self.heart.replies,
                     heartbeat_timeouts=self.heart.timeouts, heartbeat_bad_replies=self.heart.bad_replies)
        return c

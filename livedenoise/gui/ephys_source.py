"""Ephys input for the viewer: Open Ephys ZMQ Interface messages into a per-channel ring.

Wire format (DESIGN.md section 6): three parts, `b"DATA\\0"`, a JSON header with
`content.channel_num / num_samples / sample_num / sample_rate`, and a
float32[num_samples] payload. The Open Ephys ZMQ Interface plugin (port 5556) and
our sidecar's denoised PUB (port 5560) both speak it; messages are decoded by
`livedenoise.stream.protocols.zmq_interface.decode`, the sidecar's own decoder.

The receiver thread writes every block into a preallocated ring of samples
(`livedenoise.stream.ring.Ring`, capacity x channels float32) indexed by absolute
sample number; the GUI copies the window it draws at screen rate. The thread
never touches Qt.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from livedenoise.errors import UserError
from livedenoise.gui.source_thread import SourceThread
from livedenoise.stream.ring import Ring
from livedenoise.stream.protocols.zmq_interface import (
    DEFAULT_DATA_PORT, DEFAULT_OUTPUT_PORT, DataMessage, ProtocolError, decode,
)

DEFAULT_RAW = f"tcp://127.0.0.1:{DEFAULT_DATA_PORT}"
DEFAULT_DENOISED = f"tcp://127.0.0.1:{DEFAULT_OUTPUT_PORT}"
RCVHWM = 100_000
"""384 channels at ~30 blocks/s is ~10k messages/s: keep several seconds queued."""


class EphysRing:
    """The newest samples of one stream, every channel, by absolute sample number; thread-safe.

    The samples live in THE ring (`livedenoise.stream.ring.Ring`, one item = one
    sample of all channels); a message (one channel's block) is written as that
    channel's column. On top of it: which channels have data, where each one is,
    the gaps in its sample numbers, and the stream's sample rate.
    """

    def __init__(self, n_channels: int = 384, capacity: int = 1 << 16):
        self._lock = threading.Lock()
        self.capacity = int(capacity)
        self._ring = Ring(self.capacity, (int(n_channels),), np.float32)
        self.next_sample = np.full(int(n_channels), -1, np.int64)
        """Per channel: the sample number after the last one written (-1: never written)."""
        self.sample_rate = 0.0
        self.gap_samples = 0

    @property
    def n_channels(self) -> int:
        return self._ring.item_shape[0]

    @property
    def head(self) -> int:
        """Largest sample number written + 1, over all channels (-1: nothing yet)."""
        return self._ring.end if self._ring.end > 0 else -1

    def write(self, ch: int, s0: int, data: np.ndarray, rate: float) -> None:
        n = data.shape[0]
        with self._lock:
            if ch >= self.n_channels:
                self._grow(ch + 1)
            ring = self._ring
            if ring.end > 0 and s0 + n < ring.end - 4 * self.capacity:
                # sample numbers went far back: a new acquisition; start over
                ring.reset()
                ring.data[:] = 0
                self.next_sample[:] = -1
            self.sample_rate = rate
            prev = self.next_sample[ch]
            if prev >= 0 and s0 > prev:
                self.gap_samples += s0 - prev
            self.next_sample[ch] = s0 + n
            skip = max(0, ring.oldest - s0)  # samples the ring no longer holds (a channel far behind)
            if skip < n:
                ring.assign(s0 + skip, data[skip:], cols=ch)

    def _grow(self, n_channels: int) -> None:
        old = self._ring
        self._ring = Ring(self.capacity, (n_channels,), np.float32)
        self._ring.data[:, : old.item_shape[0]] = old.data
        self._ring.end = old.end
        self.next_sample = np.concatenate([self.next_sample, np.full(n_channels - len(self.next_sample), -1, np.int64)])

    def read(self, channels: np.ndarray, n: int, end: int | None = None, out: np.ndarray | None = None):
        """Samples [end - n, end) of `channels` into `out` ((len(channels), n) float32).

        Returns (out, end). Samples never written, or no longer held, read as 0.
        """
        n = min(int(n), self.capacity)
        with self._lock:
            ring = self._ring
            if end is None:
                end = self.head
            if out is None or out.shape != (len(channels), n):
                out = np.empty((len(channels), n), np.float32)
            a = end - n
            lo, hi = max(a, ring.oldest, 0), min(end, ring.end)
            if hi <= lo:
                out[:] = 0
                return out, max(end, 0)
            out[:, : lo - a] = 0
            out[:, hi - a:] = 0
            chans = np.asarray(channels)
            chans = np.where(chans < self.n_channels, chans, 0)
            i = lo % self.capacity
            k = min(hi - lo, self.capacity - i)
            out[:, lo - a: lo - a + k] = ring.data[i:i + k, chans].T
            if k < hi - lo:
                out[:, lo - a + k: hi - a] = ring.data[: hi - lo - k, chans].T
            return out, end

    def channels_seen(self) -> int:
        with self._lock:
            return int(np.count_nonzero(self.next_sample >= 0))

    def channel_ids(self) -> np.ndarray:
        """Indices of the channels that have data (the plugin may send a subset)."""
        with self._lock:
            return np.flatnonzero(self.next_sample >= 0)


@dataclass
class EphysStatus:
    name: str
    endpoint: str
    messages: int = 0
    samples: int = 0
    malformed: int = 0
    missing_messages: int = 0
    gap_samples: int = 0
    channels: int = 0
    sample_rate: float = 0.0
    head: int = -1
    msg_rate: float = 0.0
    first_message_s: float | None = None
    stream: str = ""
    last_error: str = ""
    extra: dict = field(default_factory=dict)


class ZmqInterfaceSource(SourceThread):
    """SUB to an Open Ephys ZMQ Interface PUB; fills an `EphysRing` on its own thread."""

    def __init__(self, name: str, endpoint: str, n_channels: int = 384, capacity: int = 1 << 16):
        super().__init__(name, endpoint, thread_prefix="view-ephys")
        self.ring = EphysRing(n_channels, capacity)
        self._messages = self._samples = self._malformed = self._missing = 0
        self._last_mn: int | None = None
        self._first: float | None = None
        self._rate_n, self._rate = 0, 0.0
        self._stream = ""

    def _run(self) -> None:
        import zmq

        sock, poller = self._subscribe(b"DATA", RCVHWM)
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                for _ in range(4096):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self.ingest([f.bytes if i < 2 else f.buffer for i, f in enumerate(frames)])
        finally:
            sock.close(0)

    def ingest(self, parts) -> None:
        """Parse one message and write it to the ring (called on the receiver thread)."""
        now = time.monotonic()
        try:
            msg = decode(parts)
            if not isinstance(msg, DataMessage):
                raise ProtocolError("not a DATA message")
        except ProtocolError as exc:
            with self._lock:
                self._malformed += 1
                self._error = str(exc)
                if self._first is None:
                    self._first = now - self._t0
            return
        self.ring.write(msg.channel_num, msg.sample_num, msg.samples, msg.sample_rate)
        with self._lock:
            if self._first is None:
                self._first = now - self._t0
            self._messages += 1
            self._samples += msg.num_samples
            self._stream = msg.stream
            if msg.message_num >= 0:
                if self._last_mn is not None and msg.message_num > self._last_mn + 1:
                    self._missing += msg.message_num - self._last_mn - 1
                self._last_mn = msg.message_num
            self._rate_n += 1
            if now - self._rate_t >= 1.0:
                self._rate = self._rate_n / (now - self._rate_t)
                self._rate_t, self._rate_n = now, 0

    def status(self) -> EphysStatus:
        with self._lock:
            st = EphysStatus(
                name=self.name, endpoint=self.endpoint, messages=self._messages, samples=self._samples,
                malformed=self._malformed, missing_messages=self._missing, msg_rate=self._rate,
                first_message_s=self._first, stream=self._stream, last_error=self._error,
            )
        st.gap_samples = self.ring.gap_samples
        st.channels = self.ring.channels_seen()
        st.sample_rate = self.ring.sample_rate
        st.head = self.ring.head
        return st


# Neuropixels 1.0 site layout: 2 sites per row, 20 um apart vertically, staggered columns.
_NP1_X = np.array([43.0, 11.0, 59.0, 27.0])


def neuropixels_positions(n_channels: int = 384) -> np.ndarray:
    """(n, 2) x, y in um of Neuropixels 1.0 sites (tip at y = 0)."""
    ch = np.arange(n_channels)
    return np.stack([_NP1_X[ch % 4], 20.0 * (ch // 2)], axis=1)


def load_positions(path: str) -> np.ndarray:
    """Channel positions (n, 2) from .npy or a text/CSV file of x, y per channel."""
    try:
        arr = np.load(path) if path.endswith(".npy") else np.loadtxt(path, delimiter=",", ndmin=2)
    except Exception as exc:
        raise UserError(f"cannot read channel positions from {path}: {exc}") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise UserError(f"{path}: channel positions must be (channels, 2) x, y; got {arr.shape}")
    return arr.astype(float)


def depth_order(positions: np.ndarray) -> np.ndarray:
    """Channel indices sorted by distance from the tip (y), then x."""
    return np.lexsort((positions[:, 0], positions[:, 1]))

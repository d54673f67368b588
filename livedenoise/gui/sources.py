"""Imaging frame sources for the viewer: a ZMQ subscriber or file playback, each on its own thread.

File playback opens movies with `livedenoise.io.readers.open_movie`, the reader
every verb uses, so `view --file` plays whatever `denoise` reads.

The receiver thread never touches Qt. For every frame it updates counters,
rate, latency and ROI traces; only the newest frame of each (channel, plane)
stream is copied into a preallocated slot (`NewestFrames`), from which the GUI
copies at screen rate. ZMQ CONFLATE cannot be used with multipart messages, so
conflation happens here: the thread drains everything queued on the socket,
counts it all, and keeps the last frame per stream.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.gui.rois import RoiTraces
from livedenoise.gui.source_thread import SourceThread
from livedenoise.io.readers import HDF5_EXTS, TIFF_EXTS, ArrayMovie, Movie, open_movie
from livedenoise.stream.protocols.frames import (
    ControlMessage, FrameHeader, FrameMessage, ProtocolError, decode,
)

RCVHWM = 2000
"""Receive queue, in messages: enough for a second of a kHz stream while the thread is busy."""
MAX_BATCH = 512
"""Messages drained before the newest frames are published to the slots."""


class NewestFrames:
    """The newest frames of each (channel, plane) stream, in preallocated buffers.

    `depth` > 1 keeps that many recent frames per stream (the raw side, so the
    raw frame that matches a lagging denoised frame can be shown and subtracted);
    `depth` = 1 is a single newest-frame slot.
    """

    class _Slots:
        __slots__ = ("buf", "headers", "seq")

        def __init__(self, depth, shape, dtype):
            self.buf = np.empty((depth, *shape), dtype)
            self.headers: list[FrameHeader | None] = [None] * depth
            self.seq = 0  # frames put so far; the newest is at (seq - 1) % depth

    def __init__(self, depth: int = 1):
        self.depth = max(1, int(depth))
        self._lock = threading.Lock()
        self._slots: dict[tuple[int, int], NewestFrames._Slots] = {}

    def put(self, header: FrameHeader, pixels: np.ndarray) -> None:
        with self._lock:
            slot = self._slots.get(header.stream)
            if slot is None or slot.buf.shape[1:] != pixels.shape or slot.buf.dtype != pixels.dtype:
                seq = slot.seq if slot else 0
                slot = self._slots[header.stream] = NewestFrames._Slots(self.depth, pixels.shape, pixels.dtype)
                slot.seq = seq
            i = slot.seq % self.depth
            np.copyto(slot.buf[i], pixels)
            slot.headers[i] = header
            slot.seq += 1

    def streams(self) -> list[tuple[int, int]]:
        with self._lock:
            return sorted(self._slots)

    def seq(self, stream: tuple[int, int]) -> int:
        with self._lock:
            slot = self._slots.get(stream)
            return slot.seq if slot else 0

    def read(self, stream: tuple[int, int], out: np.ndarray | None = None, frame: int | None = None):
        """Copy the newest frame (or the kept frame numbered `frame`) into `out`.

        `out` is float32 and reallocated only on a shape change. Returns
        (seq, header, out), or None when there is no such frame.
        """
        with self._lock:
            slot = self._slots.get(stream)
            if slot is None or slot.seq == 0:
                return None
            i = (slot.seq - 1) % self.depth
            if frame is not None:
                for k in range(min(slot.seq, self.depth)):
                    j = (slot.seq - 1 - k) % self.depth
                    h = slot.headers[j]
                    if h is not None and h.frame == frame:
                        i = j
                        break
                else:
                    return None
            if out is None or out.shape != slot.buf.shape[1:]:
                out = np.empty(slot.buf.shape[1:], np.float32)
            np.copyto(out, slot.buf[i], casting="unsafe")
            return slot.seq, slot.headers[i], out


class RunningMean:
    """Exponential running mean of one stream over every frame (time constant `tau` s).

    Updated on the source thread for every frame, so the mean-subtracted view is a
    true temporal baseline even though the display conflates. Off until enabled.
    It starts as the plain average of the frames so far (weight 1/n, never less
    than the exponential weight), so it never leans on the first frame alone;
    `warmup()` says how many frames it holds against the number one time
    constant spans: until then the baseline is still noisy (the viewer says so
    instead of showing its patches as activity).
    """

    def __init__(self, tau: float = 5.0):
        self.tau = tau
        self.enabled = False
        self._lock = threading.Lock()
        self._mean: np.ndarray | None = None
        self._tmp: np.ndarray | None = None
        self._t: float | None = None
        self._stream: tuple[int, int] | None = None
        self._count = 0
        self._elapsed = 0.0

    def set_stream(self, stream: tuple[int, int] | None) -> None:
        with self._lock:
            if stream != self._stream:
                self._stream, self._mean = stream, None

    def warmup(self) -> tuple[int, int]:
        """(frames averaged, frames one time constant spans at the rate seen so far: the mean is warm when
        the first reaches the second). (n, 0) while the rate is not known yet (fewer than 2 frames)."""
        with self._lock:
            n = self._count if self._mean is not None else 0
            if n < 2 or self._elapsed <= 0:
                return n, 0
            per_frame = self._elapsed / (n - 1)
            return n, max(2, int(math.ceil(self.tau / per_frame)) + 1)

    def update(self, header: FrameHeader, pixels: np.ndarray) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._stream is None:
                self._stream = header.stream
            elif header.stream != self._stream:
                return
            if self._mean is None or self._mean.shape != pixels.shape:
                if self._mean is None or self._tmp is None or self._mean.shape != pixels.shape:
                    self._mean = np.empty(pixels.shape, np.float32)
                    self._tmp = np.empty_like(self._mean)
                np.copyto(self._mean, pixels, casting="unsafe")
                self._t = header.t
                self._count, self._elapsed = 1, 0.0
                return
            dt = header.t - self._t if self._t is not None and header.t > self._t else 1 / 30
            self._t = header.t
            self._count += 1
            self._elapsed += dt
            a = max(1.0 / self._count, 1.0 - math.exp(-dt / max(self.tau, 1e-6)))
            np.subtract(pixels, self._mean, out=self._tmp, casting="unsafe")
            self._tmp *= a
            self._mean += self._tmp

    def read(self, out: np.ndarray | None = None) -> np.ndarray | None:
        with self._lock:
            if self._mean is None:
                return None
            if out is None or out.shape != self._mean.shape:
                out = np.empty_like(self._mean)
            np.copyto(out, self._mean)
            return out


@dataclass
class SourceStatus:
    """A consistent snapshot of one source's counters, for the status bar and tests."""

    name: str
    endpoint: str
    frames: int = 0
    gaps: int = 0
    """Frame numbers that never arrived (per stream), as the viewer saw it."""
    malformed: int = 0
    stats_messages: int = 0
    fps: float = 0.0
    first_frame_s: float | None = None
    """Seconds from source start to its first message; None while nothing arrived."""
    latency_p50: float | None = None
    latency_p99: float | None = None
    lag: Any = None
    model: str | None = None
    backend: str | None = None
    stats: dict = field(default_factory=dict)
    start: dict = field(default_factory=dict)
    stopped: bool = False
    finished: bool = False
    last_error: str = ""


class FrameSource(SourceThread):
    """Base for the viewer's frame sources; subclasses run `_run` on a daemon thread."""

    def __init__(self, name: str, endpoint: str, trace_capacity: int = 30_000, history: int = 1):
        super().__init__(name, endpoint)
        self.newest = NewestFrames(history)
        self.traces = RoiTraces(trace_capacity)
        self.mean = RunningMean()
        self._frames = 0
        self._gaps = 0
        self._malformed = 0
        self._stats_n = 0
        self._last_frame: dict[tuple[int, int], int] = {}
        self._first_s: float | None = None
        self._rate_n = 0
        self._fps = 0.0
        self._lat = np.zeros(4096, np.float64)
        self._lat_n = 0
        self._lat_head = 0
        self._lag: Any = None
        self._model: str | None = None
        self._backend: str | None = None
        self._stats: dict = {}
        self._start: dict = {}
        self._stopped = False
        self._finished = False

    def _on_finished(self) -> None:
        with self._lock:
            self._finished = True

    # --- called on the source thread ---------------------------------------
    def _on_frame(self, header: FrameHeader, pixels: np.ndarray) -> None:
        """Count and trace one frame (no copy of the pixels)."""
        self.traces.add(header, pixels)
        self.mean.update(header, pixels)
        now = time.monotonic()
        with self._lock:
            self._frames += 1
            if self._first_s is None:
                self._first_s = now - self._t0
            prev = self._last_frame.get(header.stream)
            if prev is not None and header.frame > prev + 1:
                self._gaps += header.frame - prev - 1
            self._last_frame[header.stream] = header.frame
            ex = header.extra
            if ex:
                lat = ex.get("latency_ms")
                if isinstance(lat, (int, float)) and not isinstance(lat, bool):
                    self._lat[self._lat_head] = lat
                    self._lat_head = (self._lat_head + 1) % self._lat.shape[0]
                    self._lat_n = min(self._lat_n + 1, self._lat.shape[0])
                if "lag" in ex:
                    self._lag = ex["lag"]
                if "model" in ex:
                    self._model = str(ex["model"])
                if "backend" in ex:
                    self._backend = str(ex["backend"])
            self._tick_rate(now, 1)

    def _tick_rate(self, now: float, n: int) -> None:
        self._rate_n += n
        dt = now - self._rate_t
        if dt >= 1.0:
            self._fps = self._rate_n / dt
            self._rate_n = 0
            self._rate_t = now

    def _on_control(self, msg: ControlMessage) -> None:
        with self._lock:
            if self._first_s is None:
                self._first_s = time.monotonic() - self._t0
            if msg.topic == "stats":
                self._stats_n += 1
                self._stats = dict(msg.meta)
            elif msg.topic == "start":
                self._start = dict(msg.meta)
                self._stopped = False
                self._last_frame.clear()
            elif msg.topic == "stop":
                self._stopped = True

    def _on_malformed(self, exc: Exception) -> None:
        with self._lock:
            self._malformed += 1
            self._error = str(exc)
            if self._first_s is None:
                self._first_s = time.monotonic() - self._t0

    # --- GUI side -------------------------------------------------------------
    def status(self) -> SourceStatus:
        now = time.monotonic()
        with self._lock:
            fps = self._fps
            if now - self._rate_t > 2.0:  # stream went quiet: decay to zero
                fps = self._rate_n / (now - self._rate_t)
            p50 = p99 = None
            if self._lat_n:
                lat = self._lat[: self._lat_n]
                p50, p99 = (float(v) for v in np.percentile(lat, [50, 99]))
            return SourceStatus(
                name=self.name, endpoint=self.endpoint, frames=self._frames, gaps=self._gaps,
                malformed=self._malformed, stats_messages=self._stats_n, fps=fps,
                first_frame_s=self._first_s, latency_p50=p50, latency_p99=p99, lag=self._lag,
                model=self._model, backend=self._backend, stats=dict(self._stats), start=dict(self._start),
                stopped=self._stopped, finished=self._finished, last_error=self._error,
            )


class ZmqFrameSource(FrameSource):
    """SUB socket on `endpoint` (the acquisition PUB or the service's output PUB)."""

    def _run(self) -> None:
        import zmq

        sock, poller = self._subscribe(b"", RCVHWM)
        # conflation: of each drained batch only the last `depth` frames per stream are copied
        pending: dict[tuple[int, int], deque[FrameMessage]] = {}
        depth = self.newest.depth
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                for _ in range(MAX_BATCH):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    parts = [f.buffer if i == 2 else f.bytes for i, f in enumerate(frames)]
                    try:
                        msg = decode(parts)
                    except ProtocolError as exc:
                        self._on_malformed(exc)
                        continue
                    if isinstance(msg, FrameMessage):
                        self._on_frame(msg.header, msg.pixels)
                        q = pending.get(msg.header.stream)
                        if q is None:
                            q = pending[msg.header.stream] = deque(maxlen=depth)
                        q.append(msg)
                    else:
                        self._on_control(msg)
                for q in pending.values():
                    for msg in q:
                        self.newest.put(msg.header, msg.pixels)
                    q.clear()
        finally:
            sock.close(0)


def open_file_source(name: str, path: str | Path, *, channel: int | None = None, plane: int | None = None,
                     dataset: str | None = None, prefer: str | None = None, **kw) -> "FileFrameSource":
    """A `FileFrameSource` playing `path`, opened with `livedenoise.io.readers.open_movie`.

    Every movie `denoise` reads plays: TIFF / BigTIFF, ScanImage TIFF (`channel`,
    `plane` pick the stream; on other files they only say which stream to show),
    HDF5 (`dataset`; else the 3-D dataset named `prefer`, "raw" or "denoised", when
    the file has one; else open_movie's choice), .npy. A `serve --record` HDF5 file
    keeps its frame numbers, times, channel and plane, so raw and denoised
    recordings line up frame by frame.
    """
    p = Path(path)
    hdf5 = p.suffix.lower() in HDF5_EXTS
    if dataset is None and prefer and hdf5 and _h5_movie_dataset(p, prefer):
        dataset = prefer
    scanimage = p.suffix.lower() in TIFF_EXTS and _is_scanimage(p)
    stamps = _recording_stamps(p) if hdf5 and dataset in (None, "frames", "/frames") else {}
    movie = open_movie(p, channel=channel if scanimage else None, plane=plane if scanimage else None, dataset=dataset)
    if getattr(movie, "dataset", None) != "/frames":
        stamps = {}
    for key in ("frame_numbers", "times"):
        if key in stamps and len(stamps[key]) < len(movie):
            del stamps[key]
    if scanimage:
        stamps = {"channel": movie.channel, "plane": movie.plane}
    src = FileFrameSource(name, movie, **stamps, **kw)
    src._owns_movie = True
    src.labelled = bool(stamps)
    return src


def _is_scanimage(path: Path) -> bool:
    from livedenoise.io.readers_scanimage import is_scanimage_tiff

    try:
        return bool(is_scanimage_tiff(path))
    except Exception:  # unreadable: open_movie says why
        return False


def _h5_open(path: Path):
    """An HDF5 file opened read-only; a `serve --record` file still being written needs SWMR mode."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError:
        return h5py.File(path, "r", swmr=True)


def _h5_movie_dataset(path: Path, name: str) -> bool:
    """True when HDF5 file `path` has a 3-D dataset `name`."""
    try:
        with _h5_open(path) as f:
            return name in f and getattr(f[name], "ndim", 0) == 3
    except Exception:  # unreadable: open_movie says why
        return False


def _recording_stamps(path: Path) -> dict:
    """Frame numbers, times, channel and plane of a `serve --record` HDF5 file (datasets
    `frames`, `frame`, `t`; attrs channel, plane); {} for any other file."""
    try:
        with _h5_open(path) as f:
            if "frames" not in f:
                return {}
            out: dict = {"channel": int(f.attrs.get("channel", 1)), "plane": int(f.attrs.get("plane", 1))}
            if "frame" in f:
                out["frame_numbers"] = np.asarray(f["frame"][:], np.int64)
            if "t" in f:
                out["times"] = np.asarray(f["t"][:], np.float64)
            return out
    except Exception:  # unreadable: open_movie says why
        return {}


def has_denoised_partner(path: str | Path) -> bool:
    """True when `path` is an HDF5 file holding a 3-D `denoised` dataset beside its raw movie."""
    p = Path(path)
    return p.suffix.lower() in HDF5_EXTS and p.exists() and _h5_movie_dataset(p, "denoised")


class FileFrameSource(FrameSource):
    """Plays a movie (a `livedenoise.io.readers.Movie`, or any (T, H, W) array) as protocol frames.

    Plays at `fps` (0: as fast as possible). `frame_numbers` / `times` (a recording's)
    are kept, so raw and denoised files line up; otherwise frames are numbered 0, 1, ...
    With `frame_limit`, stops after that many frames; with `loop`, starts over.
    """

    def __init__(self, name: str, movie: Movie | np.ndarray, fps: float = 30.0, loop: bool = False,
                 frame_limit: int | None = None, endpoint: str = "", extra: dict | None = None, *,
                 frame_numbers: np.ndarray | None = None, times: np.ndarray | None = None,
                 channel: int = 1, plane: int = 1, **kw):
        super().__init__(name, endpoint or "file", **kw)
        self.movie = movie if isinstance(movie, Movie) else ArrayMovie(movie)
        self.frame_numbers = frame_numbers
        self.times = times
        self.channel = int(channel)
        self.plane = int(plane)
        self.fps = fps
        self.loop = loop
        self.frame_limit = frame_limit
        self.extra = extra or {}
        self._owns_movie = False
        self.labelled = False
        """True when the file itself says which (channel, plane) it is (a recording, a ScanImage TIFF)."""
        self._running = threading.Event()
        self._running.set()

    def set_paused(self, paused: bool) -> None:
        """Hold playback at the current frame (a live stream cannot be held; files can)."""
        if paused:
            self._running.clear()
        else:
            self._running.set()

    def _run(self) -> None:
        try:
            self._play()
        finally:
            if self._owns_movie:
                self.movie.close()

    def _play(self) -> None:
        mv = self.movie
        n = len(mv)
        dtype = str(np.dtype(mv.dtype))
        if dtype not in ("int16", "uint16", "float32"):
            dtype = "float32"
        period = 1.0 / self.fps if self.fps > 0 else 0.0
        shape = tuple(int(s) for s in mv.shape[1:])
        t_next = self._t0
        i = k = 0
        base = 0
        while not self._stop.is_set():
            if not self._running.is_set():
                held = time.monotonic()
                while not self._running.wait(0.1) and not self._stop.is_set():
                    pass
                t_next += time.monotonic() - held
                continue
            if i >= n:
                if not self.loop:
                    break
                i = 0
                base = k
            if self.frame_limit is not None and k >= self.frame_limit:
                break
            pixels = mv.read(i, i + 1)[0]
            if str(pixels.dtype) != dtype:
                pixels = pixels.astype(dtype)
            number = base + (int(self.frame_numbers[i]) if self.frame_numbers is not None else i)
            t = float(self.times[i]) if self.times is not None and not base else number * (period or 1 / 30)
            header = FrameHeader(frame=number, t=t, shape=shape, dtype=dtype, channel=self.channel,
                                 plane=self.plane, source=self.endpoint, extra=self.extra)
            self._on_frame(header, pixels)
            self.newest.put(header, pixels)
            i += 1
            k += 1
            if period:
                t_next += period
                delay = t_next - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)

"""`livedenoise replay`: publish a movie file exactly as a microscope would (a 4D NIfTI run as a scanner would).

The publisher binds a PUB socket (an XPUB, to see subscriptions), waits until
`subscribers` subscribers (1 by default: e.g. `serve` and a `view` or
`listen` beside it need 2) have subscribed to `frame` (at most `wait_s`
seconds, 10 by default; with 0 it does not wait: a real microscope does not
either), then
sends `start` (frame rate, frame size, channels, planes, frames), the frames
paced on an absolute clock (frame k leaves at t0 + k / fps, so pacing never
drifts; a late frame is sent at once and counted in `late`), and `stop`.

Frame numbers count from 0 and go on across `--loop` passes (one acquisition
that repeats the movie), `t` is frame / fps. ScanImage TIFFs (when
`livedenoise.stream.sources.scanimage_tiff` is installed) are published as
ScanImage publishes them: every channel and plane with its own frame numbers
and times, paced by the recorded frame times (or by `fps` when given).
Pixels are sent as int16, uint16 or float32; other sample types are converted
(uint8/int8 -> int16, anything else -> float32), with one log line.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import zmq

from livedenoise.errors import UserError
from livedenoise.stream.sinks.publisher import bind
from livedenoise.stream.protocols.frames import DEFAULT_INPUT, DTYPES, FrameHeader, encode_control, encode_frame

log = logging.getLogger("livedenoise.stream")



def wire_dtype(dtype: np.dtype) -> str:
    """The protocol sample type a movie of `dtype` is sent as."""
    dtype = np.dtype(dtype)
    for name, dt in DTYPES.items():
        if dtype.newbyteorder("<") == dt or dtype == dt:
            return name
    if dtype.kind in "iu" and dtype.itemsize == 1:
        return "int16"
    return "float32"


def open_publisher(ctx: zmq.Context, endpoint: str, sndhwm: int = 100_000) -> zmq.Socket:
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber's subscription, not just the first of a topic
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.LINGER, 2000)
    bind(sock, endpoint, "replay endpoint", "--endpoint")
    return sock


def wait_for_subscriber(sock: zmq.Socket, timeout_s: float, stop_event: threading.Event | None = None,
                        topic: bytes = b"frame", count: int = 1) -> int:
    """Wait until `count` subscriptions covering `topic` have arrived or `timeout_s` passed.

    Returns how many arrived (>= count: all of them). The socket must be an XPUB
    with XPUB_VERBOSE (`open_publisher`), so that each subscriber is seen.
    """
    deadline = time.monotonic() + timeout_s
    seen = 0
    while seen < count:
        left = deadline - time.monotonic()
        if left <= 0 or (stop_event is not None and stop_event.is_set()):
            break
        if sock.poll(int(min(left, 0.1) * 1000) + 1, zmq.POLLIN):
            msg = sock.recv()
            if msg[:1] == b"\x01" and topic.startswith(msg[1:]):
                seen += 1
    return seen


def drain_subscriptions(sock: zmq.Socket) -> None:
    """Read and drop every (un)subscription queued on an XPUB socket (non-blocking)."""
    while True:
        try:
            sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return


def movie_acquisition(path, fps: float | None = 30.0, channel: int | None = None, plane: int | None = None,
                      dataset: str | None = None, frames: int | None = None, source: str | None = None):
    """(start_meta, factory, movie) for a plain movie file; factory() yields one pass of (FrameHeader, pixels).

    A 4D NIfTI run is published volume by volume (frames with a `depth`, docs/protocol.md), paced at its TR
    when `fps` is None (UserError when the file gives no TR); a plain movie at 30 frames/s then."""
    from livedenoise.io.readers import open_movie

    movie = open_movie(path, dataset=dataset)
    n = len(movie) if frames is None else min(frames, len(movie))
    if n < 1:
        raise UserError(f"{path}: no frames to replay")
    tr = getattr(movie, "tr", None)  # a NIfTI run: volumes, paced at its TR unless --fps says otherwise
    volumes = len(movie.frame_shape) == 3
    if fps is None:
        if volumes and not tr:
            raise UserError(f"{Path(path).name} does not say its TR (no time unit in the header, no BIDS sidecar "
                            "RepetitionTime); give the volume rate with --fps (volumes per second, 1 / TR)")
        fps = 1.0 / tr if volumes else 30.0
    dtype = wire_dtype(movie.dtype)
    if np.dtype(dtype) != np.dtype(movie.dtype).newbyteorder("<"):
        log.info("replay: %s samples are sent as %s", np.dtype(movie.dtype).name, dtype)
    fs = tuple(int(s) for s in movie.frame_shape)
    ch, pl = channel or 1, plane or 1
    src = source or f"replay:{Path(path).name}"
    meta = {"frame_rate": fps, "frame_size": list(fs[-2:]), "channels": [ch], "planes": 1, "frames": n,
            "dtype": dtype, "source": src}
    if volumes:
        meta.update(depth=fs[0], tr=1.0 / fps, volume_rate=fps)

    def one_pass() -> Iterator[tuple[FrameHeader, np.ndarray]]:
        block_n = 64 if not volumes else 4
        for a in range(0, n, block_n):
            block = movie.read(a, min(n, a + block_n))
            for k, img in enumerate(block):
                i = a + k
                yield FrameHeader(frame=i, t=i / fps, shape=fs, dtype=dtype, channel=ch, plane=pl, source=src), img

    return meta, one_pass, movie


def array_acquisition(movie: np.ndarray, fps: float = 30.0, channel: int = 1, plane: int = 1, source: str = "array"):
    """(start_meta, factory) for an in-memory (T, H, W) array, or (T, D, H, W) volumes (tests, bench, demo)."""
    movie = np.asarray(movie)
    if movie.ndim not in (3, 4):
        raise ValueError(f"expected a (T, H, W) movie or (T, D, H, W) volumes, got shape {movie.shape}")
    dtype = wire_dtype(movie.dtype)
    n, fs = movie.shape[0], tuple(int(s) for s in movie.shape[1:])
    meta = {"frame_rate": fps, "frame_size": list(fs[-2:]), "channels": [channel], "planes": 1, "frames": n,
            "dtype": dtype, "source": source}
    if len(fs) == 3:
        meta.update(depth=fs[0], tr=1.0 / fps, volume_rate=fps)

    def one_pass():
        for i in range(n):
            yield FrameHeader(frame=i, t=i / fps, shape=fs, dtype=dtype, channel=channel, plane=plane, source=source), movie[i]

    return meta, one_pass


def publish(sock: zmq.Socket, start_meta: dict, one_pass: Callable[[], Iterable[tuple[FrameHeader, np.ndarray]]],
            fps: float | None, loop: bool = False, stop_event: threading.Event | None = None,
            on_sent: Callable[[FrameHeader, float], None] | None = None) -> dict:
    """Send start, paced frames (one pass, or passes until stopped with `loop`), stop; returns a summary.

    Pacing: by `fps` over each stream's frame count when given, else by the frames' own `t`.
    """
    stop_event = stop_event or threading.Event()
    sock.send_multipart(encode_control("start", start_meta))
    t0 = time.perf_counter()
    sent = late = passes = 0
    frame_offset = 0
    t_offset = 0.0
    first: dict = {}
    period = 1.0 / fps if fps else 0.0
    while not stop_event.is_set():
        max_frame, max_t = -1, 0.0
        for h, img in one_pass():
            if stop_event.is_set():
                break
            first.setdefault(h.stream, h.frame)
            frame = h.frame + frame_offset
            t = h.t + t_offset
            rel = (frame - first[h.stream]) / fps if fps else t
            due = t0 + rel
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            elif now - due > max(period, 0.005):
                late += 1
            if frame_offset or t_offset:
                h = FrameHeader(**{**h.__dict__, "frame": frame, "t": t})
            sock.send_multipart(encode_frame(h, np.asarray(img).astype(DTYPES[h.dtype], copy=False)))
            if on_sent is not None:
                on_sent(h, time.perf_counter())
            sent += 1
            max_frame, max_t = max(max_frame, h.frame - frame_offset), max(max_t, h.t - t_offset)
        passes += 1
        drain_subscriptions(sock)
        if not loop or max_frame < 0:
            break
        frame_offset += max_frame + 1
        t_offset += max_t + (period or (max_t / max(max_frame, 1)))
    elapsed = time.perf_counter() - t0
    summary = {"frames": sent, "passes": passes, "seconds": round(elapsed, 3),
               "fps": round(sent / elapsed, 2) if elapsed > 0 else None, "late": late}
    sock.send_multipart(encode_control("stop", {"frames": sent}))
    return summary


def _scanimage_source(path: Path):
    """The ScanImage acquisition source when `path` is a ScanImage TIFF, else None."""
    from livedenoise.stream.sources import scanimage_tiff

    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    return scanimage_tiff if scanimage_tiff.is_scanimage_tiff(path) else None


def replay_movie(path, endpoint: str = DEFAULT_INPUT, fps: float | None = 30.0, loop: bool = False,
                 stop_event: threading.Event | None = None, channel: int | None = None, plane: int | None = None,
                 dataset: str | None = None, frames: int | None = None, wait_s: float = 10.0,
                 ctx: zmq.Context | None = None, on_sent=None, subscribers: int = 1, announce=None) -> dict:
    """Publish a movie file on `endpoint` like a microscope; returns {frames, passes, seconds, fps, late, subscribers}.

    `fps=None` paces a ScanImage TIFF by its recorded frame times, a 4D NIfTI run at its TR (one volume
    per TR, sent as a frame with a `depth`), a plain movie at 30 Hz.
    `subscribers`: how many to wait for (up to `wait_s` s); `announce(line)` is called
    once the movie is open and the endpoint bound, before waiting.
    """
    path = Path(path)
    si = _scanimage_source(path)
    movie = None
    if si is not None:
        start_meta, items = si.scanimage_acquisition(path)
        start_meta = dict(start_meta)
        passes = [_filter(items, channel, plane, frames)]

        def one_pass():  # a fresh read of the file for every --loop pass
            return passes.pop() if passes else _filter(si.scanimage_acquisition(path)[1], channel, plane, frames)
    else:
        start_meta, one_pass, movie = movie_acquisition(path, fps, channel, plane, dataset, frames)
        fps = start_meta["frame_rate"]
    if fps is not None and fps <= 0:
        raise UserError(f"--fps must be > 0, got {fps}")
    own = ctx is None
    ctx = ctx or zmq.Context()
    sock = None
    try:
        sock = open_publisher(ctx, endpoint)
        if announce is not None:
            announce(f"publishing {path.name} on {endpoint}"
                     + (f"; waiting up to {wait_s:g} s for {subscribers} subscriber(s)" if wait_s > 0 else ""))
        seen = 0
        if wait_s > 0:
            seen = wait_for_subscriber(sock, wait_s, stop_event, count=subscribers)
            if stop_event is not None and stop_event.is_set():
                return {"frames": 0, "passes": 0, "seconds": 0.0, "fps": None, "late": 0, "subscribers": seen}
            if seen < subscribers:
                log.warning("replay: %d of %d subscriber(s) on %s after %.0f s; publishing anyway",
                            seen, subscribers, endpoint, wait_s)
        return {**publish(sock, start_meta, one_pass, fps, loop, stop_event, on_sent), "subscribers": seen}
    finally:
        if sock is not None:
            sock.close()
        if own:
            ctx.term()
        if movie is not None:
            movie.close()


def _filter(items, channel, plane, frames):
    count: dict = {}
    for h, img in items:
        if channel is not None and h.channel != channel or plane is not None and h.plane != plane:
            continue
        count[h.stream] = count.get(h.stream, 0) + 1
        if frames is not None and count[h.stream] > frames:
            continue
        yield h, img

"""Counters and latency percentiles of the live service, in constant memory.

`ServiceStats` is shared by the receiver thread (frames in, malformed,
dropped upstream, restarts, jumps) and the engine loop (frames out, skipped,
overflow, too short, engine time); the stream pipelines and the recorder add
to it too. Plain integer increments under the GIL; each counter has one writer
thread. `snapshot()` builds the `stats` message body, including each
supervised thread's health (`threads`: receiver, engine, recorder; see
stream/health.py) and, once a thread could not go on, `fatal` (one line).
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

# Log-spaced latency bins: 0.01 ms .. 100 s, 40 bins per decade (~6 % wide).
_EDGES_MS = np.logspace(-2, 5, 7 * 40 + 1)


class LatencyHistogram:
    """Fixed-bin histogram: whole-run percentiles without keeping every sample."""

    def __init__(self) -> None:
        self.counts = np.zeros(len(_EDGES_MS) + 1, np.int64)
        self.n = 0

    def add(self, ms: float) -> None:
        self.counts[int(np.searchsorted(_EDGES_MS, ms))] += 1
        self.n += 1

    def add_many(self, ms: np.ndarray) -> None:
        if len(ms):
            np.add.at(self.counts, np.searchsorted(_EDGES_MS, ms), 1)
            self.n += len(ms)

    def percentile(self, q: float) -> float | None:
        if not self.n:
            return None
        k = int(np.searchsorted(np.cumsum(self.counts), math.ceil(q / 100 * self.n)))
        k = min(max(k, 1), len(_EDGES_MS) - 1)
        return float(math.sqrt(_EDGES_MS[k - 1] * _EDGES_MS[k]))  # bin centre (geometric)

    def as_dict(self) -> dict:
        """Non-empty bins only: {"edges_ms": [lo, hi] per bin, "counts": [...]}."""
        nz = np.nonzero(self.counts)[0]
        edges = np.concatenate([[0.0], _EDGES_MS, [math.inf]])
        return {
            "bins_ms": [[float(edges[k]), float(edges[k + 1])] for k in nz],
            "counts": [int(self.counts[k]) for k in nz],
        }


class RecentWindow:
    """The last `size` samples in a preallocated circle (per-interval percentiles)."""

    def __init__(self, size: int = 4096) -> None:
        self.buf = np.zeros(size, np.float64)
        self.n = 0

    def add(self, v: float) -> None:
        self.buf[self.n % len(self.buf)] = v
        self.n += 1

    def take(self) -> np.ndarray:
        """Samples since the last take (at most `size`), and reset."""
        k = min(self.n, len(self.buf))
        out = self.buf[:k].copy() if self.n <= len(self.buf) else self.buf.copy()
        self.n = 0
        return out


COUNTERS = (
    "frames_in",       # valid frame messages received
    "frames_out",      # denoised frames published
    "dropped_upstream",  # frames missing upstream (skipped frame numbers)
    "gaps",            # gaps in frame numbers within the ring's reach: each ends a segment (docs/serve.md)
    "skipped",         # frames not denoised under --policy latest
    "overflow",        # frames not denoised because the ring overwrote them (--policy all)
    "malformed",       # messages that broke the protocol
    "restarts",        # stream resets: start message, shape/dtype change, counter going back
    "jumps",           # frame numbers jumping beyond what the ring holds: a new acquisition (not counted as dropped)
    "evicted",         # streams closed because more than max_streams were open (least recently used first)
    "passthrough",     # frames output raw (no input frame existed yet: a causal model's first frame; too_short)
    "too_short",       # frames output raw because their acquisition (or segment) had fewer than min_frames frames
    "nonfinite",       # NaN/Inf pixels of raw frames: filled for the model, output as NaN (docs/serve.md)
    "engine_errors",   # engine failures (the stream is then only recorded)
    "record_dropped",  # frames not recorded: the disk too slow (queue full) or a file error of their stream
    "record_errors",   # file errors of the recorder (create/write/close), per stream in `record_stream_errors`
    "batches",
)


class ServiceStats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lock = threading.Lock()
        for k in COUNTERS:
            setattr(self, k, 0)
        self.latency = LatencyHistogram()
        self.recent_latency = RecentWindow()
        self.recent_engine = RecentWindow()
        self.engine_total_ms = 0.0
        self._last = {"time": self.started, "frames_in": 0, "frames_out": 0}
        self.queue_depth = 0
        self.record_queue = 0
        self.record_queue_mb = 0.0
        self.record_files_open = 0
        self.record_stream_errors: dict = {}
        """{file stem: {"errors", "dropped", "last_error"}}: replaced (never mutated) by the recorder thread."""
        self.threads: dict = {}
        """name -> `health.ThreadHealth` of each supervised thread (set by the service)."""
        self.last_malformed = ""
        """Why the last malformed message was refused (the receiver's)."""
        self.fatal: str | None = None
        """One line once a thread could not go on (the service then stops, non-zero)."""

    def add_latency(self, ms: float) -> None:
        self.latency.add(ms)
        self.recent_latency.add(ms)

    def add_engine(self, ms_per_frame: float, batch_ms: float) -> None:
        self.recent_engine.add(ms_per_frame)
        self.engine_total_ms += batch_ms

    def snapshot(self, final: bool = False) -> dict:
        """Counters plus rates and percentiles since the previous snapshot (whole run if final)."""
        now = time.monotonic()
        out: dict = {"v": 1, "t": round(time.time(), 3)}
        out.update({k: int(getattr(self, k)) for k in COUNTERS})
        dt = max(now - self._last["time"], 1e-9)
        lat = self.recent_latency.take()
        eng = self.recent_engine.take()
        if final:
            dt = max(now - self.started, 1e-9)
            out["fps_in"] = round(out["frames_in"] / dt, 2)
            out["fps_out"] = round(out["frames_out"] / dt, 2)
            p50, p99 = self.latency.percentile(50), self.latency.percentile(99)
            out["latency_ms_p50"] = None if p50 is None else round(p50, 2)
            out["latency_ms_p99"] = None if p99 is None else round(p99, 2)
            out["engine_ms"] = round(self.engine_total_ms / out["frames_out"], 3) if out["frames_out"] else None
            out["latency_hist"] = self.latency.as_dict()
        else:
            out["fps_in"] = round((out["frames_in"] - self._last["frames_in"]) / dt, 2)
            out["fps_out"] = round((out["frames_out"] - self._last["frames_out"]) / dt, 2)
            out["latency_ms_p50"] = round(float(np.percentile(lat, 50)), 2) if len(lat) else None
            out["latency_ms_p99"] = round(float(np.percentile(lat, 99)), 2) if len(lat) else None
            out["engine_ms"] = round(float(np.mean(eng)), 3) if len(eng) else None
        out["queue_depth"] = int(self.queue_depth)
        out["record_queue"] = int(self.record_queue)
        out["record_queue_mb"] = round(float(self.record_queue_mb), 1)
        out["last_malformed"] = self.last_malformed
        out["record_files_open"] = int(self.record_files_open)
        out["record_stream_errors"] = dict(self.record_stream_errors)
        out["threads"] = {name: h.as_dict() for name, h in list(self.threads.items())}
        if self.fatal:
            out["fatal"] = self.fatal
        out["uptime_s"] = round(now - self.started, 2)
        self._last = {"time": now, "frames_in": out["frames_in"], "frames_out": out["frames_out"]}
        return out


NO_INPUT_HINT_S = 10.0
"""After this long with nothing received, the stats line asks whether --input is right."""


def stats_line(s: dict) -> str:
    """One human line: fps, latency, drops."""
    def ms(v):
        return "-" if v is None else f"{v:.1f}"

    line = (
        f"in {s['fps_in']:.1f} fps, out {s['fps_out']:.1f} fps | latency p50 {ms(s['latency_ms_p50'])} ms "
        f"p99 {ms(s['latency_ms_p99'])} ms | engine {ms(s['engine_ms'])} ms/frame | frames {s['frames_in']} in "
        f"{s['frames_out']} out | dropped {s['dropped_upstream']} skipped {s['skipped']} overflow {s['overflow']} "
        f"malformed {s['malformed']} | queue {s['queue_depth']}"
    )
    if s.get("record_dropped") or s.get("record_queue_mb", 0) > 64:
        line += f" | recorder behind: {s['record_queue_mb']:.0f} MB queued, {s['record_dropped']} lost"
    if s.get("record_errors"):
        line += f" | record errors {s['record_errors']} ({len(s.get('record_stream_errors') or {})} file(s))"
    if s.get("jumps") or s.get("evicted"):
        line += f" | jumps {s.get('jumps', 0)} evicted {s.get('evicted', 0)}"
    for name, h in (s.get("threads") or {}).items():
        if h.get("errors") or h.get("state") not in ("starting", "running", "stopped"):
            last = (h.get("last_error") or "")[:80]
            line += f" | {name} {h.get('state')}: {h.get('errors', 0)} error(s), {h.get('restarts', 0)} restart(s)"
            line += f" (last: {last})" if last else ""
    if not s.get("frames_in") and not s.get("malformed") and s.get("uptime_s", 0) >= NO_INPUT_HINT_S:
        line += (f" | no frames in {s['uptime_s']:.0f} s: is the acquisition publishing livedenoise frames on --input"
                 " (ScanImage: livedenoise_setup; a file: livedenoise replay)?")
    return line

"""`--record DIR`: raw and denoised frames to disk, off the hot path.

Callers (the receiver thread for raw frames, the engine loop for denoised
ones) only put frames on a queue; one writer thread appends them to files and
flushes every open file at least every `flush_s` seconds (0.5 s), so a crash
loses at most the last second. The queue is bounded in bytes: if the disk
cannot keep up, frames beyond the bound are counted in `record_dropped`, the
stats line says so, and a log line is printed (never a silent loss).

One file per (kind, channel, plane, acquisition):
`raw_c1_p1_a001.h5` / `denoised_c1_p1_a001.h5` (or `.tif`). HDF5 files hold
resizable datasets `frames` (N, H, W), `frame` (int64 acquisition frame
numbers), `t` (float64 s since acquisition start) and `received` (float64
Unix time of arrival), with attributes `channel`, `plane`, `source`, `meta`
(JSON: the start message, and the model card for denoised files). They are
written in SWMR mode, so `h5py.File(path, "r", libver="latest", swmr=True)`
can read them while they grow. TIFF files (BigTIFF) hold one page per frame
whose description is JSON `{"frame": n, "t": s, "received": unix}`.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError

log = logging.getLogger("livedenoise.stream")

FORMATS = ("h5", "tiff")


@dataclass
class _File:
    path: Path
    kind: str
    handle: object
    n: int = 0
    dirty: bool = False
    pending: list = field(default_factory=list)


def file_name(kind: str, channel: int, plane: int, acq: int, fmt: str) -> str:
    return f"{kind}_c{channel}_p{plane}_a{acq:03d}.{'h5' if fmt == 'h5' else 'tif'}"


class Recorder:
    def __init__(self, directory, fmt: str = "h5", max_queue_mb: float = 1024.0, stats=None, flush_s: float = 0.5):
        if fmt not in FORMATS:
            raise UserError(f"record format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".livedenoise-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"cannot write recordings to {self.dir}: {exc.strerror or exc}") from None
        if fmt == "h5":
            import h5py  # noqa: F401  (fail early, before any frame)
        else:
            import tifffile  # noqa: F401
        self.fmt = fmt
        self.max_bytes = int(max_queue_mb * 2**20)
        self.flush_s = flush_s
        self.stats = stats
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._queued_bytes = 0
        self._queued_items = 0
        self._lock = threading.Lock()
        self._files: dict[tuple, _File] = {}
        self.paths: list[Path] = []
        self.dropped = 0
        self._last_warn = 0.0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="livedenoise-recorder", daemon=True)
        self._thread.start()

    # -- producer side (any thread) ------------------------------------------------
    def write(self, kind: str, channel: int, plane: int, acq: int, pixels: np.ndarray,
              frame_no: int, t: float, received: float, meta: dict | None = None) -> bool:
        """Queue one frame; `pixels` must not be modified afterwards. False if it had to be dropped."""
        nbytes = pixels.nbytes
        with self._lock:
            if self._queued_bytes + nbytes > self.max_bytes or self.error:
                self.dropped += 1
                if self.stats is not None:
                    self.stats.record_dropped += 1
                now = time.monotonic()
                if now - self._last_warn > 5:
                    self._last_warn = now
                    why = self.error or f"{self._queued_bytes / 2**20:.0f} MB waiting for the disk"
                    log.warning("recorder cannot keep up (%s): %d frames not recorded so far", why, self.dropped)
                return False
            self._queued_bytes += nbytes
            self._queued_items += 1
            self._update_stats()
        self._q.put(("frame", (kind, channel, plane, acq), pixels, frame_no, t, received, meta))
        return True

    def end(self, kind: str, channel: int, plane: int, acq: int) -> None:
        """The acquisition is over: flush and close its file."""
        self._q.put(("end", (kind, channel, plane, acq)))

    def close(self, timeout: float = 60.0) -> None:
        """Write everything queued, flush and close all files."""
        self._q.put(("quit",))
        self._thread.join(timeout)

    def _update_stats(self) -> None:
        if self.stats is not None:
            self.stats.record_queue = self._queued_items
            self.stats.record_queue_mb = self._queued_bytes / 2**20

    # -- writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        last_flush = time.monotonic()
        running = True
        while running:
            try:
                item = self._q.get(timeout=self.flush_s)
            except queue.Empty:
                item = None
            batch = [] if item is None else [item]
            while len(batch) < 256:  # take what is there, write it in one go per file
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            for it in batch:
                if it[0] == "frame":
                    self._stage(*it[1:])
                elif it[0] == "end":
                    self._write_pending()
                    self._close_file(it[1])
                else:
                    running = False
            self._write_pending()
            now = time.monotonic()
            if now - last_flush >= self.flush_s or not running:
                self._flush()
                last_flush = now
        for key in list(self._files):
            self._close_file(key)

    def _stage(self, key, pixels, frame_no, t, received, meta) -> None:
        f = self._files.get(key)
        if f is None:
            try:
                f = self._open(key, pixels, meta or {})
            except Exception as exc:  # disk full, permissions: say so, keep the service up
                self._fail(f"cannot create a file in {self.dir}: {exc}", 1)
                self._unqueue(pixels.nbytes, 1)
                return
            self._files[key] = f
        f.pending.append((pixels, frame_no, t, received))

    def _fail(self, message: str, lost: int) -> None:
        if not self.error:
            self.error = message
            log.error("recorder: %s; recording stopped", message)
        with self._lock:
            self.dropped += lost
            if self.stats is not None:
                self.stats.record_dropped += lost

    def _unqueue(self, nbytes: int, items: int) -> None:
        with self._lock:
            self._queued_bytes -= nbytes
            self._queued_items -= items
            self._update_stats()

    def _open(self, key, pixels: np.ndarray, meta: dict) -> _File:
        kind, channel, plane, acq = key
        path = self.dir / file_name(kind, channel, plane, acq, self.fmt)
        if self.fmt == "h5":
            import h5py

            h, w = pixels.shape
            chunk = max(1, min(64, (1 << 20) // max(pixels.nbytes, 1)))
            fh = h5py.File(path, "w", libver="latest")
            fh.create_dataset("frames", (0, h, w), pixels.dtype, maxshape=(None, h, w), chunks=(chunk, h, w))
            fh.create_dataset("frame", (0,), np.int64, maxshape=(None,), chunks=(1024,))
            fh.create_dataset("t", (0,), np.float64, maxshape=(None,), chunks=(1024,))
            fh.create_dataset("received", (0,), np.float64, maxshape=(None,), chunks=(1024,))
            fh.attrs["kind"] = kind
            fh.attrs["channel"] = channel
            fh.attrs["plane"] = plane
            fh.attrs["acquisition"] = acq
            fh.attrs["meta"] = json.dumps(meta, default=str)
            fh.swmr_mode = True
        else:
            import tifffile

            fh = tifffile.TiffWriter(path, bigtiff=True)
        self.paths.append(path)
        return _File(path, kind, fh)

    def _write_pending(self) -> None:
        for key, f in list(self._files.items()):
            if not f.pending:
                continue
            items, f.pending = f.pending, []
            nbytes = sum(p.nbytes for p, *_ in items)
            try:
                if self.fmt == "h5":
                    n, k = f.n, len(items)
                    fh = f.handle
                    for name, values in (
                        ("frames", np.stack([p for p, *_ in items])),
                        ("frame", np.array([it[1] for it in items], np.int64)),
                        ("t", np.array([it[2] for it in items], np.float64)),
                        ("received", np.array([it[3] for it in items], np.float64)),
                    ):
                        ds = fh[name]
                        ds.resize(n + k, axis=0)
                        ds[n:n + k] = values
                else:
                    for p, frame_no, t, received in items:
                        f.handle.write(
                            np.ascontiguousarray(p), metadata=None, contiguous=False,
                            description=json.dumps({"frame": int(frame_no), "t": float(t), "received": float(received)}),
                        )
                f.n += len(items)
                f.dirty = True
            except Exception as exc:
                self._fail(f"writing {f.path.name} failed: {exc}", len(items))
            self._unqueue(nbytes, len(items))

    def _flush(self) -> None:
        for f in self._files.values():
            if f.dirty:
                try:
                    if self.fmt == "h5":
                        f.handle.flush()
                    else:
                        f.handle.filehandle.flush()
                except Exception as exc:  # pragma: no cover - disk trouble
                    self._fail(f"flushing {f.path.name} failed: {exc}", 0)
                f.dirty = False

    def _close_file(self, key) -> None:
        f = self._files.pop(key, None)
        if f is None:
            return
        try:
            f.handle.close()
        except Exception as exc:  # pragma: no cover
            log.error("recorder: closing %s failed: %s", f.path, exc)


def read_recording(path) -> dict:
    """Frames and their numbers/times from one recorded file (HDF5 or TIFF)."""
    path = Path(path)
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r", libver="latest", swmr=True) as fh:
            return {
                "frames": fh["frames"][:], "frame": fh["frame"][:], "t": fh["t"][:],
                "received": fh["received"][:], "meta": json.loads(fh.attrs.get("meta", "{}")),
            }
    import tifffile

    with tifffile.TiffFile(path) as tf:
        frames = np.stack([p.asarray() for p in tf.pages]) if len(tf.pages) else np.zeros((0, 0, 0))
        desc = [json.loads(p.description) for p in tf.pages]
    return {
        "frames": frames, "frame": np.array([d["frame"] for d in desc], np.int64),
        "t": np.array([d["t"] for d in desc]), "received": np.array([d["received"] for d in desc]), "meta": {},
    }

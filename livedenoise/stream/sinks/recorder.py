"""`--record DIR`: raw and denoised frames to disk, off the hot path, one stream's faults isolated.

Callers (the receiver thread for raw frames, the engine loop for denoised
ones) only put frames on a queue; one writer thread appends them to files and
flushes every open file at least every `flush_s` seconds (0.5 s), so a crash
loses at most the last second. The queue is bounded in bytes: if the disk
cannot keep up, frames beyond the bound are counted in `record_dropped`, the
stats line says so, and a log line is printed (never a silent loss).

Files. One file per (kind, channel, plane, acquisition):
`raw_c1_p1_a001.h5` / `denoised_c1_p1_a001.h5` (or `.tif`). HDF5 files hold
resizable datasets `frames` (N, H, W), `frame` (int64 acquisition frame
numbers), `t` (float64 s since acquisition start) and `received` (float64
Unix time of arrival), with attributes `kind`, `channel`, `plane`,
`acquisition`, `part` and `meta` (JSON: the start message, and the model card
for denoised files). They are written in SWMR mode, so
`h5py.File(path, "r", libver="latest", swmr=True)` can read them while they
grow. TIFF files (BigTIFF) hold one page per frame whose description is JSON
`{"frame": n, "t": s, "received": unix}`.

- **Temporary names.** A file is written as `<name>.partial.h5` (`.partial.tif`)
  and renamed to `<name>.h5` when it is complete (its acquisition ended, or it
  was closed as below). A crash (or SIGKILL) leaves the `.partial` file:
  readable up to its last flush with `read_recording(path)` (HDF5: SWMR read
  mode; TIFF: every complete page).
- **Bounded open files.** At most `max_open` files are open at once (default
  256, and at most a quarter of the process's open-file limit). A file whose
  stream sent nothing for `idle_close_s` (30 s) is closed; when more files are
  needed, the least recently written one is closed. A stream whose file was
  closed this way and that sends again continues in a new *part* file:
  `raw_c1_p1_a001_part2.h5`, `_part3`, ... (`recording_parts` lists them in
  order, `read_stream` reads them as one).
- **Fault isolation.** A file that cannot be created, written, flushed or
  closed (permissions, a disk error, a name taken by a directory) is an error
  of *its stream only*: counted in `record_errors` and per file stem in
  `record_stream_errors` (`{"raw_c1_p1_a001": {"errors", "dropped",
  "last_error"}}`), its frames counted in `record_dropped` while it cannot be
  written; the other streams go on. After `retry_s` (2 s) the stream tries
  again with a new part file.
- **Supervision.** The writer thread runs under `health.SupervisedThread`: an
  unexpected exception is counted in its `health` (shown in the stats'
  `threads.recorder`) and the thread restarts; if it cannot go on,
  `on_fatal(line)` is called (the service then stops, non-zero).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.io.atomic import PARTIAL, partial_path
from livedenoise.stream.health import SupervisedThread, ThreadHealth

log = logging.getLogger("livedenoise.stream")

FORMATS = ("h5", "tiff")
MAX_STREAM_ERROR_ENTRIES = 64
"""`record_stream_errors` keeps at most this many file stems (the rest under "(other)")."""
WARN_EVERY_S = 5.0


@dataclass
class _File:
    path: Path
    """Final name (after the rename)."""
    tmp: Path
    """Name while it is written."""
    kind: str
    handle: object
    stem: str
    n: int = 0
    dirty: bool = False
    last: float = 0.0
    """time.monotonic() of the last frame staged."""
    pending: list = field(default_factory=list)


def file_stem(kind: str, channel: int, plane: int, acq: int, part: int = 1) -> str:
    """`raw_c1_p1_a001`, or `raw_c1_p1_a001_part2` for a later part of the same stream and acquisition."""
    return f"{kind}_c{channel}_p{plane}_a{acq:03d}" + (f"_part{part}" if part > 1 else "")


def file_name(kind: str, channel: int, plane: int, acq: int, fmt: str, part: int = 1, partial: bool = False) -> str:
    """The file's name: `raw_c1_p1_a001.h5`; `partial` gives the name while it is written (`.partial.h5`)."""
    name = file_stem(kind, channel, plane, acq, part) + "." + _ext(fmt)
    return partial_path(name).name if partial else name  # the one partial-name rule (io/atomic.py)


def _ext(fmt: str) -> str:
    return "h5" if fmt == "h5" else "tif"


def _fd_budget() -> int:
    """A quarter of the soft open-file limit (sockets, the engine and the viewer need the rest)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY or soft <= 0:
            return 1 << 16
        return max(4, soft // 4)
    except Exception:  # noqa: BLE001 -- no resource module (Windows): a conservative default
        return 128


class Recorder:
    """Queue + writer thread; see the module docstring.

    directory: created if needed (UserError when it cannot be written);
    fmt: "h5" or "tiff"; max_queue_mb: bound of the queue in MiB; stats: a
    `ServiceStats` (or None) to count into; flush_s: seconds between flushes;
    max_open: most files open at once; idle_close_s: a file idle this long is
    closed; retry_s: wait after a file error before its stream tries a new
    part; on_fatal: called with one line when the writer thread cannot go on.
    """

    def __init__(self, directory, fmt: str = "h5", max_queue_mb: float = 1024.0, stats=None, flush_s: float = 0.5,
                 *, max_open: int = 256, idle_close_s: float = 30.0, retry_s: float = 2.0, on_fatal=None):
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
        self.max_open = max(1, min(int(max_open), _fd_budget()))
        self.idle_close_s = float(idle_close_s)
        self.retry_s = float(retry_s)
        self.stats = stats
        self.on_fatal = on_fatal
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._queued_bytes = 0
        self._queued_items = 0
        self._lock = threading.Lock()
        self._files: OrderedDict[tuple, _File] = OrderedDict()
        """Open files, least recently written first."""
        self._parts: dict[tuple, int] = {}
        """Parts opened so far per (kind, channel, plane, acquisition)."""
        self._retry_at: dict[tuple, float] = {}
        self.paths: list[Path] = []
        """Files written, in the order they were completed (a `.partial` name if it could not be renamed)."""
        self.dropped = 0
        self.errors = 0
        self.stream_errors: dict[str, dict] = {}
        self.max_open_seen = 0
        """Most files open at once so far."""
        self._last_warn = 0.0
        self._last_error_log = 0.0
        self._closed = False
        self.error: str | None = None
        """The last file error (informational; recording of other streams goes on)."""
        self.health = ThreadHealth("recorder")
        self._stop = threading.Event()
        self._thread = SupervisedThread("livedenoise-recorder", self._body, self._stop, cleanup=self._cleanup,
                                        on_fatal=self._fatal, health=self.health)
        self._thread.start()

    # -- producer side (any thread) ------------------------------------------------
    def write(self, kind: str, channel: int, plane: int, acq: int, pixels: np.ndarray,
              frame_no: int, t: float, received: float, meta: dict | None = None) -> bool:
        """Queue one frame (H, W); `pixels` must not be modified afterwards.

        Returns False (counted in `record_dropped`) when it had to be dropped:
        the queue is full, or the recorder has stopped or failed.
        """
        nbytes = pixels.nbytes
        with self._lock:
            full = self._queued_bytes + nbytes > self.max_bytes
            if full or self._closed or self.health.state == "failed":
                self.dropped += 1
                if self.stats is not None:
                    self.stats.record_dropped += 1
                now = time.monotonic()
                if now - self._last_warn > WARN_EVERY_S:
                    self._last_warn = now
                    why = (f"{self._queued_bytes / 2**20:.0f} MB waiting for the disk" if full
                           else "the recorder has stopped")
                    log.warning("recorder cannot keep up (%s): %d frames not recorded so far", why, self.dropped)
                return False
            self._queued_bytes += nbytes
            self._queued_items += 1
            self._update_stats()
        self._q.put(("frame", (kind, channel, plane, acq), pixels, frame_no, t, received, meta))
        return True

    def end(self, kind: str, channel: int, plane: int, acq: int) -> None:
        """The acquisition is over: flush, close and rename its file."""
        self._q.put(("end", (kind, channel, plane, acq)))

    def close(self, timeout: float = 60.0) -> None:
        """Write everything queued, flush, close and rename all files."""
        self._q.put(("quit",))
        self._thread.join(timeout)
        with self._lock:
            self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            log.error("recorder: the writer did not finish within %.0f s; its files stay .partial", timeout)

    @property
    def files_open(self) -> int:
        return len(self._files)

    def _update_stats(self) -> None:
        if self.stats is not None:
            self.stats.record_queue = self._queued_items
            self.stats.record_queue_mb = self._queued_bytes / 2**20

    def _fatal(self, line: str) -> None:
        with self._lock:
            self.error = line
        if self.on_fatal is not None:
            self.on_fatal(line)

    # -- writer thread -------------------------------------------------------------------
    def _body(self) -> None:
        last_flush = time.monotonic()
        while True:
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
            quit_ = False
            for it in batch:
                try:
                    if it[0] == "frame":
                        self._stage(*it[1:])
                    elif it[0] == "end":
                        self._end(it[1])
                    else:
                        quit_ = True
                except Exception as exc:  # noqa: BLE001 -- one item never stops the writer
                    self.health.record(exc, "item: ")
                    self.health.restarts += 1  # starts over with the next item
                    if it[0] == "frame":
                        self._stream_error(it[1], f"{type(exc).__name__}: {exc}", 1)
                        self._unqueue(it[2].nbytes, 1)
            self._write_all()
            now = time.monotonic()
            if now - last_flush >= self.flush_s or quit_:
                self._flush()
                self._close_idle(now)
                last_flush = now
            self._publish_state()
            if quit_:
                self._close_all()
                return

    def _stage(self, key, pixels, frame_no, t, received, meta) -> None:
        now = time.monotonic()
        f = self._files.get(key)
        if f is None:
            if now < self._retry_at.get(key, 0.0):  # its last file failed a moment ago
                self._stream_error(key, None, 1)
                self._unqueue(pixels.nbytes, 1)
                return
            while len(self._files) >= self.max_open:  # bounded: close the least recently written
                self._close_file(next(iter(self._files)))
            part = self._parts.get(key, 0) + 1
            self._parts[key] = part
            try:
                f = self._open(key, part, pixels, meta or {})
            except Exception as exc:  # noqa: BLE001 -- disk full, permissions, a name taken: this stream only
                self._retry_at[key] = now + self.retry_s
                self._stream_error(key, f"cannot create {file_name(*key, self.fmt, part, True)}: {exc}", 1)
                self._unqueue(pixels.nbytes, 1)
                return
            self._files[key] = f
            self.max_open_seen = max(self.max_open_seen, len(self._files))
        else:
            self._files.move_to_end(key)
        f.pending.append((pixels, frame_no, t, received))
        f.last = now

    def _end(self, key) -> None:
        self._close_file(key)
        self._parts.pop(key, None)
        self._retry_at.pop(key, None)

    def _stream_error(self, key, message: str | None, lost: int) -> None:
        """Count a file error (message) and/or frames lost (lost) of one stream."""
        stem = file_stem(*key)
        with self._lock:
            self.dropped += lost
            if message is not None:
                self.errors += 1
                self.error = message
            entries = dict(self.stream_errors)
            if stem not in entries and len(entries) >= MAX_STREAM_ERROR_ENTRIES:
                stem = "(other)"
            e = dict(entries.get(stem, {"errors": 0, "dropped": 0, "last_error": ""}))
            e["dropped"] += lost
            if message is not None:
                e["errors"] += 1
                e["last_error"] = message[:300]
            entries[stem] = e
            self.stream_errors = entries  # replaced, never mutated: the stats thread reads it
            if self.stats is not None:
                self.stats.record_dropped += lost
                if message is not None:
                    self.stats.record_errors += 1
                self.stats.record_stream_errors = entries
        if message is not None:
            now = time.monotonic()
            if now - self._last_error_log >= WARN_EVERY_S:
                self._last_error_log = now
                log.error("recorder: %s; this stream's frames are not recorded for now, the others go on "
                          "(%d file error(s) so far)", message, self.errors)

    def _unqueue(self, nbytes: int, items: int) -> None:
        with self._lock:
            self._queued_bytes -= nbytes
            self._queued_items -= items
            self._update_stats()

    def _publish_state(self) -> None:
        if self.stats is not None:
            self.stats.record_files_open = len(self._files)

    def _open(self, key, part: int, pixels: np.ndarray, meta: dict) -> _File:
        kind, channel, plane, acq = key
        path = self.dir / file_name(kind, channel, plane, acq, self.fmt, part)
        tmp = self.dir / file_name(kind, channel, plane, acq, self.fmt, part, partial=True)
        if self.fmt == "h5":
            import h5py

            fs = tuple(pixels.shape)  # (H, W), or (D, H, W) for a volume
            chunk = max(1, min(64, (1 << 20) // max(pixels.nbytes, 1)))
            fh = h5py.File(tmp, "w", libver="latest")
            try:
                fh.create_dataset("frames", (0, *fs), pixels.dtype, maxshape=(None, *fs), chunks=(chunk, *fs))
                fh.create_dataset("frame", (0,), np.int64, maxshape=(None,), chunks=(1024,))
                fh.create_dataset("t", (0,), np.float64, maxshape=(None,), chunks=(1024,))
                fh.create_dataset("received", (0,), np.float64, maxshape=(None,), chunks=(1024,))
                fh.attrs["kind"] = kind
                fh.attrs["channel"] = channel
                fh.attrs["plane"] = plane
                fh.attrs["acquisition"] = acq
                fh.attrs["part"] = part
                fh.attrs["meta"] = json.dumps(meta, default=str)
                fh.swmr_mode = True
            except BaseException:
                fh.close()
                raise
        else:
            import tifffile

            fh = tifffile.TiffWriter(tmp, bigtiff=True)
        return _File(path, tmp, kind, fh, file_stem(kind, channel, plane, acq, part))

    def _write_all(self) -> None:
        for key in list(self._files):
            f = self._files.get(key)
            if f is not None and f.pending:
                self._write_pending(key, f)

    def _write_pending(self, key, f: _File) -> bool:
        items, f.pending = f.pending, []
        nbytes = sum(p.nbytes for p, *_ in items)
        ok = True
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
        except Exception as exc:  # noqa: BLE001 -- a disk error: this stream only
            ok = False
            self._stream_error(key, f"writing {f.tmp.name} failed: {exc}", len(items))
            self._abandon(key, f)
        self._unqueue(nbytes, len(items))
        return ok

    def _abandon(self, key, f: _File) -> None:
        """After a file error: close what can be closed, keep the name it has, retry later in a new part."""
        self._files.pop(key, None)
        self._retry_at[key] = time.monotonic() + self.retry_s
        try:
            f.handle.close()
        except Exception:  # noqa: BLE001
            pass
        self.paths.append(f.tmp)  # what it holds up to its last flush stays readable

    def _flush(self) -> None:
        for key, f in list(self._files.items()):
            if not f.dirty:
                continue
            try:
                if self.fmt == "h5":
                    f.handle.flush()
                else:
                    f.handle.filehandle.flush()
                f.dirty = False
            except Exception as exc:  # noqa: BLE001 -- disk trouble: this stream only
                self._stream_error(key, f"flushing {f.tmp.name} failed: {exc}", 0)
                self._abandon(key, f)

    def _close_idle(self, now: float) -> None:
        if self.idle_close_s <= 0:
            return
        for key in [k for k, f in self._files.items() if now - f.last >= self.idle_close_s]:
            self._close_file(key)

    def _close_file(self, key) -> None:
        """Write what is pending, close, and rename to the final name."""
        f = self._files.get(key)
        if f is None:
            return
        if f.pending and not self._write_pending(key, f):
            return  # abandoned (counted) by the failed write
        self._files.pop(key, None)
        try:
            f.handle.close()
        except Exception as exc:  # noqa: BLE001
            self._stream_error(key, f"closing {f.tmp.name} failed: {exc}", 0)
            self.paths.append(f.tmp)
            return
        try:
            os.replace(f.tmp, f.path)
            self.paths.append(f.path)
        except OSError as exc:
            self._stream_error(key, f"renaming {f.tmp.name} to {f.path.name} failed: {exc}", 0)
            self.paths.append(f.tmp)

    def _cleanup(self) -> None:
        """The writer ends for good: close every file; frames still queued (only after a failure) are counted."""
        self._close_all()
        lost = 0
        while True:
            try:
                it = self._q.get_nowait()
            except queue.Empty:
                break
            if it[0] == "frame":
                lost += 1
                self._unqueue(it[2].nbytes, 1)
        if lost:
            with self._lock:
                self.dropped += lost
                if self.stats is not None:
                    self.stats.record_dropped += lost
            log.error("recorder: %d queued frame(s) could not be written", lost)

    def _close_all(self) -> None:
        for key in list(self._files):
            try:
                self._close_file(key)
            except Exception as exc:  # noqa: BLE001
                self.health.record(exc, "close: ")
        self._publish_state()


def read_recording(path) -> dict:
    """Frames and their numbers/times from one recorded file (HDF5 or TIFF), `.partial` ones included.

    Returns {"frames": (N, H, W), "frame": (N,) int64, "t": (N,) float64,
    "received": (N,) float64, "meta": dict}. A `.partial` file left by a crash
    is read up to its last flush (every dataset cut to the shortest).
    """
    path = Path(path)
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r", libver="latest", swmr=True) as fh:
            n = min(fh[k].shape[0] for k in ("frames", "frame", "t", "received"))
            return {
                "frames": fh["frames"][:n], "frame": fh["frame"][:n], "t": fh["t"][:n],
                "received": fh["received"][:n], "meta": json.loads(fh.attrs.get("meta", "{}")),
            }
    import tifffile

    with tifffile.TiffFile(path) as tf:
        frames = np.stack([p.asarray() for p in tf.pages]) if len(tf.pages) else np.zeros((0, 0, 0))
        desc = [json.loads(p.description) for p in tf.pages]
    return {
        "frames": frames, "frame": np.array([d["frame"] for d in desc], np.int64),
        "t": np.array([d["t"] for d in desc]), "received": np.array([d["received"] for d in desc]), "meta": {},
    }


def recording_parts(directory, kind: str, channel: int, plane: int, acq: int, fmt: str = "h5") -> list[Path]:
    """The files of one stream and acquisition in order: part 1, 2, ... (a part's `.partial` file when
    it was never renamed, e.g. after a crash)."""
    d = Path(directory)
    stem = file_stem(kind, channel, plane, acq)
    pat = re.compile(re.escape(stem) + r"(?:_part(\d+))?(" + re.escape(PARTIAL) + r")?\." + _ext(fmt) + "$")
    found: dict[int, Path] = {}
    for p in d.iterdir() if d.is_dir() else ():
        m = pat.match(p.name)
        if m and p.is_file():
            part = int(m.group(1) or 1)
            if part not in found or not m.group(2):  # the final name wins over a leftover .partial
                found[part] = p
    return [found[k] for k in sorted(found)]


def read_stream(directory, kind: str, channel: int, plane: int, acq: int, fmt: str = "h5") -> dict:
    """`read_recording` of every part of one stream and acquisition, concatenated in order."""
    parts = [read_recording(p) for p in recording_parts(directory, kind, channel, plane, acq, fmt)]
    if not parts:
        raise FileNotFoundError(f"no {file_stem(kind, channel, plane, acq)} recording in {directory}")
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("frames", "frame", "t", "received")}
    out["meta"] = parts[0]["meta"]
    out["parts"] = len(parts)
    return out

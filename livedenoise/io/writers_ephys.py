"""Owns writing extracellular recordings: Open Ephys Binary, SpikeGLX .bin/.meta, flat .dat.

Writers stream: `write(block_uv)` appends (samples, channels) microvolts,
quantised to int16 with the channel's bit_volts; `close()` finishes the files.
Open Ephys output is a session folder a GUI user would recognise:

    OUT/Record Node 101/experiment1/recording1/structure.oebin
    OUT/Record Node 101/experiment1/recording1/continuous/<folder>/continuous.dat
                                                               .../sample_numbers.npy
                                                               .../timestamps.npy

readable by `open_ephys.analysis.Session(OUT)`, SpikeInterface and our readers.
`writer_like(rec, OUT)` (what `denoise` uses) writes a *copy* of an input recording
instead (`OpenEphysCopyWriter`): at the input's own place in its session, with its
events, sync messages, settings, other streams and sample numbers carried over.
`write(block, sample_numbers)` stores each sample's own number, gaps included
(default: continuing from the last one); nothing is ever padded. A session that
already holds a recording of this Record Node gets the next `recordingN` (as the
Open Ephys GUI does); nothing already there is touched.

Every writer follows the one rule of `livedenoise.io.atomic`: it writes under the
partial name (`OUT.partial/`, `x.partial.bin` + `x.partial.meta`, `y.partial.dat`)
and `close()` renames to the final name; `abort()` (or leaving `with writer:` on an
exception) keeps what was written under the partial name. The files are valid at
every `flush()` -- the `.npy` headers hold the count written so far, the SpikeGLX
`.meta` the current size -- and a writer flushes on its own at most every
`flush_every_s` seconds of writing (default 1 s), so what a crash (SIGKILL) leaves
reads back (`np.load`, `open_recording`) up to the last flush.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from livedenoise import __version__
from livedenoise.errors import UserError
from livedenoise.io import atomic
from livedenoise.io.readers_ephys import GLX_PARTIAL_KEY, PARTIAL_KEY, Recording

GUI_VERSION = "0.6.7"
"""Written into structure.oebin; 0.6+ tells readers to expect sample_numbers.npy."""

FLUSH_EVERY_S = 1.0
"""Default longest time between two automatic flushes while writing (what a crash can lose)."""


def quantise(uv: np.ndarray, bit_volts: np.ndarray) -> np.ndarray:
    """µV -> int16 with rounding and clipping (never wraps around)."""
    q = np.rint(np.asarray(uv, np.float64) / np.asarray(bit_volts, np.float64))
    return np.clip(q, -32768, 32767).astype("<i2")


class NpyAppender:
    """A 1-D .npy file written incrementally, a valid .npy at every `flush()`.

    Format: NumPy .npy version 1.0 (numpy.lib.format, NEP 1): the magic ``\\x93NUMPY``,
    version 1.0, a little-endian uint16 header length, then an ASCII dict
    ``{'descr': ..., 'fortran_order': False, 'shape': (n,), }`` padded with spaces and
    ended by a newline so that the data start at byte `HEADER` (128, a multiple of 64).
    The header is written at open (shape (0,)) and rewritten in place, same length,
    after the data it counts have reached the file at each `flush()`: after a crash
    `np.load` returns the values up to the last flush (later bytes are ignored).
    """

    HEADER = 128

    def __init__(self, path: Path, dtype: str):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.n = 0
        self.n_flushed = 0
        self.f = open(self.path, "wb")
        self.f.write(self._header(0))
        self.f.flush()

    def _header(self, n: int) -> bytes:
        body = "{'descr': '%s', 'fortran_order': False, 'shape': (%d,), }" % (self.dtype.str, n)
        prefix = b"\x93NUMPY\x01\x00"
        hlen = self.HEADER - len(prefix) - 2
        if len(body) + 1 > hlen:
            raise ValueError(f"{n} values do not fit a {self.HEADER}-byte .npy header")
        return prefix + np.uint16(hlen).astype("<u2").tobytes() + (body.ljust(hlen - 1) + "\n").encode("latin1")

    def append(self, values: np.ndarray) -> None:
        arr = np.ascontiguousarray(values, dtype=self.dtype)
        self.f.write(arr.tobytes())
        self.n += arr.size

    def resync(self, n: int | None = None) -> int:
        """Count what the file holds (a write cut by Ctrl-C may have left part of a block), keep `n` at most."""
        self.f.flush()
        held = (self.f.tell() - self.HEADER) // self.dtype.itemsize
        self.n = held if n is None else min(held, int(n))
        if self.f.tell() != self.HEADER + self.n * self.dtype.itemsize:
            self.f.truncate(self.HEADER + self.n * self.dtype.itemsize)
            self.f.seek(0, os.SEEK_END)
        return self.n

    def flush(self) -> None:
        """Data to the file first, then the header that counts them."""
        if self.f.closed:
            return
        self.f.flush()
        if self.n != self.n_flushed:
            self.f.seek(0)
            self.f.write(self._header(self.n))
            self.f.flush()
            self.f.seek(0, os.SEEK_END)
            self.n_flushed = self.n

    def close(self) -> None:
        if self.f.closed:
            return
        try:
            self.flush()
        finally:
            self.f.close()


def _check_bit_volts(bit_volts, n_expected: int | None = None) -> np.ndarray:
    bv = np.asarray(bit_volts, np.float64).reshape(-1)
    if bv.size < 1 or (n_expected is not None and bv.size != n_expected):
        raise UserError(f"writer: {bv.size} bit_volts values for {n_expected} channels")
    if not np.all(np.isfinite(bv)) or np.any(bv <= 0):
        raise UserError("writer: bit_volts (µV per stored unit) must be finite and > 0 for every channel")
    return bv


class EphysWriter:
    """Common interface of the three writers.

    `path` is the final name (the recording folder, the `.bin`, the `.dat`); until
    `close()` the data are at `partial` (see `livedenoise.io.atomic`). `n_written`
    counts the samples written.
    """

    path: Path
    n_written: int = 0
    flush_every_s: float | None = FLUSH_EVERY_S
    _out: atomic.Output
    _closed: bool = True
    _last_flush: float = 0.0

    @property
    def partial(self) -> Path:
        """Where the data are until `close()` renames them (kept there after an interruption or a crash)."""
        return self._out.partial

    def write(self, uv: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Make the files final (complete); called once by `close()` before the rename."""
        self._flush()

    def _sync(self) -> None:
        """Make `n_written` what the files hold, in whole samples (a write interrupted by Ctrl-C may have
        reached the file in part, or not have been counted): the files are cut to whole samples."""

    def _open_failed(self, exc: OSError, what: str) -> UserError:
        """Opening failed: close what was opened, leave no partial output; the one-line error to raise."""
        self._release()
        self._out.interrupted(False)
        return UserError(f"cannot write {what}: {exc.strerror or exc}")

    def _release(self) -> None:
        raise NotImplementedError

    def _progress(self) -> str:
        return f"{self.n_written} samples"

    def flush(self) -> None:
        """Make everything written so far readable from the files (partial name) as they are."""
        if self._closed:
            return
        self._flush()
        self._last_flush = time.monotonic()

    def _auto_flush(self) -> None:
        if self.flush_every_s is not None and time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def close(self) -> None:
        """Finish the files and give them their final name (see `livedenoise.io.atomic.Outputs` for deferral)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sync()
            self._finish()
        except BaseException:
            self._release()
            self._out.interrupted(self.n_written > 0)
            raise
        self._release()
        self._out.complete()

    def abort(self) -> None:
        """Stop writing: what was written stays readable under `partial`; the final name is untouched."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sync()
            self._flush()
        except Exception:
            pass
        finally:
            self._release()
            self._out.interrupted(self.n_written > 0)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _next_recording(experiment: Path) -> int:
    nums = [int(m.group(1)) for p in experiment.glob("recording*") if (m := re.fullmatch(r"recording(\d+)", p.name))]
    return max(nums, default=0) + 1


class BinaryWriter(EphysWriter):
    """Open Ephys Binary format, one continuous stream.

    `out` is the session folder (made if absent; if it already holds this Record Node,
    the recording is added as the next `recordingN`). `bit_volts` (channels,) µV per
    stored int16 unit, finite and > 0; `sample_rate` Hz. Format: Open Ephys GUI 0.6
    Binary format (structure.oebin JSON; int16 little-endian sample-interleaved
    `continuous.dat`; `.npy` sample numbers (int64) and timestamps (float64 s)).
    Errors: UserError for impossible settings or an `out` that is a file.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        sample_rate: float,
        bit_volts: Sequence[float],
        channel_names: Sequence[str] | None = None,
        stream_name: str = "ProbeA-AP",
        source_processor_name: str = "livedenoise",
        source_processor_id: int = 100,
        record_node_id: int = 101,
        first_sample: int = 0,
        description: str = "",
        flush_every_s: float | None = FLUSH_EVERY_S,
        settings: str | os.PathLike | None = None,
    ):
        self.session = Path(out)
        if self.session.exists() and not self.session.is_dir():
            raise UserError(f"{self.session} is a file; an Open Ephys recording is written into a folder")
        self.bit_volts = _check_bit_volts(bit_volts)
        n_ch = len(self.bit_volts)
        self.n_channels = n_ch
        self.sample_rate = float(sample_rate)
        if not math.isfinite(self.sample_rate) or self.sample_rate <= 0:
            raise UserError(f"writer: sample rate must be finite and > 0 (got {sample_rate})")
        self.channel_names = list(channel_names) if channel_names else [f"CH{k + 1}" for k in range(n_ch)]
        if len(self.channel_names) != n_ch:
            raise UserError(f"writer: {len(self.channel_names)} channel names for {n_ch} channels")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stream_name) or "stream"
        self.folder_name = f"{source_processor_name.replace(' ', '_')}-{source_processor_id}.{safe}"
        self.stream_name = stream_name
        self.flush_every_s = flush_every_s
        experiment = Path(f"Record Node {record_node_id}") / "experiment1"
        rel = experiment / f"recording{_next_recording(self.session / experiment)}"
        settings_dst = None
        if settings is not None:  # the acquisition's settings.xml (probe geometry): readers find it at the Record Node
            settings = Path(settings)
            if not settings.is_file():
                raise UserError(f"{settings}: no such settings file")
            settings_dst = Path(f"Record Node {record_node_id}") / "settings.xml"
            there = self.session / settings_dst
            if there.exists():
                if not (there.is_file() and filecmp.cmp(settings, there, shallow=False)):
                    raise UserError(f"{there} exists and differs from {settings}; choose a new folder")
                settings_dst = None
        self.path = self.session / rel
        """The final recording folder (where structure.oebin is once closed)."""
        self._out = atomic.Output(self.session, folder=True, owner=self, progress=self._progress)
        self._out.prepare()
        self._dir = self._out.partial / rel
        cont = self._dir / "continuous" / self.folder_name
        self.next_sample = int(first_sample)
        self.n_written = 0
        self.info = {
            "GUI version": GUI_VERSION,
            "livedenoise version": __version__,
            "description": description,
            "continuous": [
                {
                    "folder_name": self.folder_name + "/",
                    "sample_rate": self.sample_rate,
                    "source_processor_name": source_processor_name,
                    "source_processor_id": int(source_processor_id),
                    "stream_name": stream_name,
                    "recorded_processor": source_processor_name,
                    "recorded_processor_id": int(source_processor_id),
                    "num_channels": n_ch,
                    "channels": [
                        {
                            "channel_name": name,
                            "description": "",
                            "identifier": "",
                            "history": "livedenoise",
                            "bit_volts": float(bv),
                            "units": "uV",
                        }
                        for name, bv in zip(self.channel_names, self.bit_volts)
                    ],
                }
            ],
            "events": [],
            "spikes": [],
        }
        try:
            cont.mkdir(parents=True)
            (self._dir / "events").mkdir()
            if settings_dst is not None:
                shutil.copy2(settings, self._out.partial / settings_dst)
            self.dat = open(cont / "continuous.dat", "wb")
            self.sn = NpyAppender(cont / "sample_numbers.npy", "<i8")
            self.ts = NpyAppender(cont / "timestamps.npy", "<f8")
            self._npys = [(self.sn, lambda sn: sn), (self.ts, lambda sn: sn / self.sample_rate)]
            # until close(), the oebin says the recording is still being written (readers: read to the last flush)
            self._write_oebin(complete=False)
            # what the GUI writes beside structure.oebin (some readers, e.g. neo/SpikeInterface, look for it)
            (self._dir / "sync_messages.txt").write_text(
                f"Software Time (milliseconds since midnight Jan 1st 1970 UTC): {int(time.time() * 1000)}\r\n"
                f"Start Time for {source_processor_name} ({source_processor_id}) - {stream_name} @ "
                f"{int(round(self.sample_rate))} Hz: {int(first_sample)}\r\n"
            )
        except OSError as exc:
            raise self._open_failed(exc, f"the recording in {self.session}") from None
        self._closed = False
        self._last_flush = time.monotonic()

    def _write_oebin(self, complete: bool) -> None:
        info = dict(self.info)
        if not complete:
            info[PARTIAL_KEY] = True
        atomic.write_text_atomic(self._dir / "structure.oebin", json.dumps(info, indent=2))

    def write(self, uv: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        uv = np.asarray(uv)
        if uv.ndim != 2 or uv.shape[1] != self.n_channels:
            raise ValueError(f"expected (samples, {self.n_channels}) got {uv.shape}")
        self.write_raw(quantise(uv, self.bit_volts), sample_numbers)

    def write_raw(self, raw: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        """Append (samples, channels) int16 as stored, with their sample numbers (default: consecutive)."""
        if self._closed:
            raise ValueError(f"{self.path}: write after close")
        n = raw.shape[0]
        if sample_numbers is None:
            sample_numbers = np.arange(self.next_sample, self.next_sample + n, dtype=np.int64)
        sample_numbers = np.asarray(sample_numbers, np.int64)
        if sample_numbers.shape != (n,):
            raise ValueError(f"{len(sample_numbers)} sample numbers for {n} samples")
        columns = [values(sample_numbers) for _, values in self._npys]  # before anything is written
        self.dat.write(np.ascontiguousarray(raw, "<i2").tobytes())
        for (npy, _), col in zip(self._npys, columns):
            npy.append(col)
        if n:
            self.next_sample = int(sample_numbers[-1]) + 1
        self.n_written += n
        self._auto_flush()

    def _sync(self) -> None:
        row = 2 * self.n_channels
        self.dat.flush()
        n = min([self.dat.tell() // row] + [npy.resync() for npy, _ in self._npys])
        for npy, _ in self._npys:
            npy.resync(n)
        if self.dat.tell() != n * row:
            self.dat.truncate(n * row)
            self.dat.seek(0, os.SEEK_END)
        self.n_written = n

    def _flush(self) -> None:
        # continuous.dat first, then the .npy counts: after a crash the counts never exceed the data
        self.dat.flush()
        for npy, _ in self._npys:
            npy.flush()

    def _finish(self) -> None:
        self._flush()
        self._write_oebin(complete=True)

    def _release(self) -> None:
        for f in [getattr(self, "dat", None)] + [npy for npy, _ in getattr(self, "_npys", [])]:
            if f is not None:
                try:
                    f.close()
                except Exception:
                    pass


_RECORDING_LEVELS = (("recording", re.compile(r"recording\d+")), ("experiment", re.compile(r"experiment\d+")),
                     ("Record Node", re.compile(r"Record Node \d+")))
PER_SAMPLE_FILES = ("sample_numbers.npy", "timestamps.npy", "synchronized_timestamps.npy")
"""The .npy files of an Open Ephys stream folder with one value per sample (written along with the samples)."""


def session_layout(recording: str | os.PathLike) -> tuple[Path, list[Path]]:
    """Where a recording folder sits in the GUI's layout: (its path inside the session, settings files to copy).

    The path keeps the names the GUI gave (`Record Node 101/experiment2/recording3`) as far
    up as they follow the layout; a recording folder not named `recordingN` becomes
    `Record Node 101/experiment1/recording1`. The settings files are the `settings*.xml`
    of the levels above it (the Record Node's `settings.xml`, `settings_2.xml`...; the
    session's, for layouts without Record Nodes).
    """
    rec = Path(recording).resolve()
    if not _RECORDING_LEVELS[0][1].fullmatch(rec.name):
        return Path("Record Node 101", "experiment1", "recording1"), []
    parts, here = [rec.name], rec
    for _, pattern in _RECORDING_LEVELS[1:]:
        if not pattern.fullmatch(here.parent.name):
            break
        here = here.parent
        parts.insert(0, here.name)
    root = here.parent
    settings = []
    level = rec.parent
    while True:
        settings += sorted(q for q in level.glob("settings*.xml") if q.is_file())
        if level == root:
            break
        level = level.parent
    return Path(*parts), settings


class OpenEphysCopyWriter(BinaryWriter):
    """A complete copy of an Open Ephys Binary recording with one continuous stream rewritten.

    `OUT/<the recording's place in its session>/`, e.g. `OUT/Record Node 101/experiment1/recording2/`:
    the input's names and numbering are kept. Copied byte for byte: everything in the
    recording folder (`events/` -- TTL, messages --, `sync_messages.txt`, the other
    continuous streams, spikes) and the `settings*.xml` above it (`session_layout`).
    The stream's folder keeps its name; its `continuous.dat` holds what `write()` gets,
    and its per-sample files are those of the input's layout (GUI 0.6+:
    `sample_numbers.npy` + `timestamps.npy` s; 0.4/0.5: `timestamps.npy` int64 sample
    numbers, `synchronized_timestamps.npy` s): sample numbers as written (they must be the
    input's, in order; never rebased), seconds copied from the input at the same samples.
    `structure.oebin` is the input's plus a `livedenoise` entry saying what was done.

    Errors: UserError when OUT already holds this recording, holds a different
    settings file where one is copied, or is a file (nothing is ever overwritten).
    """

    def __init__(self, rec: Recording, out: str | os.PathLike, description: str = "",
                 flush_every_s: float | None = FLUSH_EVERY_S):
        self.session = Path(out)
        if self.session.exists() and not self.session.is_dir():
            raise UserError(f"{self.session} is a file; an Open Ephys recording is written into a folder")
        src = Path(rec.path)
        s = dict(rec.meta.get("stream_info") or {})
        info = json.loads(json.dumps(rec.meta.get("oebin") or {}))  # a deep copy
        info.pop(PARTIAL_KEY, None)
        self.folder_name = str(s.get("folder_name", "")).strip("/")
        if not self.folder_name or not (src / "continuous" / self.folder_name).is_dir():
            raise UserError(f"{src}: the stream to copy has no folder under continuous/")
        rel, settings = session_layout(src)
        self.path = self.session / rel
        """The final recording folder (where structure.oebin is once closed)."""
        if self.path.exists():
            raise UserError(f"{self.path} already exists; choose a new folder for the denoised recording "
                            "(nothing is overwritten)")
        root = src.resolve()
        for _ in rel.parts:
            root = root.parent
        copies = []
        for f in settings:
            dst = self.session / f.relative_to(root)
            if dst.exists():
                if dst.is_file() and filecmp.cmp(f, dst, shallow=False):
                    continue  # the same session's settings, from the copy of another of its recordings
                raise UserError(f"{dst} exists and differs from the input's {f.name}; choose a new folder for the "
                                "denoised recording")
            copies.append((f, f.relative_to(root)))
        self.bit_volts = _check_bit_volts(rec.bit_volts)
        self.n_channels = len(self.bit_volts)
        self.sample_rate = float(rec.sample_rate)
        self.channel_names = list(rec.channel_names)
        self.stream_name = rec.stream_name
        self.flush_every_s = flush_every_s
        self.next_sample = int(rec.sample_numbers[0]) if rec.n_samples else 0
        self.n_written = 0
        self._src_numbers = np.asarray(rec.sample_numbers)
        self._pos: int | None = None  # input position of the next sample written
        info["livedenoise"] = {"version": __version__, "stream": self.folder_name + "/", "description": description,
                               "source": str(src)}
        self.info = info
        self._out = atomic.Output(self.session, folder=True, owner=self, progress=self._progress)
        self._out.prepare()
        base = self._out.partial
        self._dir = base / rel
        src_stream = src / "continuous" / self.folder_name
        cont = self._dir / "continuous" / self.folder_name
        self._npys = []
        try:
            for f, r in copies:
                (base / r).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, base / r)
            shutil.copytree(src, self._dir, ignore=self._ignore(src, src_stream), symlinks=True,
                            dirs_exist_ok=True)
            cont.mkdir(parents=True, exist_ok=True)
            self.dat = open(cont / "continuous.dat", "wb")
            for name in PER_SAMPLE_FILES:
                if (src_stream / name).is_file():
                    self._npys.append(self._per_sample(src_stream / name, cont / name, rec))
            self._write_oebin(complete=False)
        except OSError as exc:
            raise self._open_failed(exc, f"the recording in {self.session}") from None
        self._closed = False
        self._last_flush = time.monotonic()

    @staticmethod
    def _ignore(src: Path, src_stream: Path):
        """copytree: everything but structure.oebin (rewritten) and the stream's data and per-sample files."""
        def ignore(folder: str, names: list[str]) -> set[str]:
            here = Path(folder)
            if here == src:
                return {n for n in names if n == "structure.oebin" or n.startswith(".structure.oebin")}
            if here == src_stream:
                return {n for n in names if n == "continuous.dat" or n in PER_SAMPLE_FILES}
            return set()
        return ignore

    def _per_sample(self, src: Path, dst: Path, rec: Recording):
        """(appender, values for the written sample numbers) for one per-sample file of the input's stream."""
        try:
            arr = np.load(src, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{src}: not a readable .npy file ({exc})") from None
        npy = NpyAppender(dst, arr.dtype.str)
        if src.name == "sample_numbers.npy" or (src.name == "timestamps.npy" and arr.dtype.kind in "iu"):
            return npy, lambda sn: sn  # what the sample numbers are (GUI 0.4/0.5: timestamps.npy)

        def seconds(sn, arr=arr):
            a = self._locate(sn)
            got = np.asarray(arr[a:a + len(sn)])
            if len(got) < len(sn):  # the input's file is shorter (a partial input): its rate from here on
                got = np.concatenate([got, sn[len(got):] / self.sample_rate])
            return got
        return npy, seconds

    def _locate(self, sn: np.ndarray) -> int:
        """Input position of the block with sample numbers `sn` (the next one, or found once)."""
        src = self._src_numbers
        n = len(sn)
        if not n:
            return self._pos or 0
        pos = self.n_written if self._pos is None else self._pos
        if not np.array_equal(src[pos:pos + n], sn):
            hits = np.flatnonzero(np.asarray(src) == sn[0])
            pos = next((int(h) for h in hits if np.array_equal(src[h:h + n], sn)), None)
            if pos is None:
                raise ValueError(f"{self.path}: sample numbers {sn[0]}..{sn[-1]} are not the input's; a copy keeps "
                                 "the input's samples in order")
        return pos

    def write_raw(self, raw: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        """Append (samples, channels) int16; `sample_numbers` (default: the input's next ones) must be the input's."""
        n = raw.shape[0]
        if sample_numbers is None:
            a = self.n_written if self._pos is None else self._pos
            sample_numbers = np.asarray(self._src_numbers[a:a + n], np.int64)
        sample_numbers = np.asarray(sample_numbers, np.int64)
        pos = self._locate(sample_numbers) if n else None
        super().write_raw(raw, sample_numbers)
        if pos is not None:
            self._pos = pos + n

    def _write_oebin(self, complete: bool) -> None:
        info = dict(self.info)
        if not complete:
            info[PARTIAL_KEY] = True
        atomic.write_text_atomic(self._dir / "structure.oebin", json.dumps(info, indent=2))


class DatWriter(EphysWriter):
    """Flat int16 sample-interleaved file (little-endian, (samples, channels) row-major).

    Errors: UserError when `path` does not end in .dat or cannot be created.
    """

    suffix = ".dat"
    companions: tuple[str, ...] = ()

    def __init__(self, path: str | os.PathLike, bit_volts: Sequence[float], flush_every_s: float | None = FLUSH_EVERY_S):
        self.path = Path(path)
        if self.path.suffix != self.suffix:
            raise UserError(f"output {self.path} must end in {self.suffix}")
        self.bit_volts = _check_bit_volts(bit_volts)
        self.n_written = 0
        self.flush_every_s = flush_every_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot make the output folder {self.path.parent}: {exc.strerror or exc}") from None
        self._out = atomic.Output(self.path, companions=self.companions, owner=self, progress=self._progress)
        self._out.prepare()
        try:
            self.f = open(self._out.partial, "wb")
            self._opened()
        except OSError as exc:
            raise self._open_failed(exc, str(self.path)) from None
        self._closed = False
        self._last_flush = time.monotonic()

    def _opened(self) -> None:
        """Hook: companions written at open."""

    def write(self, uv: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        self.write_raw(quantise(uv, self.bit_volts), sample_numbers)

    def write_raw(self, raw: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: write after close")
        raw = np.asarray(raw)
        if raw.ndim != 2 or raw.shape[1] != len(self.bit_volts):
            raise ValueError(f"expected (samples, {len(self.bit_volts)}) got {raw.shape}")
        self.f.write(np.ascontiguousarray(raw, "<i2").tobytes())
        self.n_written += raw.shape[0]
        self._auto_flush()

    def _sync(self) -> None:
        row = 2 * len(self.bit_volts)
        self.f.flush()
        n = self.f.tell() // row
        if self.f.tell() != n * row:
            self.f.truncate(n * row)
            self.f.seek(0, os.SEEK_END)
        self.n_written = n

    def _flush(self) -> None:
        self.f.flush()

    def _release(self) -> None:
        f = getattr(self, "f", None)
        if f is not None and not f.closed:
            try:
                f.close()
            except Exception:
                pass


META_TILDE = ("imroTbl", "snsChanMap", "snsGeomMap", "snsShankMap", "muxTbl")
"""SpikeGLX .meta keys written with a leading `~` (the reader strips it)."""


class SpikeGLXWriter(DatWriter):
    """A SpikeGLX `.bin` with a copy of the source `.meta`, changed only where this file differs.

    Format: SpikeGLX binary (int16 little-endian, sample-interleaved, channel order of
    the `.meta`) and its `key=value` metadata (SpikeGLX Metadata_30). Given the source
    `.meta` text (`meta_text`, as `writer_like` does), every line is kept as it is --
    order, `~` keys, line ends -- except `fileSizeBytes` and `fileTimeSecs` (when the
    sample count differs), `firstSample` (when the first sample written is another),
    `fileSHA1` (the SHA-1 of the new `.bin`, uppercase hex as SpikeGLX writes it), and a
    `livedenoiseNote` line added with `note`. Without it the `meta` dict is written.
    The partial `.meta` is rewritten at every flush, so a partial pair reads back up to it.
    Errors: UserError when `path` does not end in .bin.
    """

    suffix = ".bin"
    companions = (".meta",)

    def __init__(self, path: str | os.PathLike, bit_volts: Sequence[float], meta: dict[str, str], sample_rate: float,
                 pass_through: Sequence[int] = (), flush_every_s: float | None = FLUSH_EVERY_S,
                 meta_text: str | None = None, note: str = ""):
        if Path(path).suffix != ".bin":
            raise UserError(f"SpikeGLX output {path} must end in .bin (its .meta is written beside it)")
        self.meta = dict(meta)
        self.meta_text = meta_text
        self.note = " ".join(note.split())
        self.sample_rate = float(sample_rate)
        if not math.isfinite(self.sample_rate) or self.sample_rate <= 0:
            raise UserError(f"writer: sample rate must be finite and > 0 (got {sample_rate})")
        self._sha1 = hashlib.sha1()
        self._hashed = 0
        self._first_sample: int | None = None
        super().__init__(path, bit_volts, flush_every_s=flush_every_s)

    def _opened(self) -> None:
        self._write_meta()

    def write_raw(self, raw: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        if self._first_sample is None and sample_numbers is not None and len(sample_numbers):
            self._first_sample = int(sample_numbers[0])
        raw = np.ascontiguousarray(raw, "<i2")
        super().write_raw(raw, sample_numbers)
        self._sha1.update(raw.tobytes())
        self._hashed += raw.nbytes

    def _changes(self, complete: bool) -> dict[str, str | None]:
        """key -> new value (None: remove) of what this file changes in the source's `.meta`."""
        n_ch = len(self.bit_volts)
        size = self.n_written * n_ch * 2
        ch: dict[str, str | None] = {GLX_PARTIAL_KEY: None if complete else "true"}
        if str(self.meta.get("nSavedChans", "")).strip() != str(n_ch):
            ch["nSavedChans"] = str(n_ch)
        if str(self.meta.get("fileSizeBytes", "")).strip() != str(size):
            ch["fileSizeBytes"] = str(size)
            ch["fileTimeSecs"] = f"{self.n_written / self.sample_rate:.6f}"
        if self._first_sample is not None and str(self.meta.get("firstSample", "0")).strip() != str(self._first_sample):
            ch["firstSample"] = str(self._first_sample)
        # the data changed: the source's checksum no longer applies; the new file's, once complete
        ch["fileSHA1"] = self._sha1.hexdigest().upper() if complete and self._hashed == size else None
        if self.note:
            ch["livedenoiseNote"] = self.note
        return ch

    def _write_meta(self, complete: bool = False) -> None:
        changes = self._changes(complete)
        if self.meta_text is not None:
            nl = "\r\n" if "\r\n" in self.meta_text else "\n"
            lines, done = [], set()
            for line in self.meta_text.splitlines():
                key = line.split("=", 1)[0].strip().lstrip("~") if "=" in line else None
                if key in changes:
                    done.add(key)
                    if changes[key] is not None:
                        lines.append(f"{line.split('=', 1)[0]}={changes[key]}")
                    continue
                lines.append(line)
            lines += [f"{k}={v}" for k, v in changes.items() if k not in done and v is not None]
            data = (nl.join(lines) + nl).encode("latin-1", errors="replace")
        else:
            meta = dict(self.meta)
            for k, v in changes.items():
                if v is None:
                    meta.pop(k, None)
                else:
                    meta[k] = v
            text = "\n".join(f"{'~' if k in META_TILDE else ''}{k}={v}" for k, v in meta.items()) + "\n"
            data = text.encode("utf-8")
        _write_bytes_atomic(self._out.partial.with_suffix(".meta"), data)

    def _flush(self) -> None:
        super()._flush()
        self._write_meta()

    def _finish(self) -> None:
        super()._flush()
        self._write_meta(complete=True)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace a small file in one rename (as `atomic.write_text_atomic`, for bytes kept as they are)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def writer_like(rec: Recording, out: str | os.PathLike, description: str = "") -> EphysWriter:
    """A writer producing the same format as `rec` at `out` (nothing is created before `out` is checked).

    Open Ephys: `OpenEphysCopyWriter`, a complete copy of the recording (events, sync
    messages, settings, other streams, sample numbers) with `rec`'s stream rewritten, at
    the recording's own place (`OUT/Record Node 101/experiment1/recordingN/`). SpikeGLX:
    `SpikeGLXWriter` with the source `.meta` kept line for line but for what changes.
    Flat: `DatWriter`. Errors: UserError when `out` is (or would overwrite) the input,
    or does not suit the format (SpikeGLX: `.bin`; flat: `.dat`; Open Ephys: a folder
    neither inside nor holding the input recording, not already holding that recording).
    """
    out = Path(out)
    src = Path(rec.path)
    if _same(out, src) or (rec.format == "spikeglx" and _same(out.with_suffix(".meta"), src.with_suffix(".meta"))):
        raise UserError(f"output {out} is the input; choose another name (the input is never overwritten)")
    if rec.format == "openephys":
        if _inside(src, out):
            raise UserError(f"output {out} holds the input recording; choose a new folder for the denoised recording")
        if _inside(out, src):
            raise UserError(f"output {out} is inside the input recording {src}; choose a folder outside it")
        return OpenEphysCopyWriter(rec, out, description=description)
    for p in (out, out.with_suffix(".meta")) if rec.format == "spikeglx" else (out,):
        if p.is_dir():
            raise UserError(f"output {p} is a folder; give a file name ({out.suffix or '.dat'}) for the denoised recording")
    if rec.format == "spikeglx":
        if out.suffix != ".bin":
            raise UserError(f"output {out}: a SpikeGLX input is written as a .bin (its .meta beside it)")
        meta_path = src.with_suffix(".meta")
        try:
            text = meta_path.read_bytes().decode("latin-1")  # byte for byte back (the writer encodes latin-1)
        except OSError as exc:
            raise UserError(f"{meta_path}: cannot read ({exc.strerror or exc})") from None
        return SpikeGLXWriter(out, rec.bit_volts, rec.meta.get("meta", {}), rec.sample_rate, meta_text=text,
                              note=description)
    if out.suffix != ".dat":
        raise UserError(f"output {out}: a .dat input is written as a .dat file")
    return DatWriter(out, rec.bit_volts)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    try:
        child, parent = child.resolve(), parent.resolve()
    except OSError:
        return False
    return child == parent or parent in child.parents


def write_openephys(
    out: str | os.PathLike,
    uv: np.ndarray,
    sample_rate: float,
    bit_volts: Sequence[float] | float = 0.195,
    channel_names: Sequence[str] | None = None,
    sample_numbers: np.ndarray | None = None,
    stream_name: str = "ProbeA-AP",
    chunk: int = 65536,
    **kw,
) -> Path:
    """Write a whole (samples, channels) µV array as a Binary recording; returns the recording folder."""
    uv = np.asarray(uv)
    bv = np.full(uv.shape[1], float(bit_volts)) if np.isscalar(bit_volts) else np.asarray(bit_volts, np.float64)
    first = int(sample_numbers[0]) if sample_numbers is not None and len(sample_numbers) else 0
    w = BinaryWriter(out, sample_rate, bv, channel_names, stream_name=stream_name, first_sample=first, **kw)
    with w:
        for a in range(0, uv.shape[0], chunk):
            sn = None if sample_numbers is None else sample_numbers[a:a + chunk]
            w.write(uv[a:a + chunk], sn)
    return w.path


__all__ = ["BinaryWriter", "OpenEphysCopyWriter", "session_layout", "DatWriter", "SpikeGLXWriter", "writer_like",
           "write_openephys", "quantise", "NpyAppender", "FLUSH_EVERY_S"]

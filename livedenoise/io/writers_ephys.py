"""Owns writing extracellular recordings: Open Ephys Binary, SpikeGLX .bin/.meta, flat .dat.

Writers stream: `write(block_uv)` appends (samples, channels) microvolts,
quantised to int16 with the channel's bit_volts; `close()` finishes the files.
Open Ephys output is a session folder a GUI user would recognise:

    OUT/Record Node 101/experiment1/recording1/structure.oebin
    OUT/Record Node 101/experiment1/recording1/continuous/<folder>/continuous.dat
                                                               .../sample_numbers.npy
                                                               .../timestamps.npy

readable by `open_ephys.analysis.Session(OUT)`, SpikeInterface and our readers.
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

import json
import math
import os
import re
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
            self.dat = open(cont / "continuous.dat", "wb")
            self.sn = NpyAppender(cont / "sample_numbers.npy", "<i8")
            self.ts = NpyAppender(cont / "timestamps.npy", "<f8")
            # until close(), the oebin says the recording is still being written (readers: read to the last flush)
            self._write_oebin(complete=False)
            # what the GUI writes beside structure.oebin (some readers, e.g. neo/SpikeInterface, look for it)
            (self._dir / "sync_messages.txt").write_text(
                f"Software Time (milliseconds since midnight Jan 1st 1970 UTC): {int(time.time() * 1000)}\r\n"
                f"Start Time for {source_processor_name} ({source_processor_id}) - {stream_name} @ "
                f"{int(round(self.sample_rate))} Hz: {int(first_sample)}\r\n"
            )
        except OSError as exc:
            self._release()
            self._out.interrupted(False)
            raise UserError(f"cannot write the recording in {self.session}: {exc.strerror or exc}") from None
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
        self.dat.write(np.ascontiguousarray(raw, "<i2").tobytes())
        self.sn.append(sample_numbers)
        self.ts.append(sample_numbers / self.sample_rate)
        if n:
            self.next_sample = int(sample_numbers[-1]) + 1
        self.n_written += n
        self._auto_flush()

    def _sync(self) -> None:
        row = 2 * self.n_channels
        self.dat.flush()
        n = min(self.dat.tell() // row, self.sn.resync(), self.ts.resync())
        self.sn.resync(n)
        self.ts.resync(n)
        if self.dat.tell() != n * row:
            self.dat.truncate(n * row)
            self.dat.seek(0, os.SEEK_END)
        self.n_written = n

    def _flush(self) -> None:
        # continuous.dat first, then the .npy counts: after a crash the counts never exceed the data
        self.dat.flush()
        self.sn.flush()
        self.ts.flush()

    def _finish(self) -> None:
        self._flush()
        self._write_oebin(complete=True)

    def _release(self) -> None:
        for f in (getattr(self, "dat", None), getattr(self, "sn", None), getattr(self, "ts", None)):
            if f is not None:
                try:
                    f.close()
                except Exception:
                    pass


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
            self._release()
            self._out.interrupted(False)
            raise UserError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._closed = False
        self._last_flush = time.monotonic()

    def _opened(self) -> None:
        """Hook: companions written at open."""

    def write(self, uv: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        self.write_raw(quantise(uv, self.bit_volts))

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
    """A SpikeGLX `.bin` with a copy of the source `.meta` (fileSizeBytes and fileTimeSecs of this file).

    Format: SpikeGLX binary (int16 little-endian, sample-interleaved, channel order of
    the `.meta`) and its `key=value` metadata (SpikeGLX Metadata_30). The partial
    `.meta` is rewritten at every flush, so a partial pair reads back up to it.
    Errors: UserError when `path` does not end in .bin.
    """

    suffix = ".bin"
    companions = (".meta",)

    def __init__(self, path: str | os.PathLike, bit_volts: Sequence[float], meta: dict[str, str], sample_rate: float,
                 pass_through: Sequence[int] = (), flush_every_s: float | None = FLUSH_EVERY_S):
        if Path(path).suffix != ".bin":
            raise UserError(f"SpikeGLX output {path} must end in .bin (its .meta is written beside it)")
        self.meta = dict(meta)
        self.sample_rate = float(sample_rate)
        if not math.isfinite(self.sample_rate) or self.sample_rate <= 0:
            raise UserError(f"writer: sample rate must be finite and > 0 (got {sample_rate})")
        super().__init__(path, bit_volts, flush_every_s=flush_every_s)

    def _opened(self) -> None:
        self._write_meta()

    def _write_meta(self, complete: bool = False) -> None:
        meta = dict(self.meta)
        meta.pop(GLX_PARTIAL_KEY, None)
        if not complete:  # readers: read up to fileSizeBytes, the last flush
            meta[GLX_PARTIAL_KEY] = "true"
        n_ch = len(self.bit_volts)
        meta["nSavedChans"] = str(n_ch)
        meta["fileSizeBytes"] = str(self.n_written * n_ch * 2)
        meta["fileTimeSecs"] = f"{self.n_written / self.sample_rate:.6f}"
        meta.pop("fileSHA1", None)  # the data changed: the source's checksum no longer applies
        lines = [f"{'~' if k in META_TILDE else ''}{k}={v}" for k, v in meta.items()]
        atomic.write_text_atomic(self._out.partial.with_suffix(".meta"), "\n".join(lines) + "\n")

    def _flush(self) -> None:
        super()._flush()
        self._write_meta()

    def _finish(self) -> None:
        super()._flush()
        self._write_meta(complete=True)


def writer_like(rec: Recording, out: str | os.PathLike, description: str = "") -> EphysWriter:
    """A writer producing the same format as `rec` at `out` (nothing is created before `out` is checked).

    Errors: UserError when `out` is (or would overwrite) the input, or does not suit the format
    (SpikeGLX: `.bin`; flat: `.dat`; Open Ephys: a folder not inside the input recording).
    """
    out = Path(out)
    src = Path(rec.path)
    if _same(out, src) or (rec.format == "spikeglx" and _same(out.with_suffix(".meta"), src.with_suffix(".meta"))):
        raise UserError(f"output {out} is the input; choose another name (the input is never overwritten)")
    if rec.format == "openephys":
        if _inside(src, out):
            raise UserError(f"output {out} holds the input recording; choose a new folder for the denoised recording")
        s = rec.meta.get("stream_info", {})
        return BinaryWriter(
            out,
            rec.sample_rate,
            rec.bit_volts,
            rec.channel_names,
            stream_name=str(s.get("stream_name", rec.stream_name or "stream")),
            source_processor_name=str(s.get("source_processor_name", "livedenoise")),
            source_processor_id=int(s.get("source_processor_id", 100)),
            first_sample=int(rec.sample_numbers[0]) if rec.n_samples else 0,
            description=description,
        )
    if rec.format == "spikeglx":
        if out.suffix != ".bin":
            raise UserError(f"output {out}: a SpikeGLX input is written as a .bin (its .meta beside it)")
        return SpikeGLXWriter(out, rec.bit_volts, rec.meta.get("meta", {}), rec.sample_rate)
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


__all__ = ["BinaryWriter", "DatWriter", "SpikeGLXWriter", "writer_like", "write_openephys", "quantise", "NpyAppender",
           "FLUSH_EVERY_S"]

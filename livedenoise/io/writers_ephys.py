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
(default: continuing from the last one); nothing is ever padded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from livedenoise import __version__
from livedenoise.errors import UserError
from livedenoise.io.readers_ephys import Recording

GUI_VERSION = "0.6.7"
"""Written into structure.oebin; 0.6+ tells readers to expect sample_numbers.npy."""


def quantise(uv: np.ndarray, bit_volts: np.ndarray) -> np.ndarray:
    """µV -> int16 with rounding and clipping (never wraps around)."""
    q = np.rint(np.asarray(uv, np.float64) / np.asarray(bit_volts, np.float64))
    return np.clip(q, -32768, 32767).astype("<i2")


class NpyAppender:
    """A 1-D .npy file written incrementally: the header is reserved and fixed at close."""

    HEADER = 128

    def __init__(self, path: Path, dtype: str):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.n = 0
        self.f = open(self.path, "wb")
        self.f.write(b"\0" * self.HEADER)

    def append(self, values: np.ndarray) -> None:
        arr = np.ascontiguousarray(values, dtype=self.dtype)
        self.f.write(arr.tobytes())
        self.n += arr.size

    def close(self) -> None:
        if self.f.closed:
            return
        descr = self.dtype.str
        body = "{'descr': '%s', 'fortran_order': False, 'shape': (%d,), }" % (descr, self.n)
        prefix = b"\x93NUMPY\x01\x00"
        hlen = self.HEADER - len(prefix) - 2
        text = body.ljust(hlen - 1) + "\n"
        assert len(text) == hlen
        self.f.seek(0)
        self.f.write(prefix + np.uint16(hlen).tobytes() + text.encode("latin1"))
        self.f.close()


class EphysWriter:
    """Common interface of the three writers."""

    path: Path
    n_written: int = 0

    def write(self, uv: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class BinaryWriter(EphysWriter):
    """Open Ephys Binary format, one continuous stream."""

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
    ):
        self.session = Path(out)
        self.path = self.session / f"Record Node {record_node_id}" / "experiment1" / "recording1"
        self.bit_volts = np.asarray(bit_volts, np.float64)
        n_ch = len(self.bit_volts)
        self.n_channels = n_ch
        self.sample_rate = float(sample_rate)
        self.channel_names = list(channel_names) if channel_names else [f"CH{k + 1}" for k in range(n_ch)]
        if len(self.channel_names) != n_ch:
            raise UserError(f"writer: {len(self.channel_names)} channel names for {n_ch} channels")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stream_name) or "stream"
        self.folder_name = f"{source_processor_name.replace(' ', '_')}-{source_processor_id}.{safe}"
        self.stream_name = stream_name
        cont = self.path / "continuous" / self.folder_name
        cont.mkdir(parents=True, exist_ok=True)
        (self.path / "events").mkdir(exist_ok=True)
        self.dat = open(cont / "continuous.dat", "wb")
        self.sn = NpyAppender(cont / "sample_numbers.npy", "<i8")
        self.ts = NpyAppender(cont / "timestamps.npy", "<f8")
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
        self._write_oebin()
        # what the GUI writes beside structure.oebin (some readers, e.g. neo/SpikeInterface, look for it)
        import time as _time

        (self.path / "sync_messages.txt").write_text(
            f"Software Time (milliseconds since midnight Jan 1st 1970 UTC): {int(_time.time() * 1000)}\r\n"
            f"Start Time for {source_processor_name} ({source_processor_id}) - {stream_name} @ "
            f"{int(round(self.sample_rate))} Hz: {int(first_sample)}\r\n"
        )
        self._closed = False

    def _write_oebin(self) -> None:
        (self.path / "structure.oebin").write_text(json.dumps(self.info, indent=2))

    def write(self, uv: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        uv = np.asarray(uv)
        if uv.ndim != 2 or uv.shape[1] != self.n_channels:
            raise ValueError(f"expected (samples, {self.n_channels}) got {uv.shape}")
        self.write_raw(quantise(uv, self.bit_volts), sample_numbers)

    def write_raw(self, raw: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        n = raw.shape[0]
        if sample_numbers is None:
            sample_numbers = np.arange(self.next_sample, self.next_sample + n, dtype=np.int64)
        sample_numbers = np.asarray(sample_numbers, np.int64)
        self.dat.write(np.ascontiguousarray(raw, "<i2").tobytes())
        self.sn.append(sample_numbers)
        self.ts.append(sample_numbers / self.sample_rate)
        if n:
            self.next_sample = int(sample_numbers[-1]) + 1
        self.n_written += n

    def flush(self) -> None:
        self.dat.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.dat.close()
        self.sn.close()
        self.ts.close()


class DatWriter(EphysWriter):
    """Flat int16 sample-interleaved file."""

    def __init__(self, path: str | os.PathLike, bit_volts: Sequence[float]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.bit_volts = np.asarray(bit_volts, np.float64)
        self.f = open(self.path, "wb")
        self.n_written = 0

    def write(self, uv: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        self.write_raw(quantise(uv, self.bit_volts))

    def write_raw(self, raw: np.ndarray, sample_numbers: np.ndarray | None = None) -> None:
        self.f.write(np.ascontiguousarray(raw, "<i2").tobytes())
        self.n_written += raw.shape[0]

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()


class SpikeGLXWriter(DatWriter):
    """A .bin with a copy of the source .meta (file size and duration updated)."""

    def __init__(self, path: str | os.PathLike, bit_volts: Sequence[float], meta: dict[str, str], sample_rate: float,
                 pass_through: Sequence[int] = ()):
        super().__init__(path, bit_volts)
        if self.path.suffix != ".bin":
            raise UserError(f"SpikeGLX output {self.path} must end in .bin (its .meta is written beside it)")
        self.meta = dict(meta)
        self.sample_rate = sample_rate

    def close(self) -> None:
        if self.f.closed:
            return
        super().close()
        meta = dict(self.meta)
        n_ch = len(self.bit_volts)
        meta["fileSizeBytes"] = str(self.n_written * n_ch * 2)
        meta["fileTimeSecs"] = f"{self.n_written / self.sample_rate:.6f}"
        meta.pop("fileSHA1", None)
        lines = [f"{'~' if k in ('imroTbl', 'snsChanMap', 'snsGeomMap', 'snsShankMap', 'muxTbl') else ''}{k}={v}" for k, v in meta.items()]
        self.path.with_suffix(".meta").write_text("\n".join(lines) + "\n")


def writer_like(rec: Recording, out: str | os.PathLike, description: str = "") -> EphysWriter:
    """A writer producing the same format as `rec` at `out`."""
    out = Path(out)
    if rec.format == "openephys":
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
        return SpikeGLXWriter(out, rec.bit_volts, rec.meta.get("meta", {}), rec.sample_rate)
    if out.suffix != ".dat":
        raise UserError(f"output {out}: a .dat input is written as a .dat file")
    return DatWriter(out, rec.bit_volts)


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


__all__ = ["BinaryWriter", "DatWriter", "SpikeGLXWriter", "writer_like", "write_openephys", "quantise", "NpyAppender"]

"""Owns reading extracellular recordings from disk: Open Ephys Binary, SpikeGLX, flat int16 .dat.

Every reader returns a `Recording`: a memory-mapped (samples, channels) array
of the stored integers plus what turns them into microvolts (`bit_volts` per
channel), the sample rate and the acquisition sample numbers. Nothing is read
into memory until `read(start, stop)` asks for a range.

Sample numbers are returned as stored: an Open Ephys `sample_numbers.npy` may
jump (samples never acquired) or fall back (a restart); `stream/gaps.py`
decides what that means, and nothing here fills or reorders samples.

    rec = open_recording("path/to/Record Node 101")          # Open Ephys Binary
    rec = open_recording("run_g0_t0.imec0.ap.bin")           # SpikeGLX (+ .meta)
    rec = open_recording("raw.dat", channels=384, sample_rate=30000)
    uv = rec.read(0, 30000)                                   # float32 µV, (30000, C)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import UserError

NP1_BIT_VOLTS = 0.195
"""µV per bit of a Neuropixels 1.0 AP channel in Open Ephys (0.6 V / 512 / gain 500... rounded as OE writes it)."""


@dataclass
class Recording:
    """A memory-mapped extracellular recording, (samples, channels)."""

    data: np.ndarray
    """(samples, channels) stored integers (int16), memory-mapped."""
    sample_rate: float
    bit_volts: np.ndarray
    """(channels,) float64: µV per stored unit."""
    sample_numbers: np.ndarray
    """(samples,) int64 acquisition sample number of each row."""
    channel_names: list[str]
    format: str
    """`openephys`, `spikeglx` or `dat`."""
    path: Path
    stream_name: str = ""
    timestamps: np.ndarray | None = None
    """(samples,) float64 seconds, when the file stores them."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Format-specific details the writers need to write the same format back."""

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[1])

    @property
    def duration(self) -> float:
        return self.n_samples / self.sample_rate

    def read(self, start: int = 0, stop: int | None = None, channels=None) -> np.ndarray:
        """float32 µV (stop - start, channels), a copy."""
        stop = self.n_samples if stop is None else min(int(stop), self.n_samples)
        start = max(0, int(start))
        raw = self.data[start:stop] if channels is None else self.data[start:stop][:, channels]
        bv = self.bit_volts if channels is None else self.bit_volts[channels]
        return np.multiply(raw, bv.astype(np.float32), dtype=np.float32)

    def read_raw(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.n_samples if stop is None else min(int(stop), self.n_samples)
        return np.asarray(self.data[max(0, int(start)):stop])

    def describe(self) -> str:
        s = f" stream {self.stream_name!r}" if self.stream_name else ""
        return (
            f"{self.format} recording {self.path}{s}: {self.n_channels} channels x {self.n_samples} samples "
            f"at {self.sample_rate:g} Hz ({self.duration:.2f} s)"
        )


# --------------------------------------------------------------------------- Open Ephys Binary


def find_oebin(path: str | os.PathLike) -> list[Path]:
    """All structure.oebin files at or below `path` (a file, a recording folder, a session)."""
    p = Path(path)
    if p.is_file() and p.name == "structure.oebin":
        return [p]
    if p.is_file() and p.name == "continuous.dat":
        # .../recordingR/continuous/<stream>/continuous.dat
        cand = p.parent.parent.parent / "structure.oebin"
        return [cand] if cand.is_file() else []
    if p.is_dir():
        direct = p / "structure.oebin"
        if direct.is_file():
            return [direct]
        found = p.rglob("structure.oebin")
        return sorted(found, key=lambda q: (len(q.parts), [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(q))]))
    return []


def _load_oebin(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable structure.oebin ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("continuous"), list):
        raise UserError(f"{path}: structure.oebin has no 'continuous' list")
    return info


def _choose_stream(streams: list[dict], stream: str | int | None, where: Path) -> int:
    if not streams:
        raise UserError(f"{where}: the recording has no continuous streams")
    names = [f"{s.get('stream_name', '')} ({s.get('folder_name', '')})" for s in streams]
    if stream is None or stream == "":
        return 0
    if isinstance(stream, int) or (isinstance(stream, str) and stream.isdigit()):
        i = int(stream)
        if 0 <= i < len(streams):
            return i
    else:
        for i, s in enumerate(streams):
            folder = str(s.get("folder_name", "")).rstrip("/")
            if stream in (s.get("stream_name"), folder) or folder.endswith("." + stream):
                return i
    raise UserError(f"{where}: no stream {stream!r}; streams are: {'; '.join(names)} (use --stream NAME or index)")


def read_openephys(path: str | os.PathLike, stream: str | int | None = None) -> Recording:
    oebins = find_oebin(path)
    if not oebins:
        raise UserError(f"{path}: no structure.oebin found (expected an Open Ephys Binary recording folder)")
    oebin = oebins[0]
    info = _load_oebin(oebin)
    streams = info["continuous"]
    i = _choose_stream(streams, stream, oebin)
    s = streams[i]
    folder = oebin.parent / "continuous" / str(s["folder_name"]).strip("/")
    dat = folder / "continuous.dat"
    if not dat.is_file():
        raise UserError(f"{oebin}: stream {s.get('stream_name')!r} has no {dat}")
    n_ch = int(s["num_channels"])
    size = dat.stat().st_size
    if size % (2 * n_ch):
        raise UserError(f"{dat}: size {size} bytes is not a whole number of {n_ch}-channel int16 samples")
    n = size // (2 * n_ch)
    data = np.memmap(dat, dtype="<i2", mode="r", shape=(n, n_ch)) if n else np.zeros((0, n_ch), "<i2")
    chans = s.get("channels") or [{"channel_name": f"CH{k + 1}", "bit_volts": NP1_BIT_VOLTS} for k in range(n_ch)]
    bit_volts = np.array([float(c.get("bit_volts", 1.0)) for c in chans], dtype=np.float64)
    names = [str(c.get("channel_name", f"CH{k + 1}")) for k, c in enumerate(chans)]
    sn_path, ts_path = folder / "sample_numbers.npy", folder / "timestamps.npy"
    sample_numbers = np.load(sn_path, mmap_mode="r") if sn_path.is_file() else np.arange(n, dtype=np.int64)
    timestamps = np.load(ts_path, mmap_mode="r") if ts_path.is_file() else None
    if len(sample_numbers) != n:
        raise UserError(f"{sn_path}: {len(sample_numbers)} sample numbers for {n} samples")
    return Recording(
        data=data,
        sample_rate=float(s["sample_rate"]),
        bit_volts=bit_volts,
        sample_numbers=sample_numbers,
        channel_names=names,
        format="openephys",
        path=oebin.parent,
        stream_name=str(s.get("stream_name", "")),
        timestamps=timestamps,
        meta={"oebin": info, "stream_index": i, "stream_info": s},
    )


# --------------------------------------------------------------------------- SpikeGLX


def parse_meta(path: str | os.PathLike) -> dict[str, str]:
    meta: dict[str, str] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            meta[k.strip().lstrip("~")] = v.strip()
    return meta


def spikeglx_bit_volts(meta: dict[str, str], lf: bool = False) -> np.ndarray:
    """µV per bit for every saved channel (the sync channel gets 1.0)."""
    n_saved = int(meta["nSavedChans"])
    if "imAiRangeMax" in meta:  # imec probe
        vmax = float(meta["imAiRangeMax"])
        probe_type = int(meta.get("imDatPrb_type", meta.get("imProbeOpt", "0")) or 0)
        maxint = float(meta.get("imMaxInt", 8192 if probe_type in (21, 24, 2013, 2014) else 512))
        gains = _imro_gains(meta.get("imroTbl", ""), lf, probe_type)
        ap, lfn, sy = _sns_counts(meta, n_saved)
        saved = _saved_channels(meta, n_saved)
        out = np.ones(n_saved, np.float64)
        for k, ch in enumerate(saved):
            if ch < ap + lfn:  # neural channel: acquisition index -> imro row
                row = ch if ch < ap else ch - ap
                g = gains[row] if row < len(gains) else (80.0 if probe_type in (21, 24) else (250.0 if lf else 500.0))
                out[k] = vmax / maxint / g * 1e6
        return out
    if "niAiRangeMax" in meta:  # NI-DAQ: gain 1 for every channel (MN/MA gains not applied)
        vmax = float(meta["niAiRangeMax"])
        maxint = float(meta.get("niMaxInt", 32768))
        return np.full(n_saved, vmax / maxint * 1e6, np.float64)
    return np.ones(n_saved, np.float64)


def _sns_counts(meta: dict[str, str], n_saved: int) -> tuple[int, int, int]:
    txt = meta.get("snsApLfSy") or meta.get("acqApLfSy")
    if txt:
        a, b, c = (int(x) for x in txt.split(",")[:3])
        return a, b, c
    return n_saved - 1, 0, 1


def _saved_channels(meta: dict[str, str], n_saved: int) -> list[int]:
    sub = meta.get("snsSaveChanSubset", "all")
    if sub in ("", "all"):
        return list(range(n_saved))
    chans: list[int] = []
    for part in sub.split(","):
        part = part.strip()
        if ":" in part:
            a, b = part.split(":")
            chans += list(range(int(a), int(b) + 1))
        elif part:
            chans.append(int(part))
    return chans[:n_saved]


def _imro_gains(imro: str, lf: bool, probe_type: int) -> list[float]:
    entries = re.findall(r"\(([^()]*)\)", imro)
    gains: list[float] = []
    for e in entries[1:]:  # the first entry is (type,nChan)
        f = e.split()
        if probe_type in (21, 24, 2013, 2014) or len(f) < 5:
            gains.append(80.0)
        else:  # NP1.0: chan bank ref apGain lfGain [apHiPass]
            gains.append(float(f[4] if lf else f[3]))
    return gains


def read_spikeglx(path: str | os.PathLike) -> Recording:
    p = Path(path)
    meta_path = p.with_suffix(".meta")
    if not meta_path.is_file():
        raise UserError(f"{p}: SpikeGLX data needs its .meta file beside it ({meta_path.name} not found)")
    meta = parse_meta(meta_path)
    try:
        n_ch = int(meta["nSavedChans"])
        rate = float(meta.get("imSampRate") or meta["niSampRate"])
    except (KeyError, ValueError):
        raise UserError(f"{meta_path}: lacks nSavedChans or the sample rate (imSampRate / niSampRate)") from None
    size = p.stat().st_size
    if size % (2 * n_ch):
        raise UserError(f"{p}: size {size} is not a whole number of {n_ch}-channel int16 samples")
    n = size // (2 * n_ch)
    data = np.memmap(p, dtype="<i2", mode="r", shape=(n, n_ch)) if n else np.zeros((0, n_ch), "<i2")
    lf = ".lf." in p.name
    bv = spikeglx_bit_volts(meta, lf=lf)
    ap, lfn, sy = _sns_counts(meta, n_ch)
    saved = _saved_channels(meta, n_ch)
    names = []
    for ch in saved:
        if ch < ap:
            names.append(f"AP{ch}")
        elif ch < ap + lfn:
            names.append(f"LF{ch - ap}")
        else:
            names.append(f"SY{ch - ap - lfn}")
    first = int(float(meta.get("firstSample", 0) or 0))
    return Recording(
        data=data,
        sample_rate=rate,
        bit_volts=bv,
        sample_numbers=np.arange(first, first + n, dtype=np.int64),
        channel_names=names,
        format="spikeglx",
        path=p,
        stream_name="lf" if lf else ("ap" if "imAiRangeMax" in meta else "nidq"),
        meta={"meta": meta, "neural_channels": [k for k, ch in enumerate(saved) if ch < ap + lfn]},
    )


# --------------------------------------------------------------------------- flat .dat


def read_dat(path: str | os.PathLike, channels: int, sample_rate: float, bit_volts: float = NP1_BIT_VOLTS) -> Recording:
    p = Path(path)
    if not channels or channels < 1:
        raise UserError(f"{p}: a flat .dat file needs --channels N (its channel count)")
    if not sample_rate or sample_rate <= 0:
        raise UserError(f"{p}: a flat .dat file needs --sample-rate HZ")
    size = p.stat().st_size
    if size % (2 * channels):
        raise UserError(f"{p}: size {size} bytes is not a whole number of {channels}-channel int16 samples; check --channels")
    n = size // (2 * channels)
    data = np.memmap(p, dtype="<i2", mode="r", shape=(n, channels)) if n else np.zeros((0, channels), "<i2")
    return Recording(
        data=data,
        sample_rate=float(sample_rate),
        bit_volts=np.full(channels, float(bit_volts), np.float64),
        sample_numbers=np.arange(n, dtype=np.int64),
        channel_names=[f"CH{k + 1}" for k in range(channels)],
        format="dat",
        path=p,
    )


# --------------------------------------------------------------------------- dispatch


def is_ephys_path(path: str | os.PathLike) -> bool:
    """True for anything `open_recording` would try: oebin folders, .bin+.meta, .dat."""
    p = Path(path)
    if p.suffix in (".dat", ".oebin"):
        return True
    if p.suffix == ".bin" and p.with_suffix(".meta").is_file():
        return True
    if p.is_dir():
        return bool(find_oebin(p))
    return False


def open_recording(
    path: str | os.PathLike,
    stream: str | int | None = None,
    channels: int | None = None,
    sample_rate: float | None = None,
    bit_volts: float = NP1_BIT_VOLTS,
) -> Recording:
    """Open any supported extracellular recording, memory-mapped."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p} does not exist")
    if p.is_dir() or p.name == "structure.oebin":
        return read_openephys(p, stream)
    if p.suffix == ".bin":
        return read_spikeglx(p)
    if p.suffix == ".dat":
        if p.name == "continuous.dat" and find_oebin(p) and channels is None:
            return read_openephys(find_oebin(p)[0], stream if stream is not None else p.parent.name)
        return read_dat(p, channels or 0, sample_rate or 30000.0, bit_volts)
    raise UserError(f"{p}: not an ephys recording (expected an Open Ephys folder, a SpikeGLX .bin or an int16 .dat)")

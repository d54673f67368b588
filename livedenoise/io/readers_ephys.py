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
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import UserError
from livedenoise.io.movie import first_line

PARTIAL_KEY = "livedenoise partial"
"""Set in a structure.oebin while livedenoise is still writing that recording (removed when it closes)."""

GLX_PARTIAL_KEY = "livedenoisePartial"
"""Set (`=true`) in a SpikeGLX .meta while livedenoise is still writing its .bin; fileSizeBytes is then the last flush."""

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
        cut = " (partial: its writer stopped before closing it; read up to the last flush)" if self.meta.get("partial") else ""
        return (
            f"{self.format} recording {self.path}{s}: {self.n_channels} channels x {self.n_samples} samples "
            f"at {self.sample_rate:g} Hz ({self.duration:.2f} s){cut}"
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
    """An Open Ephys Binary stream, memory-mapped (samples, channels) int16 with per-channel bit_volts.

    Format: Open Ephys GUI Binary format (structure.oebin; continuous.dat int16
    sample-interleaved; sample_numbers.npy int64, timestamps.npy float64 s). A recording
    whose structure.oebin carries `PARTIAL_KEY` is one livedenoise was still writing
    (a crash left it): it is read up to its last flush (the shortest of the three
    files) and `meta["partial"]` is True. Errors: UserError (one line) for a missing
    or unreadable structure.oebin, an unknown stream, or files that disagree.
    """
    oebins = find_oebin(path)
    if not oebins:
        raise UserError(f"{path}: no structure.oebin found (expected an Open Ephys Binary recording folder)")
    oebin = oebins[0]
    info = _load_oebin(oebin)
    streams = info["continuous"]
    i = _choose_stream(streams, stream, oebin)
    s = streams[i]
    partial = bool(info.get(PARTIAL_KEY))
    try:
        folder = oebin.parent / "continuous" / str(s["folder_name"]).strip("/")
        n_ch = int(s["num_channels"])
        rate = float(s["sample_rate"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{oebin}: stream {i} lacks a valid folder_name, num_channels or sample_rate") from None
    if not 1 <= n_ch <= 65536 or not (math.isfinite(rate) and rate > 0):
        raise UserError(f"{oebin}: stream {i} has num_channels={n_ch}, sample_rate={rate}; the structure.oebin is damaged")
    dat = folder / "continuous.dat"
    if not dat.is_file():
        raise UserError(f"{oebin}: stream {s.get('stream_name')!r} has no {dat}")
    size = dat.stat().st_size
    if size % (2 * n_ch) and not partial:
        raise UserError(f"{dat}: size {size} bytes is not a whole number of {n_ch}-channel int16 samples")
    n = size // (2 * n_ch)
    chans = s.get("channels") or [{"channel_name": f"CH{k + 1}", "bit_volts": NP1_BIT_VOLTS} for k in range(n_ch)]
    bit_volts = np.array([float(c.get("bit_volts", 1.0)) for c in chans], dtype=np.float64)
    names = [str(c.get("channel_name", f"CH{k + 1}")) for k, c in enumerate(chans)]
    sn_path, ts_path = folder / "sample_numbers.npy", folder / "timestamps.npy"
    sample_numbers = _load_npy(sn_path) if sn_path.is_file() else np.arange(n, dtype=np.int64)
    timestamps = _load_npy(ts_path) if ts_path.is_file() else None
    if partial:  # up to the last flush: the .npy headers count what was flushed, the .dat may hold more
        n = min(n, len(sample_numbers), len(timestamps) if timestamps is not None else n)
        sample_numbers = sample_numbers[:n]
        timestamps = timestamps[:n] if timestamps is not None else None
    if len(sample_numbers) != n:
        raise UserError(f"{sn_path}: {len(sample_numbers)} sample numbers for the {n} samples of continuous.dat; the "
                        "recording's files disagree (a copy cut short, or the GUI stopped while writing): restore "
                        "the original files")
    data = np.memmap(dat, dtype="<i2", mode="r", shape=(n, n_ch)) if n else np.zeros((0, n_ch), "<i2")
    return Recording(
        data=data,
        sample_rate=rate,
        bit_volts=bit_volts,
        sample_numbers=sample_numbers,
        channel_names=names,
        format="openephys",
        path=oebin.parent,
        stream_name=str(s.get("stream_name", "")),
        timestamps=timestamps,
        meta={"oebin": info, "stream_index": i, "stream_info": s, "partial": partial},
    )


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npy file ({first_line(exc)})") from None


# --------------------------------------------------------------------------- SpikeGLX
#
# Format: SpikeGLX `.bin` (int16 little-endian, sample-interleaved) + `.meta` (key=value
# lines; SpikeGLX "Metafile Tags", Metadata_30). The channels of a `.bin` are the *saved*
# channels; the `.meta` describes them through acquisition-numbered fields:
#   snsSaveChanSubset  acquisition indices saved ("all", or e.g. "0:199,768", "384:767,768")
#   acqApLfSy          AP, LF, SY counts acquired (imec; nidq: acqMnMaXaDw; obx: acqXaDwSy),
#                      acquisition order AP 0..nAP-1, then LF, then SY
#   snsApLfSy          the counts of this stream's channels (snsMnMaXaDw, snsXaDwSy)
#   ~snsChanMap        one (NAME;index:order) entry per saved channel: AP0, LF12, SY0, MN0C3, XA1, XD0
#   ~imroTbl           one entry per acquired probe channel: NP1.0 (chan bank ref apGain lfGain hp)
# Volts = stored * AiRangeMax / MaxInt / gain (imec: imAiRangeMax, imMaxInt, gain from
# imroTbl -- AP gain for AP channels, LF gain for LF channels -- or 80 for NP2.0 probes;
# nidq: niAiRangeMax, niMaxInt, niMNGain / niMAGain; obx: obAiRangeMax, obMaxInt).

META_MAX_BYTES = 16 * 2**20
"""A .meta is text of a few hundred kB at most; anything larger is refused before reading."""
MAX_SAVED_CHANNELS = 16384
NP2_TYPES = frozenset({21, 24, 2003, 2004, 2013, 2014})
"""NP2.0 probes: one wideband AP stream, fixed gain 80, 14-bit (imMaxInt 8192)."""

_FAMILIES = {
    # typeThis: (kinds in acquisition order, acquisition-count key, stored-count key, range key, maxint key)
    "imec": (("AP", "LF", "SY"), "acqApLfSy", "snsApLfSy", "imAiRangeMax", "imMaxInt"),
    "nidq": (("MN", "MA", "XA", "XD"), "acqMnMaXaDw", "snsMnMaXaDw", "niAiRangeMax", "niMaxInt"),
    "obx": (("XA", "XD", "SY"), "acqXaDwSy", "snsXaDwSy", "obAiRangeMax", "obMaxInt"),
}
_NAME = re.compile(r"(AP|LF|SY|XA|XD)(\d+)|(MN|MA)(\d+)C(\d+)")


@dataclass(frozen=True)
class SavedChannel:
    """One channel of a SpikeGLX `.bin`, in file order."""

    kind: str
    """AP, LF, SY (imec); MN, MA, XA, XD (nidq); XA, XD, SY (obx)."""
    number: int
    """Its number within its kind: for AP and LF the probe channel (the `imroTbl` entry)."""

    @property
    def name(self) -> str:
        return f"{self.kind}{self.number}"


def parse_meta(path: str | os.PathLike) -> dict[str, str]:
    """The `key=value` lines of a SpikeGLX `.meta` (a leading `~` is dropped from keys).

    Errors: UserError (one line) for a file that cannot be read, is larger than
    `META_MAX_BYTES`, is binary, or holds no `key=value` line.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > META_MAX_BYTES:
            raise UserError(f"{p}: {size} bytes is far too large for a SpikeGLX .meta; is it the right file?")
        raw = p.read_bytes()
    except OSError as exc:
        raise UserError(f"{p}: cannot read the SpikeGLX .meta ({exc.strerror or exc})") from None
    if b"\0" in raw:
        raise UserError(f"{p}: not a SpikeGLX .meta (binary content); the .meta is the text file beside the .bin")
    meta: dict[str, str] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            meta[k.strip().lstrip("~")] = v.strip()
    if not meta:
        raise UserError(f"{p}: not a SpikeGLX .meta (no key=value lines)")
    return meta


def _where(meta: dict[str, str]) -> str:
    return meta.get("__path__", "SpikeGLX .meta")


def _bad(meta, key: str, what: str) -> UserError:
    value = meta.get(key, "")
    shown = value if len(value) <= 40 else value[:37] + "..."
    return UserError(f"{_where(meta)}: {key}={shown!r} {what}; the .meta is damaged or not from SpikeGLX "
                     "(restore the original .meta of this .bin)")


def _meta_int(meta, key: str, lo: int, hi: int, default: int | None = None) -> int:
    txt = meta.get(key, "").strip()
    if txt == "" and default is not None:
        return default
    try:
        v = int(txt)
    except ValueError:
        try:  # SpikeGLX writes a few counts as "123.0"
            f = float(txt)
            v = int(f) if math.isfinite(f) and f == int(f) else None
        except (ValueError, OverflowError):
            v = None
    if v is None:
        raise _bad(meta, key, "is not a whole number" if txt else "is missing")
    if not lo <= v <= hi:
        raise _bad(meta, key, f"is outside {lo}..{hi}")
    return v


def _meta_float(meta, key: str, default: float | None = None) -> float:
    txt = meta.get(key, "")
    if txt == "" and default is not None:
        return default
    try:
        v = float(txt)
    except ValueError:
        raise _bad(meta, key, "is not a number" if txt else "is missing") from None
    if not (math.isfinite(v) and v > 0):
        raise _bad(meta, key, "must be a finite number > 0")
    return v


def _family(meta: dict[str, str]) -> str:
    t = meta.get("typeThis", "").strip()
    if t in _FAMILIES:
        return t
    if t:
        raise _bad(meta, "typeThis", "is not imec, nidq or obx")
    for fam, spec in _FAMILIES.items():
        if spec[3] in meta:
            return fam
    raise UserError(f"{_where(meta)}: not a SpikeGLX imec, nidq or obx .meta (no typeThis, imAiRangeMax, niAiRangeMax "
                    "or obAiRangeMax); restore the original .meta of this .bin")


def _counts(meta, key: str, n: int) -> tuple[int, ...] | None:
    txt = meta.get(key, "").strip()
    if not txt:
        return None
    parts = [p.strip() for p in txt.split(",")]
    if len(parts) != n or not all(p.isdigit() and len(p) <= 6 for p in parts):
        raise _bad(meta, key, f"is not {n} comma-separated channel counts")
    return tuple(int(p) for p in parts)


def _subset(meta) -> list[tuple[int, int]] | None:
    """snsSaveChanSubset as inclusive ranges of acquisition indices; None for 'all'."""
    txt = meta.get("snsSaveChanSubset", "all").strip()
    if txt.lower() in ("", "all"):
        return None
    ranges = []
    for part in txt.split(","):
        m = re.fullmatch(r"\s*(\d{1,7})\s*(?::\s*(\d{1,7})\s*)?", part)
        if not m:
            raise _bad(meta, "snsSaveChanSubset", "is not 'all' or a channel list such as 0:383,768")
        a = int(m[1])
        b = int(m[2]) if m[2] is not None else a
        if b < a:
            raise _bad(meta, "snsSaveChanSubset", f"has a range {a}:{b} that runs backwards")
        ranges.append((a, b))
    return ranges


def _imro(meta) -> tuple[int | None, int, dict[int, list[str]]]:
    """imroTbl -> (probe type, channel count of its header, {probe channel: fields}); (None, 0, {}) when absent."""
    txt = meta.get("imroTbl", "").strip()
    if not txt:
        return None, 0, {}
    if not re.fullmatch(r"(\([^()]*\)\s*)+", txt):
        raise _bad(meta, "imroTbl", "is not a list of (...) entries")
    entries = re.findall(r"\(([^()]*)\)", txt)
    head = [h.strip() for h in entries[0].split(",")] if entries else []
    if len(head) < 2 or not all(h.isdigit() and len(h) <= 7 for h in head[:2]):
        raise _bad(meta, "imroTbl", "does not start with a (probe type,channels) header")
    rows: dict[int, list[str]] = {}
    for e in entries[1:]:
        f = e.split()
        if not f or not f[0].isdigit() or len(f[0]) > 7:
            raise _bad(meta, "imroTbl", f"has an entry ({e[:40]}) that does not start with a channel number")
        rows[int(f[0])] = f
    return int(head[0]), int(head[1]), rows


def _probe_type(meta) -> int:
    if meta.get("imDatPrb_type", "").strip():
        return _meta_int(meta, "imDatPrb_type", 0, 10**6)
    t, _, _ = _imro(meta)
    return t or 0


def _acquired(meta, fam: str) -> tuple[int, ...] | None:
    """Counts of each kind at acquisition, in acquisition order (what subset indices count in)."""
    kinds, acq_key, *_ = _FAMILIES[fam]
    acq = _counts(meta, acq_key, len(kinds))
    if acq is not None or fam != "imec":
        return acq
    _, n_head, rows = _imro(meta)  # the imroTbl has an entry for every acquired probe channel
    if not rows:
        return None
    n = max(n_head, len(rows))
    has_lf = _probe_type(meta) not in NP2_TYPES and min(len(f) for f in rows.values()) >= 6
    return (n, n if has_lf else 0, 1)


def spikeglx_channels(meta: dict[str, str], n_saved: int | None = None, lf: bool = False) -> list[SavedChannel]:
    """What each saved channel of a SpikeGLX file is, in file order.

    From the `~snsChanMap` names when it lists every saved channel; otherwise from the
    acquisition indices of `snsSaveChanSubset` against the acquired counts
    (`acqApLfSy`, else the `~imroTbl` channel count); for `all`, from this stream's
    counts (`snsApLfSy`; without it: every channel but a last sync channel, LF when
    `lf`). Errors: UserError (one line) when the fields are malformed or disagree with
    `nSavedChans` -- a .meta that does not describe its .bin.
    """
    fam = _family(meta)
    kinds, _, sns_key, *_ = _FAMILIES[fam]
    if n_saved is None:
        n_saved = _meta_int(meta, "nSavedChans", 1, MAX_SAVED_CHANNELS)
    names = [e.split(";")[0].strip() for e in re.findall(r"\(([^()]*)\)", meta.get("snsChanMap", "")) if ";" in e]
    if len(names) == n_saved:
        out, seen = [], {k: 0 for k in kinds}
        for nm in names:
            m = _NAME.fullmatch(nm)
            kind = (m[1] or m[3]) if m else None
            if kind not in seen:
                break
            out.append(SavedChannel(kind, int(m[2]) if m[1] else seen[kind]))
            seen[kind] += 1
        else:
            return out
    ranges = _subset(meta)
    if ranges is not None:
        count = sum(b - a + 1 for a, b in ranges)
        if count != n_saved:
            raise UserError(f"{_where(meta)}: snsSaveChanSubset={meta.get('snsSaveChanSubset')} lists {count} channels "
                            f"but nSavedChans={n_saved}; the .meta does not describe this .bin (restore its original .meta)")
        acq = _acquired(meta, fam)
        if acq is not None:
            starts = np.cumsum((0,) + acq)
            out = []
            for a, b in ranges:
                for idx in range(a, b + 1):
                    j = int(np.searchsorted(starts, idx, side="right")) - 1
                    if j >= len(kinds):
                        raise UserError(f"{_where(meta)}: snsSaveChanSubset saves channel {idx}, beyond the {starts[-1]} "
                                        f"acquired ({_FAMILIES[fam][1]}={','.join(map(str, acq))}); the .meta is damaged")
                    out.append(SavedChannel(kinds[j], idx - int(starts[j])))
            return out
    sns = _counts(meta, sns_key, len(kinds))
    if sns is None:
        if ranges is not None:
            raise UserError(f"{_where(meta)}: cannot tell which saved channels are neural: no ~snsChanMap, "
                            f"{_FAMILIES[fam][1]}, {sns_key} or ~imroTbl; restore the original .meta of this .bin")
        last = {"imec": "SY", "nidq": "XD", "obx": "SY"}[fam]
        first = {"imec": "LF" if lf else "AP", "nidq": "MN", "obx": "XA"}[fam]
        sns = tuple((n_saved - 1 if k == first else 1 if k == last else 0) for k in kinds)
    if sum(sns) != n_saved:
        raise UserError(f"{_where(meta)}: {sns_key}={meta.get(sns_key, ','.join(map(str, sns)))} counts {sum(sns)} "
                        f"channels but nSavedChans={n_saved}; the .meta does not describe this .bin")
    return [SavedChannel(k, i) for k, c in zip(kinds, sns) for i in range(c)]


def neural_channels(chans: list[SavedChannel]) -> list[int]:
    """File positions of the channels a model denoises: AP and LF (imec); MN (nidq; else its analog MA, XA);
    XA (obx). Sync and digital words are copied as they are."""
    kinds = {c.kind for c in chans}
    want = {"AP", "LF"} | ({"MN"} if "MN" in kinds else {"MA", "XA"})
    return [k for k, c in enumerate(chans) if c.kind in want]


def spikeglx_bit_volts(meta: dict[str, str], lf: bool = False, chans: list[SavedChannel] | None = None) -> np.ndarray:
    """µV per stored unit for every saved channel, (nSavedChans,) float64 (sync and digital words: 1.0).

    µV = stored * AiRangeMax / MaxInt / gain * 1e6 (SpikeGLX Metadata_30): imec gains
    from `~imroTbl` (the AP gain for AP channels, the LF gain for LF channels; 80 for
    NP2.0), nidq `niMNGain` / `niMAGain`, obx and XA channels gain 1. Errors:
    UserError for missing or malformed fields (no `~imroTbl` for a probe whose gain it sets).
    """
    fam = _family(meta)
    chans = chans if chans is not None else spikeglx_channels(meta, lf=lf)
    _, _, _, range_key, maxint_key = _FAMILIES[fam]
    vmax = _meta_float(meta, range_key)
    ptype = _probe_type(meta) if fam == "imec" else 0
    default_max = 8192 if ptype in NP2_TYPES else 512 if fam == "imec" else 32768
    maxint = _meta_int(meta, maxint_key, 1, 2**15, default=default_max)
    out = np.ones(len(chans), np.float64)
    rows = _imro(meta)[2] if fam == "imec" else {}
    for k, c in enumerate(chans):
        if c.kind in ("SY", "XD"):
            continue
        gain = 1.0
        if c.kind in ("AP", "LF"):
            if ptype in NP2_TYPES:
                gain = 80.0
            else:
                row = rows.get(c.number)
                if row is None:
                    raise UserError(f"{_where(meta)}: ~imroTbl has no entry for probe channel {c.number} ({c.name}), so "
                                    "its gain is unknown; restore the original .meta of this .bin")
                if len(row) < 6:  # NP1.0-like entries: chan bank ref apGain lfGain apHiPass
                    raise UserError(f"{_where(meta)}: probe type {ptype}: ~imroTbl entries ({' '.join(row)}) carry no "
                                    "AP/LF gain; this probe type is not supported")
                try:
                    gain = float(row[3] if c.kind == "AP" else row[4])
                except ValueError:
                    gain = float("nan")
                if not (math.isfinite(gain) and gain > 0):
                    raise UserError(f"{_where(meta)}: ~imroTbl entry ({' '.join(row)}) has no valid "
                                    f"{'AP' if c.kind == 'AP' else 'LF'} gain")
        elif c.kind == "MN":
            gain = _meta_float(meta, "niMNGain", default=1.0)
        elif c.kind == "MA":
            gain = _meta_float(meta, "niMAGain", default=1.0)
        out[k] = vmax / maxint / gain * 1e6
    return out


def read_spikeglx(path: str | os.PathLike) -> Recording:
    """A SpikeGLX `.bin` with its `.meta`, memory-mapped (samples, nSavedChans) int16.

    Channels classified and scaled from the `.meta` (`spikeglx_channels`,
    `spikeglx_bit_volts`); `meta["neural_channels"]` lists those a model denoises.
    Sample numbers count from `firstSample`. Errors: UserError (one line) for a
    missing, unreadable or malformed `.meta`, or a `.bin` that is not whole samples.
    """
    p = Path(path)
    meta_path = p.with_suffix(".meta")
    if not meta_path.is_file():
        raise UserError(f"{p}: SpikeGLX data needs its .meta file beside it ({meta_path.name} not found)")
    meta = parse_meta(meta_path)
    meta["__path__"] = str(meta_path)  # for the messages
    try:
        fam = _family(meta)
        n_ch = _meta_int(meta, "nSavedChans", 1, MAX_SAVED_CHANNELS)
        rate = _meta_float(meta, {"imec": "imSampRate", "nidq": "niSampRate", "obx": "obSampRate"}[fam])
        lf = ".lf." in p.name
        chans = spikeglx_channels(meta, n_ch, lf=lf)
        bv = spikeglx_bit_volts(meta, lf=lf, chans=chans)
        first = _meta_int(meta, "firstSample", 0, 2**62, default=0)
    finally:
        meta.pop("__path__", None)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise UserError(f"{p}: cannot read ({exc.strerror or exc})") from None
    partial = meta.get(GLX_PARTIAL_KEY, "").lower() == "true"
    if partial:  # left by a crash while livedenoise wrote it: up to the last flush
        flushed = _meta_int(meta, "fileSizeBytes", 0, 2**62, default=0)
        size = min(size, flushed) // (2 * n_ch) * (2 * n_ch)
    if size % (2 * n_ch):
        raise UserError(f"{p}: size {size} is not a whole number of {n_ch}-channel int16 samples "
                        "(a copy cut short?); nSavedChans in the .meta must match the .bin")
    n = size // (2 * n_ch)
    data = np.memmap(p, dtype="<i2", mode="r", shape=(n, n_ch)) if n else np.zeros((0, n_ch), "<i2")
    return Recording(
        data=data,
        sample_rate=rate,
        bit_volts=bv,
        sample_numbers=np.arange(first, first + n, dtype=np.int64),
        channel_names=[c.name for c in chans],
        format="spikeglx",
        path=p,
        stream_name="lf" if lf else ("ap" if fam == "imec" else fam),
        meta={"meta": meta, "neural_channels": neural_channels(chans), "channel_kinds": [c.kind for c in chans],
              "partial": partial},
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

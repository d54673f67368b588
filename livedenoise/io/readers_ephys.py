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
    notes: list[str] = field(default_factory=list)
    """What the reader chose where the input left a choice (a stream picked by its metadata), one line each."""

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
        notes = "".join(f"; {n}" for n in self.notes)
        return (
            f"{self.format} recording {self.path}{s}: {self.n_channels} channels x {self.n_samples} samples "
            f"at {self.sample_rate:g} Hz ({self.duration:.2f} s){cut}{notes}"
        )


# --------------------------------------------------------------------------- Open Ephys Binary


_REC_DIR = re.compile(r"recording\d+")
_EXP_DIR = re.compile(r"experiment\d+")
_NODE_DIR = re.compile(r"Record Node \d+")


def _natural(q: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", q.as_posix())]


def find_oebin(path: str | os.PathLike) -> list[Path]:
    """The structure.oebin of every recording at `path`, in natural order.

    `path` may be a structure.oebin, a stream's continuous.dat, a recording folder,
    or a folder of the GUI's layout above it (`experimentN/recordingN`, `Record Node
    X/experimentN/recordingN`, a session holding Record Nodes): only that layout is
    searched there, so a folder a tool put inside a session (e.g. `clean/` of
    `livedenoise simulate --ephys`) is not taken for one of its recordings. A folder
    with none of that layout is searched at any depth.
    """
    p = Path(path)
    if p.is_file() and p.name == "structure.oebin":
        return [p]
    if p.is_file() and p.name == "continuous.dat":
        # .../recordingR/continuous/<stream>/continuous.dat
        cand = p.parent.parent.parent / "structure.oebin"
        return [cand] if cand.is_file() else []
    if not p.is_dir():
        return []
    direct = p / "structure.oebin"
    if direct.is_file():
        return [direct]
    levels = ((_REC_DIR,), (_EXP_DIR, _REC_DIR), (_NODE_DIR, _EXP_DIR, _REC_DIR))
    found: list[Path] = []
    for names in levels:
        dirs = [p]
        for pattern in names:
            dirs = [c for d in dirs for c in _subdirs(d) if pattern.fullmatch(c.name)]
        found += [d / "structure.oebin" for d in dirs if (d / "structure.oebin").is_file()]
    if not found:
        found = list(p.rglob("structure.oebin"))
    return sorted(found, key=lambda q: (len(q.parts), _natural(q)))


def _subdirs(d: Path) -> list[Path]:
    try:
        return [c for c in d.iterdir() if c.is_dir()]
    except OSError:
        return []


def _rel(oebin: Path, base: Path) -> str:
    try:
        rel = oebin.parent.relative_to(base)
    except ValueError:
        rel = oebin.parent
    return rel.as_posix() if rel.parts else oebin.parent.name


def _recording_summary(oebin: Path) -> str:
    """'ProbeA-AP 64 ch 3.0 s, ...' for a refusal that lists recordings (never raises)."""
    try:
        streams = json.loads(oebin.read_text())["continuous"]
        parts = []
        for st in streams:
            n_ch, rate = int(st["num_channels"]), float(st["sample_rate"])
            dat = oebin.parent / "continuous" / str(st["folder_name"]).strip("/") / "continuous.dat"
            secs = dat.stat().st_size / (2 * n_ch) / rate if dat.is_file() else 0.0
            parts.append(f"{_stream_label(st)} {n_ch} ch {secs:.1f} s")
        return ", ".join(parts) or "no continuous stream"
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return "unreadable structure.oebin"


def _choose_recording(oebins: list[Path], recording: str | int | None, path: Path) -> tuple[Path, list[str]]:
    """The one recording `path` means: (its structure.oebin, notes). Refuses (UserError) when several
    recordings are there and `recording` does not pick exactly one of them."""
    base = path if path.is_dir() else path.parent
    names = [_rel(q, base) for q in oebins]
    listing = "; ".join(f"'{n}' ({_recording_summary(q)})" for n, q in zip(names, oebins))
    if recording is None or str(recording).strip() == "":
        if len(oebins) == 1:
            return oebins[0], []
        raise UserError(f"{path} holds {len(oebins)} recordings: {listing}; pick one with --recording N (recordingN) "
                        "or --recording 'experimentE/recordingN', or give its folder (one run per recording; several runs can "
                        "write into one output folder, which keeps their names and numbers)")
    want = str(recording).strip().strip("/")
    if want.isdigit():
        want = f"recording{int(want)}"
    want_parts = Path(want).parts
    hits = [i for i, q in enumerate(oebins) if q.parent.parts[-len(want_parts):] == want_parts]
    if len(hits) == 1:
        return oebins[hits[0]], []
    if not hits:
        raise UserError(f"{path}: no recording {recording!r}; the recordings are: {listing} (--recording N or "
                        "'experimentE/recordingN')")
    raise UserError(f"{path}: {len(hits)} recordings match {recording!r}: "
                    f"{'; '.join(repr(names[i]) for i in hits)}; give more of the path, e.g. "
                    f"--recording '{'/'.join(Path(names[hits[0]]).parts[-2:])}'")


def _load_oebin(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable structure.oebin ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("continuous"), list):
        raise UserError(f"{path}: structure.oebin has no 'continuous' list")
    return info


def _stream_label(s: dict) -> str:
    """A stream as the GUI names it: `stream_name` (0.6+), else its folder (0.4/0.5: `Neuropix-PXI-100.0`)."""
    return str(s.get("stream_name") or str(s.get("folder_name", "")).strip("/") or "?")


NEURAL_UNITS = frozenset({"uv", "µv", "μv", "microvolts"})
"""`units` of a channel that records neural signals (the GUI writes `uV` for probe and headstage channels)."""
AUX_UNITS = frozenset({"v", "mv", "volts", "millivolts"})
"""`units` of analog inputs (ADC, NI-DAQ AI, accelerometer AUX): not neural."""
AUX_NAME = re.compile(r"(ADC|AI|AUX|DI|DO|TTL|SYNC|SY|XA|XD)[ _-]?\d*", re.IGNORECASE)
"""Channel names of analog or digital inputs (Acquisition Board ADC1, NI-DAQmx AI0, AUX1, sync)."""


def stream_kind(s: dict) -> tuple[str, str]:
    """What a structure.oebin `continuous` entry says its channels are: (`neural` | `auxiliary` | `unknown`, why).

    From the channels' metadata only: `neural` when a channel's `units` is µV;
    `auxiliary` when every channel's `units` is V or mV, or every channel name is that
    of an analog/digital input (ADC1, AI0, AUX1, TTL, SYNC...); `unknown` otherwise
    (no units, probe-like names: it may be neural).
    """
    chans = [c for c in (s.get("channels") or []) if isinstance(c, dict)]
    units = [str(c.get("units", "")).strip().lower() for c in chans]
    names = [str(c.get("channel_name", "")).strip() for c in chans]
    if any(u in NEURAL_UNITS for u in units):
        return "neural", "units uV"
    if chans and all(u in AUX_UNITS for u in units):
        return "auxiliary", f"units {chans[0].get('units')}"
    if chans and all(AUX_NAME.fullmatch(n) for n in names):
        return "auxiliary", f"channels {names[0]}..{names[-1]}"
    return "unknown", ""


def _stream_entry(i: int, s: dict) -> str:
    kind, why = stream_kind(s)
    try:
        rate = f"{float(s.get('sample_rate')):g} Hz"
    except (TypeError, ValueError):
        rate = "? Hz"
    folder = str(s.get("folder_name", "")).strip("/")
    what = f", {why}" if why else ""
    return f"{i} '{_stream_label(s)}' ({folder}: {s.get('num_channels', '?')} ch at {rate}{what})"


def _choose_stream(streams: list[dict], stream: str | int | None, where: Path) -> tuple[int, list[str]]:
    """(index, notes) of the stream to read. Without `stream`: the only stream, or the only one that is not
    an auxiliary (ADC / NI-DAQ / TTL) stream by its channel metadata (`stream_kind`), said in a note;
    several that may be neural: UserError listing them and naming --stream."""
    if not streams:
        raise UserError(f"{where}: the recording has no continuous streams")
    listing = "; ".join(_stream_entry(i, s) for i, s in enumerate(streams))
    if stream is None or stream == "":
        if len(streams) == 1:
            return 0, []
        kinds = [stream_kind(s)[0] for s in streams]
        maybe = [i for i, k in enumerate(kinds) if k != "auxiliary"]
        if len(maybe) == 1:
            i = maybe[0]
            others = ", ".join(_stream_entry(j, s) for j, s in enumerate(streams) if j != i)
            return i, [f"stream '{_stream_label(streams[i])}' read: the only one of the recording's {len(streams)} "
                       f"streams that may hold neural data; not read: {others} (--stream picks another)"]
        which = f"{len(maybe)} of them may hold neural data" if maybe else "none holds neural data by its metadata"
        raise UserError(f"{where}: {len(streams)} continuous streams, {which}: {listing}; pick one with "
                        "--stream NAME or --stream INDEX")
    if isinstance(stream, int) or (isinstance(stream, str) and stream.strip().isdigit()):
        i = int(stream)
        if 0 <= i < len(streams):
            return i, []
    else:
        hits = []
        for i, s in enumerate(streams):
            folder = str(s.get("folder_name", "")).rstrip("/")
            if stream in (s.get("stream_name"), folder) or folder.endswith("." + stream):
                hits.append(i)
        if len(hits) == 1:
            return hits[0], []
        if hits:
            raise UserError(f"{where}: {len(hits)} streams are named {stream!r}: "
                            f"{'; '.join(_stream_entry(i, streams[i]) for i in hits)}; pick one with --stream INDEX "
                            "or its folder name")
    raise UserError(f"{where}: no stream {stream!r}; the streams are: {listing} (--stream NAME or --stream INDEX)")


def read_openephys(path: str | os.PathLike, stream: str | int | None = None,
                   recording: str | int | None = None) -> Recording:
    """An Open Ephys Binary stream, memory-mapped (samples, channels) int16 with per-channel bit_volts.

    Format: Open Ephys GUI Binary format (open-ephys.github.io/gui-docs, "Binary
    format"): structure.oebin JSON; continuous.dat int16 little-endian,
    sample-interleaved; GUI 0.6+: sample_numbers.npy int64 and timestamps.npy float64 s;
    GUI 0.4/0.5: timestamps.npy int64 *sample numbers* (and synchronized_timestamps.npy
    float64 s). Sample numbers are returned as stored, never rebased; a stream that
    stores none is counted from 0 and a note says so (`Recording.notes`).

    `path` holding several recordings (a session with recording1 and recording2, several
    experiments or Record Nodes): `recording` picks one (`2` = recording2, or
    `'experiment1/recording2'`, a path suffix); without it, UserError listing them.
    Several continuous streams: `stream` (name, folder name or 0-based index) picks one;
    without it, the only stream that is not an auxiliary (ADC / NI-DAQ / TTL) one by its
    channel metadata (`stream_kind`), with a note; otherwise UserError listing them.
    A recording whose structure.oebin carries `PARTIAL_KEY` is one livedenoise was still
    writing (a crash left it): it is read up to its last flush (the shortest of the
    files) and `meta["partial"]` is True. Errors: UserError (one line) for a missing or
    unreadable structure.oebin, an ambiguous or unknown recording or stream, or files
    that disagree.
    """
    oebins = find_oebin(path)
    if not oebins:
        raise UserError(f"{path}: no structure.oebin found (expected an Open Ephys Binary recording folder)")
    oebin, notes = _choose_recording(oebins, recording, Path(path))
    info = _load_oebin(oebin)
    streams = info["continuous"]
    i, stream_notes = _choose_stream(streams, stream, oebin.parent)
    notes += stream_notes
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
        raise UserError(f"{oebin}: stream {_stream_label(s)!r} has no {dat}")
    size = dat.stat().st_size
    if size % (2 * n_ch) and not partial:
        raise UserError(f"{dat}: size {size} bytes is not a whole number of {n_ch}-channel int16 samples")
    n = size // (2 * n_ch)
    chans = s.get("channels") or [{"channel_name": f"CH{k + 1}", "bit_volts": NP1_BIT_VOLTS} for k in range(n_ch)]
    bit_volts = np.array([float(c.get("bit_volts", 1.0)) for c in chans], dtype=np.float64)
    names = [str(c.get("channel_name", f"CH{k + 1}")) for k, c in enumerate(chans)]
    sample_numbers, timestamps, sn_file = _stream_numbers(folder, n)
    if sn_file is None:
        notes.append(f"{folder.name} stores no sample numbers: counted from 0")
    sn_path = folder / (sn_file or "sample_numbers.npy")
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
        stream_name=_stream_label(s),
        timestamps=timestamps,
        meta={"oebin": info, "stream_index": i, "stream_info": s, "partial": partial, "sample_numbers_file": sn_file},
        notes=notes,
    )


def _stream_numbers(folder: Path, n: int) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(sample numbers, timestamps in s or None, the file the sample numbers come from or None) of a stream folder.

    GUI 0.6+: sample_numbers.npy + timestamps.npy (float s). GUI 0.4/0.5: timestamps.npy holds
    integer sample numbers (seconds, if any, in synchronized_timestamps.npy). Told apart by what
    the files hold (an integer timestamps.npy), not by the version string.
    """
    sn_path, ts_path = folder / "sample_numbers.npy", folder / "timestamps.npy"
    sync_path = folder / "synchronized_timestamps.npy"
    timestamps = _load_npy(ts_path) if ts_path.is_file() else None
    if sn_path.is_file():
        return _load_npy(sn_path), timestamps, sn_path.name
    if timestamps is not None and timestamps.dtype.kind in "iu":
        return timestamps, (_load_npy(sync_path) if sync_path.is_file() else None), ts_path.name
    return np.arange(n, dtype=np.int64), timestamps, None


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


def read_dat(path: str | os.PathLike, channels: int | None, sample_rate: float | None,
             bit_volts: float = NP1_BIT_VOLTS) -> Recording:
    """A flat int16 file (little-endian, sample-interleaved, no header), memory-mapped (samples, channels).

    The file says nothing about itself, so its channel count and sample rate (Hz) must be
    given (`--channels`, `--sample-rate`); `bit_volts` µV per stored unit. Sample numbers
    count from 0. Errors: UserError (one line) when either is missing or impossible, or
    the size is not a whole number of samples.
    """
    p = Path(path)
    missing = [flag for flag, v in (("--channels N", channels), ("--sample-rate HZ", sample_rate)) if v is None]
    if missing:
        raise UserError(f"{p}: a flat .dat file has no header to say its channel count and sample rate; give "
                        f"{' and '.join(missing)}")
    if channels < 1:
        raise UserError(f"{p}: --channels must be >= 1 (got {channels})")
    if not (math.isfinite(sample_rate) and sample_rate > 0):
        raise UserError(f"{p}: --sample-rate must be a finite number of Hz > 0 (got {sample_rate})")
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
    recording: str | int | None = None,
) -> Recording:
    """Open any supported extracellular recording, memory-mapped (`Recording`: (samples, channels) int16).

    Open Ephys Binary (a recording, session, Record Node or experiment folder, a
    structure.oebin or a stream's continuous.dat; `stream`, `recording` pick one where
    there are several: `read_openephys`), SpikeGLX (`.bin` + `.meta`: `read_spikeglx`),
    flat int16 `.dat` (`channels` and `sample_rate` required: `read_dat`). Errors:
    UserError (one line) for a missing path, an unknown format, or an ambiguous choice.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p} does not exist")
    if p.is_dir() or p.name == "structure.oebin":
        return read_openephys(p, stream, recording)
    if p.suffix == ".dat" and p.name == "continuous.dat" and find_oebin(p) and channels is None:
        return read_openephys(find_oebin(p)[0], stream if stream is not None else p.parent.name, recording)
    for flag, value in (("--stream", stream), ("--recording", recording)):
        if value is not None and str(value) != "":
            raise UserError(f"{p}: {flag} picks within an Open Ephys recording; this is a "
                            f"{'SpikeGLX' if p.suffix == '.bin' else 'flat'} file (leave {flag} out)")
    if p.suffix == ".bin":
        return read_spikeglx(p)
    if p.suffix == ".dat":
        return read_dat(p, channels, sample_rate, bit_volts)
    raise UserError(f"{p}: not an ephys recording (expected an Open Ephys folder, a SpikeGLX .bin or an int16 .dat)")

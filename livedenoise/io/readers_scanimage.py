"""ScanImage TIFFs: channels and planes de-interleaved from the file's own metadata.

ScanImage logs one TIFF page per channel per frame, channels fastest, then the
frames of a slice, then the planes (plus any flyback frames) of a volume, then
volumes. Where the file says how (read through tifffile: `TiffFile.is_scanimage`,
`scanimage_metadata`, the first page's ImageDescription / Software tags):

- ScanImage 2016 and later (`SI.*` frame data in the BigTIFF header or each
  page's Software tag): `SI.hChannels.channelSave`, `SI.hStackManager.numSlices`
  / `actualNumSlices`, `framesPerSlice`, `numFramesPerVolumeWithFlyback`,
  `SI.hRoiManager.scanFrameRate` ...; ScanImage 5.1 keeps the same keys as
  `scanimage.SI.*` in the ImageDescription.
- ScanImage 4 and 5.0 (`scanimage.SI4.*` / `scanimage.SI5.*` in the
  ImageDescription): `channelsSave`, `stackNumSlices`, `acqNumFrames`,
  `acqNumAveragedFrames`, `fastZEnable`, `fastZDiscardFlybackFrames`,
  `fastZNumDiscardFrames`, `scanFrameRate`, `scanZoomFactor`.
- ScanImage 3.x (`state.*` lines in every page's ImageDescription, e.g.
  `state.acq.numberOfChannelsSave=1`, `state.acq.savingChannel2=1`,
  `state.acq.frameRate=8.138`): saved channels from `state.acq.savingChannelN`
  (checked against `numberOfChannelsSave`), planes `numberOfZSlices` (a slow
  stack of `numberOfFrames` frames per slice, fewer when averaged:
  `numAvgFramesSave` / `averaging`), `frameRate`, `zoomFactor`.

Each page's ImageDescription carries that frame's `frameNumbers` (1-based,
counting every logged frame of the acquisition, flyback frames included) and
`frameTimestamps_sec` (2016+). Pages are placed by `frameNumbers` where every
page has one: frame n is plane ((n - 1) mod frames per volume) + 1, so a file of
a multi-file acquisition that starts mid-volume (first page = plane 3 of 4) still
gives plane 1 for `plane=1`, and the frames of a channel are the pages sharing a
frame number, in order. Files without them (ScanImage 3.x) are placed by page
order from the first page, which is plane 1 of channel 1.

`open_scanimage_movie(path, channel, plane)` gives one (channel, plane) stream
as a `Movie` (T, lines, pixels) with per-frame `frame_numbers`,
`frame_timestamps` (s) and `frame_rate` (Hz). Channel numbers are ScanImage's
channel IDs (1-4); planes count from 1 in acquisition order. A file holding
several channels or planes needs `--channel` / `--plane`: no stream is picked
silently (denoising the red structural channel instead of the green activity
channel wastes a training run); the error lists what the file holds and the
header field that says so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import UserError
from livedenoise.io.movie import Movie, first_line, missing_codec, quiet_tifffile

_FRAME_NO = re.compile(r'frameNumbers"?\s*[=:]\s*(\d+)')
_TIMESTAMP = re.compile(r'frameTimestamps_sec"?\s*[=:]\s*([-+0-9.eEinfINFnaN]+)')


def _frame_stamp(desc: str) -> tuple[int, float]:
    """(frame number, timestamp in s) from a ScanImage page description; -1 / NaN where absent or garbled."""
    m = _FRAME_NO.search(desc)
    number = int(m.group(1)) if m else -1
    m = _TIMESTAMP.search(desc)
    try:
        stamp = float(m.group(1)) if m else np.nan
    except ValueError:
        stamp = np.nan
    return number, stamp


def is_scanimage_tiff(path: str | os.PathLike) -> bool:
    """True when `path` is a TIFF that ScanImage wrote (its pages carry ScanImage metadata)."""
    import tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            return bool(tif.is_scanimage)
    except Exception:
        return False


@dataclass
class ScanImageLayout:
    """How a ScanImage TIFF's pages map onto (channel, plane, frame)."""

    path: Path
    version: int
    channels: list[int]
    """Saved channel IDs (SI.hChannels.channelSave), in page order."""
    planes: int
    """Planes per volume holding data (flyback frames excluded)."""
    frames_per_volume: int
    """Logged frames per volume, flyback frames included (1 for a single plane)."""
    frames_per_slice: int
    """Consecutive frames of one plane (a slow stack); 1 for fast-z volumes and time series."""
    shape: tuple[int, int]
    dtype: np.dtype
    frame_rate: float
    volume_rate: float
    zoom: float
    z: list[float]
    n_pages: int
    frame_numbers: np.ndarray
    """Per page: frameNumbers from its description (-1 where missing)."""
    timestamps: np.ndarray
    """Per page: frameTimestamps_sec (NaN where missing)."""
    offsets: np.ndarray | None
    """Per page: byte offset of its pixels when every page is one uncompressed block."""
    metadata: dict[str, Any] = field(default_factory=dict)
    software: str = "ScanImage"
    """Which ScanImage wrote the header read, e.g. "ScanImage 3.8", "ScanImage 2016+ (TIFF format 4)"."""
    channel_key: str = "SI.hChannels.channelSave"
    """The header field that lists the saved channels (named in error messages)."""
    plane_key: str = "SI.hStackManager.numSlices"
    """The header field that gives the planes (named in error messages)."""

    @property
    def stream_frame_step(self) -> int:
        """Increment of frameNumbers between consecutive frames of one (channel, plane) stream.

        ScanImage numbers every logged frame, flyback frames included: in a fast-z
        volume each plane's frames step by the frames per volume; in a time series
        or a slow stack (frames_per_slice > 1) consecutive frames of a plane step by 1.
        """
        return self.frames_per_volume if self.frames_per_slice == 1 else 1

    @property
    def placed_by(self) -> str:
        """"frameNumbers" when every page has one (pages placed by them), else "page order"."""
        fn = self.frame_numbers
        return "frameNumbers" if len(fn) and bool((fn >= 1).all()) else "page order"

    def frame_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Per page: (saved-channel index, 0-based acquisition frame index).

        By frameNumbers where every page has one: the pages of a frame share its number
        (channels in saved order), frame index = number - 1. Otherwise by page order from
        the first page. UserError when the numbers cannot be right (some pages without one,
        or a frame number on more or fewer pages than there are saved channels).
        """
        n_c = len(self.channels)
        p = np.arange(self.n_pages)
        fn = np.asarray(self.frame_numbers, np.int64)
        have = fn >= 1
        if not len(fn) or not have.any():
            return p % n_c, p // n_c
        name = self.path.name
        if not have.all():
            bad = int(np.flatnonzero(~have)[0])
            raise UserError(
                f"{name}: page {bad} has no frameNumbers in its description while other pages do; cannot place "
                "its frames in the acquisition (the file may be damaged)"
            )
        starts = np.flatnonzero(np.r_[True, fn[1:] != fn[:-1]])
        lengths = np.diff(np.r_[starts, len(fn)])
        wrong = np.flatnonzero(lengths != n_c)
        if len(wrong):
            k = int(starts[wrong[0]])
            raise UserError(
                f"{name}: frame {int(fn[k])} (frameNumbers) is on {int(lengths[wrong[0]])} page(s) but ScanImage saved "
                f"{n_c} channel(s) ({self.channel_key}); cannot tell its channels apart"
            )
        return p - np.repeat(starts, lengths), fn - 1

    # page p -> channel index, plane (1-based, 0 = flyback), time index
    def page_plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per page: (saved-channel index, plane 1-based or 0 for a flyback frame, volume / time index)."""
        ch, f = self.frame_index()
        fps, per_vol = self.frames_per_slice, self.frames_per_volume
        if fps > 1:  # slow stack: all frames of plane 1, then plane 2, ...
            block = fps * per_vol
            plane0 = (f // fps) % per_vol
            t = (f // block) * fps + f % fps
        else:
            plane0 = f % per_vol
            t = f // per_vol
        plane = plane0 + 1
        plane[plane0 >= self.planes] = 0  # flyback frames
        return ch, plane, t

    def pages_of(self, channel_index: int, plane: int) -> np.ndarray:
        ch, pl, _ = self.page_plan()
        return np.flatnonzero((ch == channel_index) & (pl == plane))

    def describe_streams(self) -> str:
        chans = ", ".join(map(str, self.channels))
        planes = "plane 1" if self.planes == 1 else f"planes 1-{self.planes}"
        return f"channel{'s' if len(self.channels) > 1 else ''} {chans} and {planes}"

    @property
    def stream_rate(self) -> float:
        """Frames per second of one (channel, plane) stream: the frame rate for a single plane
        or a slow stack (consecutive frames of a plane), the volume rate for fast-z volumes."""
        if self.planes > 1 and self.frames_per_slice == 1:
            return self.volume_rate
        return self.frame_rate


def _as_list(v) -> list:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        out = []
        for x in v:
            out.extend(_as_list(x))
        return out
    return [v]


def _num(meta: dict, key: str, default=None):
    v = meta.get(key, default)
    if isinstance(v, (list, tuple)):
        flat = _as_list(v)
        v = flat[0] if flat else default
    try:
        return float(v) if v is not None else default
    except (TypeError, ValueError):
        return default


def read_layout(path: str | os.PathLike, tif=None) -> ScanImageLayout:
    """Parse a ScanImage TIFF's metadata and page table; UserError when it is not one."""
    import tifffile

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; check the path")
    own = tif is None
    try:
        with quiet_tifffile():
            if own:
                tif = tifffile.TiffFile(path)
            try:
                return _read_layout(path, tif)
            finally:
                if own:
                    tif.close()
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path} is not a readable ScanImage TIFF (truncated or corrupt?): {first_line(exc)}") from None


def _matlab_fields(text: str) -> dict:
    """`key = value` / `key=value` lines (MATLAB syntax; ScanImage 3 ends them with CR) as a dict."""
    from tifffile import matlabstr2py

    fields = matlabstr2py(text.replace("\r\n", "\n").replace("\r", "\n"))
    return fields if isinstance(fields, dict) else {}


def _header(path: Path, tif) -> tuple[str, dict]:
    """(kind, fields): kind "SI" (2016+ and 5.1, keys SI.*), "SI4" / "SI5" (keys scanimage.SI4.* ...)
    or "state" (ScanImage 3.x, keys state.*); fields parsed by tifffile."""
    meta = tif.scanimage_metadata or {}
    frame = dict(meta.get("FrameData") or {})
    if frame:
        return "SI", frame
    soft = tif.pages.first.software or ""
    if soft.startswith("SI."):  # pages carry the frame data in their Software tag
        return "SI", _matlab_fields(soft)
    desc = tif.pages.first.description or ""
    for kind in ("SI4", "SI5"):
        if f"scanimage.{kind}." in desc:
            raw = _matlab_fields(desc)
            prefix = f"scanimage.{kind}."
            return kind, {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    if "scanimage.SI" in desc:  # ScanImage 5.1 kept the SI.* keys in the description
        raw = _matlab_fields(desc)
        return "SI", {k.replace("scanimage.SI.", "SI."): v for k, v in raw.items()}
    if desc.lstrip().startswith("state.") or "\nstate." in desc or "\rstate." in desc:
        raw = _matlab_fields(desc)
        return "state", {k[len("state."):]: v for k, v in raw.items() if k.startswith("state.")}
    return "", {}


def _truthy(v) -> bool:
    v = _as_list(v)
    try:
        return bool(v) and float(v[0]) != 0
    except (TypeError, ValueError):
        return bool(v) and str(v[0]).strip().lower() in ("true", "on", "yes")


def _acq_si(path: Path, meta: dict, version: int) -> dict:
    """ScanImage 2016+ (and 5.1) `SI.*` frame data."""
    if "SI.hChannels.channelSave" not in meta:
        raise UserError(f"{path}: its ScanImage metadata has no SI.hChannels.channelSave; cannot tell its channels apart")
    channels = [int(c) for c in _as_list(meta["SI.hChannels.channelSave"])]
    stack_on = meta.get("SI.hStackManager.enable", True)
    planes = _num(meta, "SI.hStackManager.actualNumSlices")
    if planes is None:
        planes = _num(meta, "SI.hStackManager.slicesPerAcq")
    if planes is None:
        planes = _num(meta, "SI.hStackManager.numSlices", 1)
    planes = int(planes or 1) if stack_on is not False else 1
    planes = max(planes, 1)
    avg = _num(meta, "SI.hScan2D.logAverageFactor", 1) or 1
    fps = _num(meta, "SI.hStackManager.framesPerSlice", 1)
    if fps is None or not np.isfinite(fps):
        fps = 1
    fps = max(int(fps // max(avg, 1)), 1)
    per_volume = planes
    if planes > 1 and fps == 1:
        if version >= 4:
            with_fb = _num(meta, "SI.hStackManager.numFramesPerVolumeWithFlyback")
        else:
            discard = bool(meta.get("SI.hFastZ.discardFlybackFrames", False))
            with_fb = None if discard else _num(meta, "SI.hFastZ.numFramesPerVolume")
        if with_fb is not None and np.isfinite(with_fb) and int(with_fb) >= planes:
            per_volume = int(with_fb)
    if planes == 1:
        fps = 1  # a time series: frame order is just time
    z = [float(v) for v in _as_list(meta.get("SI.hStackManager.zs", []))]
    frame_rate = _num(meta, "SI.hRoiManager.scanFrameRate", 0.0) or 0.0
    volume_rate = _num(meta, "SI.hRoiManager.scanVolumeRate")
    if volume_rate is None or planes == 1:
        volume_rate = frame_rate / per_volume if per_volume else frame_rate
    major = meta.get("SI.VERSION_MAJOR")
    software = f"ScanImage {major}" if major not in (None, "") else f"ScanImage (TIFF format {version})"
    return dict(channels=channels, planes=planes, frames_per_volume=per_volume, frames_per_slice=fps,
                frame_rate=frame_rate, volume_rate=volume_rate, zoom=_num(meta, "SI.hRoiManager.scanZoomFactor", 1.0),
                z=z, software=software, channel_key="SI.hChannels.channelSave", plane_key="SI.hStackManager.numSlices")


def _acq_si45(path: Path, meta: dict, kind: str) -> dict:
    """ScanImage 4 / 5.0: `scanimage.SI4.*` / `scanimage.SI5.*` in the ImageDescription (prefix removed)."""
    key = f"scanimage.{kind}."
    if "channelsSave" not in meta:
        raise UserError(f"{path}: its ScanImage header has no {key}channelsSave; cannot tell its channels apart")
    channels = [int(c) for c in _as_list(meta["channelsSave"])]
    planes = max(int(_num(meta, "stackNumSlices", 1) or 1), 1)
    fast = _truthy(meta.get("fastZEnable", 0)) and planes > 1
    frame_rate = _num(meta, "scanFrameRate", 0.0) or 0.0
    if fast:
        fps = 1
        flyback = 0 if _truthy(meta.get("fastZDiscardFlybackFrames", 0)) else int(_num(meta, "fastZNumDiscardFrames", 0) or 0)
        per_volume = planes + max(flyback, 0)
        volume_rate = frame_rate / per_volume
    else:
        frames = _num(meta, "acqNumFrames", 1) or 1
        avg = _num(meta, "acqNumAveragedFrames", 1) or 1
        fps = max(int(frames // max(avg, 1)), 1) if planes > 1 else 1
        per_volume = planes
        volume_rate = frame_rate
    version = meta.get("versionMajor", kind[2:])
    return dict(channels=channels, planes=planes, frames_per_volume=per_volume, frames_per_slice=fps,
                frame_rate=frame_rate, volume_rate=volume_rate, zoom=_num(meta, "scanZoomFactor", 1.0), z=[],
                software=f"ScanImage {version}", channel_key=f"{key}channelsSave", plane_key=f"{key}stackNumSlices")


def _acq_state(path: Path, meta: dict) -> dict:
    """ScanImage 3.x: the `state.*` header (prefix removed) in every page's ImageDescription."""
    saving = {int(k[len("acq.savingChannel"):]): v for k, v in meta.items()
              if k.startswith("acq.savingChannel") and k[len("acq.savingChannel"):].isdigit()}
    key = "state.acq.savingChannelN"
    if not saving:  # ScanImage 3.0-3.5 saved every acquired channel
        saving = {int(k[len("acq.acquiringChannel"):]): v for k, v in meta.items()
                  if k.startswith("acq.acquiringChannel") and k[len("acq.acquiringChannel"):].isdigit()}
        key = "state.acq.acquiringChannelN"
    channels = sorted(c for c, v in saving.items() if _truthy(v))
    n_saved = _num(meta, "acq.numberOfChannelsSave")
    if not channels:
        raise UserError(
            f"{path}: its ScanImage 3 header (state.*) flags no saved channel (state.acq.savingChannelN); "
            "cannot tell its channels apart"
        )
    if n_saved is not None and int(n_saved) != len(channels):
        raise UserError(
            f"{path}: its ScanImage 3 header says {int(n_saved)} channel(s) saved (state.acq.numberOfChannelsSave) "
            f"but flags channels {', '.join(map(str, channels))} ({key}); cannot tell its channels apart"
        )
    planes = max(int(_num(meta, "acq.numberOfZSlices", 1) or 1), 1)
    frames = max(int(_num(meta, "acq.numberOfFrames", 1) or 1), 1)
    avg = _num(meta, "acq.numAvgFramesSave")
    if avg is not None and avg > 1:
        fps = max(int(frames // avg), 1)
    elif _truthy(meta.get("acq.averaging", 0)):
        fps = 1  # the frames of a slice averaged into one saved frame
    else:
        fps = frames
    if planes == 1:
        fps = 1
    frame_rate = _num(meta, "acq.frameRate", 0.0) or 0.0
    version = meta.get("software.version")
    step = _num(meta, "acq.zStepSize")
    z = [k * float(step) for k in range(planes)] if step is not None and planes > 1 else []
    return dict(channels=channels, planes=planes, frames_per_volume=planes, frames_per_slice=fps,
                frame_rate=frame_rate, volume_rate=frame_rate if fps > 1 or planes == 1 else frame_rate / planes,
                zoom=_num(meta, "acq.zoomFactor", 1.0), z=z,
                software=f"ScanImage {version}" if version is not None else "ScanImage 3",
                channel_key=key, plane_key="state.acq.numberOfZSlices")


def _read_layout(path: Path, tif) -> ScanImageLayout:
    if not tif.is_scanimage:
        raise UserError(
            f"{path} has no ScanImage metadata (no SI.* frame data in its header or pages); "
            "it is a plain TIFF, not a ScanImage recording"
        )
    kind, meta = _header(path, tif)
    version = int((tif.scanimage_metadata or {}).get("version") or 0)
    if kind == "SI":
        if version == 0:
            version = int(_num(meta, "SI.TIFF_FORMAT_VERSION", 3) or 3)
        acq = _acq_si(path, meta, version)
    elif kind in ("SI4", "SI5"):
        version = int(kind[2:])
        acq = _acq_si45(path, meta, kind)
    elif kind == "state":
        version = 3
        acq = _acq_state(path, meta)
    else:
        raise UserError(
            f"{path}: tifffile sees ScanImage metadata but none livedenoise can read (no SI.*, scanimage.SI4/5.* "
            "or state.* header); cannot tell its channels and planes apart"
        )
    channels, planes = acq["channels"], acq["planes"]
    if not channels:
        raise UserError(f"{path}: {acq['channel_key']} is empty; the file holds no saved channel")
    if len(acq["z"]) != planes:
        acq["z"] = []
    for k in ("frame_rate", "volume_rate", "zoom"):
        v = acq[k]
        acq[k] = float(v) if v is not None and np.isfinite(v) else (1.0 if k == "zoom" else 0.0)
    frame_rate, volume_rate, zoom, z = acq["frame_rate"], acq["volume_rate"], acq["zoom"], acq["z"]
    per_volume, fps = acq["frames_per_volume"], acq["frames_per_slice"]
    common = dict(path=path, version=version, channels=channels, planes=planes, frames_per_volume=per_volume,
                  frames_per_slice=fps, frame_rate=float(frame_rate), volume_rate=float(volume_rate),
                  zoom=float(zoom), z=z, metadata=meta, software=acq["software"],
                  channel_key=acq["channel_key"], plane_key=acq["plane_key"])
    if tif.is_bigtiff:
        return _page_table(path, tif, common)
    # tifffile reads a classic ScanImage file (<= 2015) as "virtual frames" spaced like its
    # first pages, which misplaces pages of files not laid out exactly so: walk the real IFDs.
    import tifffile

    with tifffile.TiffFile(path, is_scanimage=False) as plain:
        return _page_table(path, plain, common)


def _page_table(path: Path, tif, common: dict) -> ScanImageLayout:
    """The per-page frame numbers, timestamps and pixel offsets of a ScanImage TIFF."""
    pages = tif.pages
    pages.cache = False
    first = pages.first
    page_shape = tuple(int(s) for s in first.shape)
    if len(page_shape) != 2:
        raise UserError(f"{path}: pages of shape {page_shape} are not single-channel frames")
    dtype = np.dtype(first.dtype)
    if dtype.kind not in "iuf":
        raise UserError(f"{path}: sample type {dtype} is not supported (need integers or floats)")
    common = dict(common, shape=page_shape, dtype=dtype)
    fast = _walk_bigtiff(path, page_shape, dtype) if tif.is_bigtiff and tif.byteorder == "<" else None
    if fast is not None:
        numbers, stamps, offsets = fast
        return _checked(ScanImageLayout(n_pages=len(numbers), frame_numbers=numbers, timestamps=stamps,
                                        offsets=offsets, **common))
    numbers, stamps, offsets = [], [], []
    contiguous = True
    frame_bytes = page_shape[0] * page_shape[1] * dtype.itemsize
    size = path.stat().st_size
    for page in pages:
        desc = page.description or ""
        number, stamp = _frame_stamp(desc)
        numbers.append(number)
        stamps.append(stamp)
        if tuple(page.shape) != page_shape or np.dtype(page.dtype) != dtype:
            raise UserError(f"{path}: its pages differ in size or sample type; not a ScanImage recording livedenoise can read")
        if contiguous:
            offs, counts = list(page.dataoffsets), list(page.databytecounts)
            ok = (
                page.compression == 1 and page.predictor == 1 and page.fillorder == 1
                and sum(counts) == frame_bytes
                and all(b == a + c for a, c, b in zip(offs, counts, offs[1:]))
            )
            if ok:
                if offs[0] + frame_bytes > size:
                    raise UserError(f"{path} is truncated: page {len(offsets)} points past the end of the file")
                offsets.append(offs[0])
            else:
                contiguous = False
    n_pages = len(numbers)
    if n_pages == 0:
        raise UserError(f"{path} contains no images")
    return _checked(ScanImageLayout(
        n_pages=n_pages, frame_numbers=np.asarray(numbers, np.int64), timestamps=np.asarray(stamps, np.float64),
        offsets=np.asarray(offsets, np.int64) if contiguous else None, **common,
    ))


def _checked(layout: ScanImageLayout) -> ScanImageLayout:
    """The layout once its pages can be placed (frameNumbers consistent; a numberless
    slow stack that holds whole stacks): UserError otherwise."""
    layout.frame_index()
    if layout.placed_by == "page order" and layout.planes > 1 and layout.frames_per_slice > 1:
        frames, stack = layout.n_pages // len(layout.channels), layout.planes * layout.frames_per_slice
        if frames % stack:
            raise UserError(
                f"{layout.path.name}: its header says {layout.planes} planes ({layout.plane_key}) of "
                f"{layout.frames_per_slice} frames each, but the file holds {frames} frames and no frameNumbers; "
                "cannot tell its planes apart"
            )
    return layout


def _walk_bigtiff(path: Path, shape: tuple[int, int], dtype: np.dtype):
    """Page table of a little-endian BigTIFF whose pages are single uncompressed strips.

    Reads only each IFD and its ImageDescription (not the large Software and
    Artist tags that ScanImage repeats on every page): tens of thousands of
    pages in about a second. None when a page does not fit that pattern (the
    caller then lets tifffile read every page).
    """
    import struct

    size = path.stat().st_size
    frame_bytes = shape[0] * shape[1] * dtype.itemsize
    numbers: list[int] = []
    stamps: list[float] = []
    offsets: list[int] = []
    seen = set()
    with open(path, "rb") as fh:
        head = fh.read(16)
        if len(head) < 16 or head[:4] != b"II+\0":
            return None
        ifd = struct.unpack_from("<Q", head, 8)[0]
        while ifd:
            if ifd in seen or ifd + 8 > size:
                return None
            seen.add(ifd)
            fh.seek(ifd)
            raw = fh.read(8)
            if len(raw) < 8:
                return None
            n = struct.unpack("<Q", raw)[0]
            if n > 4096:
                return None
            block = fh.read(n * 20 + 8)
            if len(block) < n * 20 + 8:
                return None
            tags = {}
            for k in range(n):
                tag, typ, count = struct.unpack_from("<HHQ", block, k * 20)
                tags[tag] = (typ, count, block[k * 20 + 12:k * 20 + 20])
            ifd = struct.unpack_from("<Q", block, n * 20)[0]

            def value(tag, default=None):
                if tag not in tags:
                    return default
                typ, count, raw8 = tags[tag]
                if count != 1:
                    return None
                fmt = {3: "<H", 4: "<I", 16: "<Q"}.get(typ)
                return struct.unpack_from(fmt, raw8)[0] if fmt else None

            if (value(256) != shape[1] or value(257) != shape[0] or value(259, 1) != 1
                    or value(317, 1) != 1 or value(266, 1) != 1 or value(277, 1) != 1
                    or value(258) != dtype.itemsize * 8 or value(279) != frame_bytes):
                return None
            off = value(273)
            if off is None or off + frame_bytes > size:
                return None
            desc = ""
            if 270 in tags:
                typ, count, raw8 = tags[270]
                if count <= 8:
                    desc = raw8[:count].decode("latin-1")
                else:
                    here = fh.tell()
                    fh.seek(struct.unpack_from("<Q", raw8)[0])
                    desc = fh.read(min(count, 1 << 16)).decode("latin-1")
                    fh.seek(here)
            number, stamp = _frame_stamp(desc)
            numbers.append(number)
            stamps.append(stamp)
            offsets.append(off)
    if not offsets:
        return None
    return np.asarray(numbers, np.int64), np.asarray(stamps, np.float64), np.asarray(offsets, np.int64)


class PageReader:
    """Reads single pages of a ScanImage TIFF by index (memory-mapped when possible)."""

    def __init__(self, layout: ScanImageLayout):
        self.layout = layout
        self._mm = None
        self._tif = None
        if layout.offsets is not None:
            self._mm = np.memmap(layout.path, dtype=np.uint8, mode="r")
        else:
            import tifffile

            # the real IFD chain, not tifffile's "virtual frames" of classic ScanImage files
            self._tif = tifffile.TiffFile(layout.path, is_scanimage=False)

    def read(self, page: int) -> np.ndarray:
        """Page `page` as a new (lines, pixels) array in native byte order."""
        lay = self.layout
        try:
            if self._mm is not None:
                off = int(lay.offsets[page])
                n = lay.shape[0] * lay.shape[1] * lay.dtype.itemsize
                raw = np.frombuffer(self._mm[off:off + n], dtype=lay.dtype).reshape(lay.shape)
                return raw.astype(lay.dtype.newbyteorder("="), copy=True)
            with quiet_tifffile():
                return np.asarray(self._tif.pages[page].asarray(maxworkers=1)).reshape(lay.shape).astype(
                    lay.dtype.newbyteorder("="), copy=False)
        except UserError:
            raise
        except Exception as exc:
            comp = None
            try:
                comp = self._tif.pages[page].compression if self._tif is not None else None
            except Exception:
                pass
            codec = missing_codec(lay.path, exc, comp)
            if codec is not None:
                raise codec from None
            raise UserError(f"{lay.path}: cannot read page {page} ({first_line(exc)}); the file may be truncated or corrupt") from None

    def close(self) -> None:
        if self._mm is not None:
            mm = getattr(self._mm, "_mmap", None)
            self._mm = None
            if mm is not None:
                try:
                    mm.close()
                except Exception:
                    pass
        if self._tif is not None:
            self._tif.close()
            self._tif = None


class ScanImageMovie(Movie):
    """One (channel, plane) stream of a ScanImage TIFF as a (T, lines, pixels) movie."""

    def __init__(self, layout: ScanImageLayout, channel: int, plane: int):
        self.layout = layout
        self.path = layout.path
        self.channel = int(channel)
        self.plane = int(plane)
        self.pages = layout.pages_of(layout.channels.index(self.channel), self.plane)
        self.shape = (int(len(self.pages)), *layout.shape)  # type: ignore[assignment]
        self.dtype = layout.dtype.newbyteorder("=")
        self.memmapped = layout.offsets is not None
        self.frame_numbers = layout.frame_numbers[self.pages]
        """ScanImage frameNumbers of each frame (from the page descriptions; -1 if missing)."""
        self.frame_step = layout.stream_frame_step
        self.frame_timestamps = layout.timestamps[self.pages]
        """frameTimestamps_sec of each frame (s since the acquisition started; NaN if missing)."""
        self._reader = PageReader(layout)

    @property
    def frame_rate(self) -> float:
        """Rate of this stream's frames in Hz (the volume rate for fast-z volumes; 0 when the header has none)."""
        return self.layout.stream_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = self._check_range(start, stop)
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        for k in range(start, stop):
            out[k - start] = self._reader.read(int(self.pages[k]))
        return out

    def close(self) -> None:
        self._reader.close()

    def describe(self) -> str:
        rate = f", {self.frame_rate:.3g} Hz" if self.frame_rate > 0 else ""
        return f"{super().describe()} ({self.layout.software} channel {self.channel}, plane {self.plane}{rate})"


def open_scanimage_movie(path: str | os.PathLike, channel: int | None = None, plane: int | None = None) -> ScanImageMovie:
    """The (channel, plane) stream of a ScanImage TIFF; see the module docstring for the rules."""
    layout = read_layout(path)
    name = layout.path.name
    if channel is None:
        if len(layout.channels) > 1:
            raise UserError(
                f"{name} holds {layout.describe_streams()}; pick a channel with --channel "
                f"(one of {', '.join(map(str, layout.channels))})"
            )
        channel = layout.channels[0]
    elif int(channel) not in layout.channels:
        raise UserError(
            f"{name} has no channel {channel}: ScanImage saved channel{'s' if len(layout.channels) > 1 else ''} "
            f"{', '.join(map(str, layout.channels))} only ({layout.channel_key}); pick one of them with --channel"
        )
    if plane is None:
        if layout.planes > 1:
            raise UserError(f"{name} holds {layout.describe_streams()}; pick a plane with --plane (1-{layout.planes})")
        plane = 1
    elif not 1 <= int(plane) <= layout.planes:
        avail = "plane 1 only" if layout.planes == 1 else f"planes 1-{layout.planes}"
        raise UserError(f"{name} has no plane {plane}: it holds {avail} ({layout.plane_key})")
    movie = ScanImageMovie(layout, int(channel), int(plane))
    if len(movie) == 0:
        movie.close()
        raise UserError(f"{name} holds no frame of channel {channel}, plane {plane}")
    try:
        movie.read(0, 1)  # a missing codec or a broken first page fails here, not mid-run
    except UserError:
        movie.close()
        raise
    return movie

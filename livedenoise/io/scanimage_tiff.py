"""Write ScanImage-style TIFFs (ScanImage 2016+ BigTIFF layout), for tests and docs.

ScanImage writes a BigTIFF whose first bytes after the 16-byte header hold its
static metadata block: magic 117637889 (0x07030301), the TIFF format version
(3 or 4), the lengths of the non-varying frame data and of the ROI group data,
then the frame data text (``SI.hChannels.channelSave = [1;2]`` ... one
``key = value`` line each, MATLAB syntax, NUL-terminated) and the ROI groups as
JSON. Every page repeats the frame data in its Software tag and the ROI groups
in its Artist tag, and carries its own ImageDescription (``frameNumbers = 1``,
``frameTimestamps_sec = 0.000000``, ``acquisitionNumbers = 1`` ...). Pages
interleave channels fastest, then the frames of a slice, then planes, then
volumes. `tifffile.TiffFile(path).is_scanimage` is True for these files and
`.scanimage_metadata` parses them, as for files from a rig.

>>> write_scanimage_tiff("scan.tif", volumes)            # volumes: (T, Z, C, H, W)

Older ScanImage versions kept their header in every page's ImageDescription
instead: ScanImage 3.x as ``state.acq.numberOfChannelsSave=1`` lines ending in
CR, ScanImage 4 / 5.0 as ``scanimage.SI4.channelsSave = [1;2]`` lines.
`write_legacy_scanimage_tiff` writes those (a classic TIFF, one page per saved
channel per frame):

>>> write_legacy_scanimage_tiff("old.tif", frames, version=3, saved=(2,), acquired=(1, 2), frame_rate=8.14)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import struct
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

SCANIMAGE_MAGIC = 117637889  # 0x07030301
_SAMPLE_FORMAT = {"u": 1, "i": 2, "f": 3}


def _matlab(value: Any) -> str:
    """A Python value as ScanImage writes it in its header (MATLAB syntax)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, float) and not np.isfinite(value):
        return "Inf" if value > 0 else ("-Inf" if value < 0 else "NaN")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value)) if isinstance(value, (float, np.floating)) and value != int(value) else str(int(value))
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            return "[]"
        if isinstance(value, tuple):  # column vector, as ScanImage writes channelSave
            return "[" + ";".join(_matlab(v) for v in value) + "]"
        return "[" + " ".join(_matlab(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as a ScanImage header value")


def frame_data_text(fields: Mapping[str, Any]) -> str:
    """The non-varying frame data (``SI.x.y = value`` lines)."""
    return "\n".join(f"{k} = {_matlab(v)}" for k, v in fields.items()) + "\n"


def frame_description(frame_number: int, timestamp: float, *, acquisition: int = 1,
                      frame_in_acquisition: int | None = None, epoch: Sequence[float] | None = None,
                      end_of_acquisition: bool = False) -> str:
    """One page's ImageDescription, in ScanImage's key = value form."""
    epoch = epoch or (2026, 1, 1, 12, 0, 0.0)
    ep = ",".join(f"{v:g}" for v in epoch)
    return (
        f"frameNumbers = {int(frame_number)}\n"
        f"acquisitionNumbers = {int(acquisition)}\n"
        f"frameNumberAcquisition = {int(frame_in_acquisition or frame_number)}\n"
        f"frameTimestamps_sec = {float(timestamp):.6f}\n"
        f"acqTriggerTimestamps_sec = \n"
        f"nextFileMarkerTimestamps_sec = \n"
        f"endOfAcquisition = {int(bool(end_of_acquisition))}\n"
        f"endOfAcquisitionMode = {int(bool(end_of_acquisition))}\n"
        f"dcOverVoltage = 0\n"
        f"epoch = [{ep}]\n"
        f"auxTrigger0 = []\n"
        f"auxTrigger1 = []\n"
        f"auxTrigger2 = []\n"
        f"auxTrigger3 = []\n"
        f"I2CData = {{}}\n"
    )


def _roi_groups(lines: int, pixels: int, zs: Sequence[float]) -> dict:
    scanfield = {
        "ver": 1, "classname": "scanimage.mroi.scanfield.fields.RotatedRectangle",
        "name": "Default Imaging Scanfield", "centerXY": [0, 0], "sizeXY": [18, 18],
        "rotationDegrees": 0, "enable": 1, "pixelResolutionXY": [pixels, lines],
        "pixelToRefTransform": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    }
    roi = {"ver": 1, "classname": "scanimage.mroi.Roi", "name": "Default Imaging Roi",
           "zs": list(zs) if len(zs) > 1 else (zs[0] if zs else 0), "scanfields": scanfield,
           "discretePlaneMode": 0, "powers": None, "pzAdjust": [], "Lzs": None}
    group = {"ver": 1, "classname": "scanimage.mroi.RoiGroup", "name": "Default Imaging ROI Group",
             "rois": roi}
    return {"RoiGroups": {"imagingRoiGroup": group, "photostimRoiGroups": None,
                          "integrationRoiGroup": {"ver": 1, "classname": "scanimage.mroi.RoiGroup",
                                                  "name": "", "rois": {"_ArrayType_": "double",
                                                                       "_ArraySize_": [1, 0], "_ArrayData_": None}}}}


def write_scanimage_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    channels: Sequence[int] | None = None,
    frame_rate: float = 30.0,
    zoom: float = 2.0,
    zs: Sequence[float] | None = None,
    slow_stack: bool = False,
    flyback_frames: int = 0,
    frame_numbers: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
    version: int = 4,
    extra: Mapping[str, Any] | None = None,
    frame_range: tuple[int, int | None] | None = None,
) -> Path:
    """Write `data` as a ScanImage TIFF; returns the path.

    data: (T, Z, C, H, W) — T volumes (or frames per slice for a slow stack), Z
    planes, C saved channels, H lines, W pixels per line; int16 (ScanImage's
    usual type), uint16 or float32. `channels` are the saved channel IDs
    (default 1..C). A fast-z stack (default when Z > 1) logs volume after
    volume, with `flyback_frames` blank frames ending each volume; a
    `slow_stack` logs all T frames of plane 1, then plane 2, ...
    `frame_numbers` / `timestamps`, shape (T, Z), override the frames'
    frameNumbers / frameTimestamps_sec (default: consecutive from 1, at
    `frame_rate`). `frame_range` (first, stop): log only those frames of the
    acquisition (0-based, in acquisition order, flyback frames counted), as one
    file of a multi-file acquisition: `(50, None)` starts the file at
    `frameNumbers = 51`, mid-volume unless 50 is a multiple of the frames per volume.
    """
    data = np.asarray(data)
    if data.ndim != 5:
        raise ValueError(f"data must be (T, Z, C, H, W), got shape {data.shape}")
    if data.dtype.kind not in "iuf":
        raise ValueError(f"data must be integers or floats, got {data.dtype}")
    data = data.astype(data.dtype.newbyteorder("<"), copy=False)
    n_t, n_z, n_c, lines, pixels = data.shape
    channels = tuple(int(c) for c in (channels if channels is not None else range(1, n_c + 1)))
    if len(channels) != n_c:
        raise ValueError(f"{len(channels)} channel IDs for {n_c} channels")
    zs = list(zs if zs is not None else [float(20 * k) for k in range(n_z)])
    fast = n_z > 1 and not slow_stack
    per_volume = n_z + (flyback_frames if fast else 0)

    # Acquisition order of ScanImage frames: (time index, plane index or -1 for flyback)
    order: list[tuple[int, int]] = []  # (t, z) with z = -1 for flyback
    if slow_stack:
        for z in range(n_z):
            for t in range(n_t):
                order.append((t, z))
    else:
        for t in range(n_t):
            for z in range(n_z):
                order.append((t, z))
            if fast:
                order.extend((t, -1) for _ in range(flyback_frames))
    if frame_numbers is None:
        frame_no = [i + 1 for i in range(len(order))]
    else:
        fn = np.asarray(frame_numbers).reshape(n_t, n_z)
        frame_no, last = [], 0
        for t, z in order:
            last = int(fn[t, z]) if z >= 0 else last + 1  # flyback frames count on
            frame_no.append(last)
    if timestamps is None:
        stamps = [(n - 1) / frame_rate for n in frame_no]
    else:
        ts = np.asarray(timestamps, dtype=float).reshape(n_t, n_z)
        stamps, last_t = [], 0.0
        for (t, z), n in zip(order, frame_no):
            last_t = float(ts[t, z]) if z >= 0 else last_t + 1 / frame_rate
            stamps.append(last_t)

    dtype_name = {"i": "int16", "u": "uint16", "f": "single"}[data.dtype.kind]
    fields: dict[str, Any] = {
        "SI.LINE_FORMAT_VERSION": 1,
        "SI.PREMIUM": False,
        "SI.TIFF_FORMAT_VERSION": int(version),
        "SI.VERSION_MAJOR": "2023" if version >= 4 else "2020",
        "SI.VERSION_MINOR": "1",
        "SI.acqState": "grab",
        "SI.acqsPerLoop": 1,
        "SI.hChannels.channelSave": tuple(channels) if n_c > 1 else channels[0],
        "SI.hChannels.channelsActive": tuple(channels) if n_c > 1 else channels[0],
        "SI.hChannels.channelDisplay": tuple(channels) if n_c > 1 else channels[0],
        "SI.hFastZ.enable": fast,
        "SI.hFastZ.discardFlybackFrames": False,
        "SI.hFastZ.numDiscardFlybackFrames": int(flyback_frames if fast else 0),
        "SI.hFastZ.numVolumes": int(n_t if fast else 1),
        "SI.hFastZ.numFramesPerVolume": int(per_volume if fast else 1),
        "SI.hRoiManager.linesPerFrame": int(lines),
        "SI.hRoiManager.pixelsPerLine": int(pixels),
        "SI.hRoiManager.scanFrameRate": float(frame_rate),
        "SI.hRoiManager.scanVolumeRate": float(frame_rate / per_volume) if fast else float(frame_rate),
        "SI.hRoiManager.scanZoomFactor": float(zoom),
        "SI.hScan2D.channelsDataType": "int16" if dtype_name == "int16" else dtype_name,
        "SI.hScan2D.logAverageFactor": 1,
        "SI.hStackManager.enable": n_z > 1,
        "SI.hStackManager.stackMode": "slow" if slow_stack else "fast",
        "SI.hStackManager.numSlices": int(n_z),
        "SI.hStackManager.actualNumSlices": int(n_z),
        "SI.hStackManager.framesPerSlice": int(n_t if slow_stack else 1),
        "SI.hStackManager.numVolumes": int(n_t if not slow_stack else 1),
        "SI.hStackManager.actualNumVolumes": int(n_t if not slow_stack else 1),
        "SI.hStackManager.numFramesPerVolume": int(n_z if fast else (n_z * n_t if slow_stack else 1)),
        "SI.hStackManager.numFramesPerVolumeWithFlyback": int(per_volume if fast else (n_z * n_t if slow_stack else 1)),
        "SI.hStackManager.zs": zs if len(zs) > 1 else (zs[0] if zs else 0),
        "SI.hStackManager.zsRelative": zs if len(zs) > 1 else (zs[0] if zs else 0),
    }
    if extra:
        fields.update(extra)
    frame_text = frame_data_text(fields).encode("ascii") + b"\0"
    roi_text = json.dumps(_roi_groups(lines, pixels, zs)).encode("ascii")
    artist = roi_text + b"\0"

    now = _dt.datetime(2026, 1, 1, 12, 0, 0)
    epoch = (now.year, now.month, now.day, now.hour, now.minute, now.second)
    blank = np.zeros((lines, pixels), data.dtype)
    pages: list[tuple[np.ndarray, bytes]] = []
    first, stop = frame_range if frame_range is not None else (0, None)
    keep = range(len(order))[first:stop]
    for i, ((t, z), n, ts) in enumerate(zip(order, frame_no, stamps)):
        if i not in keep:
            continue
        last = i == len(order) - 1
        desc = frame_description(n, ts, epoch=epoch, end_of_acquisition=last).encode("ascii") + b"\0"
        for c in range(n_c):
            img = data[t, z, c] if z >= 0 else blank
            pages.append((np.ascontiguousarray(img), desc))
    _write_bigtiff(Path(path), pages, frame_text, roi_text, artist, int(version))
    return Path(path)


def _write_bigtiff(path: Path, pages, frame_text: bytes, roi_text: bytes, artist: bytes, version: int) -> None:
    """BigTIFF with ScanImage's static block after the header; one strip per page."""
    out = bytearray()
    out += b"II" + struct.pack("<HHHQ", 43, 8, 0, 0)  # first IFD offset patched below
    out += struct.pack("<IIII", SCANIMAGE_MAGIC, version, len(frame_text), len(roi_text))
    out += frame_text + roi_text
    prev_next_at = 8  # where the previous "next IFD" pointer lives
    for img, desc in pages:
        while len(out) % 8:
            out += b"\0"
        h, w = img.shape
        itemsize = img.dtype.itemsize
        n_tags = 15
        ifd_at = len(out)
        ifd_size = 8 + n_tags * 20 + 8
        extra_at = ifd_at + ifd_size
        blobs = bytearray()

        def place(blob: bytes) -> int:
            nonlocal blobs
            off = extra_at + len(blobs)
            blobs += blob
            while len(blobs) % 8:
                blobs += b"\0"
            return off

        desc_off = place(desc)
        soft_off = place(frame_text)
        artist_off = place(artist)
        data_at = extra_at + len(blobs)
        entries = [
            (256, 4, 1, struct.pack("<I", w)),
            (257, 4, 1, struct.pack("<I", h)),
            (258, 3, 1, struct.pack("<H", itemsize * 8)),
            (259, 3, 1, struct.pack("<H", 1)),
            (262, 3, 1, struct.pack("<H", 1)),
            (270, 2, len(desc), struct.pack("<Q", desc_off)),
            (273, 16, 1, struct.pack("<Q", data_at)),
            (274, 3, 1, struct.pack("<H", 1)),
            (277, 3, 1, struct.pack("<H", 1)),
            (278, 4, 1, struct.pack("<I", h)),
            (279, 16, 1, struct.pack("<Q", h * w * itemsize)),
            (284, 3, 1, struct.pack("<H", 1)),
            (305, 2, len(frame_text), struct.pack("<Q", soft_off)),
            (315, 2, len(artist), struct.pack("<Q", artist_off)),
            (339, 3, 1, struct.pack("<H", _SAMPLE_FORMAT[img.dtype.kind])),
        ]
        assert len(entries) == n_tags
        struct.pack_into("<Q", out, prev_next_at, ifd_at)
        out += struct.pack("<Q", n_tags)
        for tag, typ, count, value in entries:
            out += struct.pack("<HHQ", tag, typ, count) + value.ljust(8, b"\0")
        prev_next_at = len(out)
        out += struct.pack("<Q", 0)
        out += blobs
        out += img.astype(img.dtype.newbyteorder("<"), copy=False).tobytes()
    path.write_bytes(bytes(out))


def state_header_text(fields: Mapping[str, Any]) -> str:
    """A ScanImage 3.x ImageDescription: ``state.x.y=value`` lines (MATLAB syntax) ending in CR."""
    return "".join(f"{k}={_matlab(v)}\r" for k, v in fields.items())


def write_legacy_scanimage_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    version: int = 3,
    saved: Sequence[int] | None = None,
    acquired: Sequence[int] | None = None,
    frame_rate: float = 8.0,
    zoom: float = 1.6,
    averaging: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `data` as a ScanImage 3.x (`state.*`) or 4 / 5.0 (`scanimage.SI4.*` / `SI5.*`) TIFF.

    data: (T, Z, C, H, W): T frames per slice (one saved frame per slice with
    `averaging`), Z slices, C saved channels, H lines, W pixels; uint16 or int16.
    Pages run slice after slice (a slow stack, as these versions logged stacks),
    frames of a slice in order, saved channels fastest. `saved` are the saved
    channel IDs (default 1..C), `acquired` the acquired ones (default `saved`).
    Version 5 pages also carry ``frameNumbers = n`` (1-based, per frame). `extra`
    adds or overrides header fields (full key names). Returns the path.
    """
    import tifffile

    data = np.asarray(data)
    if data.ndim != 5:
        raise ValueError(f"data must be (T, Z, C, H, W), got shape {data.shape}")
    n_t, n_z, n_c, lines, pixels = data.shape
    saved = tuple(int(c) for c in (saved if saved is not None else range(1, n_c + 1)))
    acquired = tuple(int(c) for c in (acquired if acquired is not None else saved))
    if len(saved) != n_c:
        raise ValueError(f"{len(saved)} saved channel IDs for {n_c} channels")
    if version == 3:
        fields: dict[str, Any] = {
            "state.configPath": "C:\\ScanImage\\ScanImage3.8", "state.configName": "rig",
            "state.software.version": 3.8, "state.software.minorRev": 1,
            "state.acq.numberOfZSlices": n_z, "state.acq.zStepSize": 2,
            "state.acq.numAvgFramesSave": 1, "state.acq.averaging": int(bool(averaging)),
            "state.acq.numberOfFrames": n_t, "state.acq.numberOfRepeats": 1,
            "state.acq.linesPerFrame": lines, "state.acq.pixelsPerLine": pixels,
            "state.acq.frameRate": float(frame_rate), "state.acq.zoomFactor": float(zoom),
        }
        for ch in range(1, 5):
            fields[f"state.acq.acquiringChannel{ch}"] = int(ch in acquired)
            fields[f"state.acq.savingChannel{ch}"] = int(ch in saved)
        fields["state.acq.numberOfChannelsSave"] = n_c
        fields["state.acq.numberOfChannelsAcquire"] = len(acquired)
        if extra:
            fields.update(extra)
        header = state_header_text(fields)
    elif version in (4, 5):
        key = f"scanimage.SI{version}."
        fields = {
            f"{key}versionMajor": f"{version}.0", f"{key}channelsSave": tuple(saved) if n_c > 1 else saved[0],
            f"{key}channelsActive": tuple(acquired) if len(acquired) > 1 else acquired[0],
            f"{key}stackNumSlices": n_z, f"{key}fastZEnable": False,
            f"{key}acqNumFrames": n_t, f"{key}acqNumAveragedFrames": 1,
            f"{key}scanFrameRate": float(frame_rate), f"{key}scanZoomFactor": float(zoom),
            f"{key}linesPerFrame": lines, f"{key}pixelsPerLine": pixels,
        }
        if extra:
            fields.update(extra)
        header = frame_data_text(fields)
    else:
        raise ValueError(f"version must be 3, 4 or 5, got {version}")
    frames = [(z, t) for z in range(n_z) for t in range(n_t)] if not averaging else [(z, 0) for z in range(n_z)]
    with tifffile.TiffWriter(path) as tw:
        for n, (z, t) in enumerate(frames, start=1):
            desc = (f"frameNumbers = {n}\n" + header) if version == 5 else header
            for c in range(n_c):
                tw.write(np.ascontiguousarray(data[t, z, c]), photometric="minisblack", description=desc,
                         metadata=None)
    return Path(path)

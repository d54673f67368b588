"""4D NIfTI (`.nii`, `.nii.gz`): fMRI runs read lazily volume by volume, and written back with the input's header.

Source: the NIfTI-1 format (https://nifti.nimh.nih.gov/nifti-1, `nifti1.h`), read
and written through `nibabel` (NIfTI-1 and NIfTI-2 single files). BIDS names
(`sub-01_task-rest_bold.nii.gz`) are ordinary inputs; `bids_entities` parses them.

Axes. A NIfTI image stores (i, j, k, t) voxel indices (`dim[1..4]`); this module
gives **time first**: `NiftiVolumes.read(a, b)` returns (b - a, I, J, K) volumes,
the spatial axes in the file's own voxel order (the affine maps (i, j, k) to
scanner mm), so nothing is flipped or resliced. `NiftiWriter.write` takes the same
(n, I, J, K) layout.

What is kept from the header: the whole header (`NiftiVolumes.header`, a copy of
which heads every output), the affine (sform/qform with their codes), the TR
(`pixdim[4]`, read in seconds through `xyzt_units`: s, ms or µs; none when the
header gives no temporal unit) and the units
(`xyzt_units`: spatial mm/µm/m, temporal s/ms/µs). Intensities are the stored
values with `scl_slope`/`scl_inter` applied (float32 when the header scales).

Refusals (UserError, one line, exit 2): a missing file, a file nibabel cannot read
as NIfTI, a 3D-only image (`dim[0] < 4` or a single volume), a 5D+ image with
more than one entry along its 5th..7th axes (ambiguous: which is time?), and a
time unit other than s/ms/µs (Hz, ppm, rad/s: not a series of volumes in time).

Writing follows the shared rule of `livedenoise.io.atomic`: data go to
`NAME.partial.nii[.gz]` and the file takes its final name only once complete.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.io import atomic
from livedenoise.io.movie import Movie

NIFTI_EXTS = (".nii", ".nii.gz")
TIME_TO_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}
"""NIfTI-1 temporal units (xyzt_units bits 3-5) that are time, in seconds."""
BIDS_NAME = re.compile(r"^(?P<entities>(?:[a-zA-Z0-9]+-[a-zA-Z0-9]+_)*)(?P<suffix>[a-zA-Z0-9]+)\.nii(?:\.gz)?$")


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True for a `.nii` or `.nii.gz` name (case-insensitive)."""
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def split_ext(path: str | os.PathLike) -> tuple[str, str]:
    """(stem, extension) with `.nii.gz` as one extension: `sub-01_bold.nii.gz` -> (`sub-01_bold`, `.nii.gz`)."""
    name = Path(path).name
    low = name.lower()
    for ext in (".nii.gz", ".nii"):
        if low.endswith(ext):
            return name[: -len(ext)], name[-len(ext):]
    raise UserError(f"{name} is not a NIfTI name; use .nii or .nii.gz")


def nifti_partial_path(final: str | os.PathLike) -> Path:
    """`out.nii.gz` -> `out.partial.nii.gz` (`.partial` before the whole extension, so NIfTI tools still read it)."""
    final = Path(final)
    stem, ext = split_ext(final)
    return final.with_name(stem + atomic.PARTIAL + ext)


def bids_entities(path: str | os.PathLike) -> dict[str, str]:
    """BIDS key-value entities of a name, plus `suffix`: `sub-01_task-x_bold.nii.gz` ->
    {"sub": "01", "task": "x", "suffix": "bold"}; {} for a name that is not BIDS-shaped."""
    m = BIDS_NAME.match(Path(path).name)
    if not m:
        return {}
    out = dict(part.split("-", 1) for part in m.group("entities").split("_") if part)
    out["suffix"] = m.group("suffix")
    return out


def bids_sidecar_tr(path: str | os.PathLike) -> float | None:
    """`RepetitionTime` (seconds) of the BIDS JSON sidecar beside `path` (`NAME.json`), or None when absent."""
    import json

    stem, _ = split_ext(path)
    side = Path(path).with_name(stem + ".json")
    if not side.is_file():
        return None
    try:
        tr = float(json.loads(side.read_text(encoding="utf-8")).get("RepetitionTime"))
    except (OSError, ValueError, TypeError, AttributeError):
        raise UserError(f"{side.name}: not a BIDS sidecar with a numeric RepetitionTime") from None
    return tr if np.isfinite(tr) and tr > 0 else None


def tr_seconds(header) -> float | None:
    """The repetition time in seconds from `pixdim[4]` and `xyzt_units`, or None when the header gives none
    (`pixdim[4]` 0, or no temporal unit in `xyzt_units`: the value is not guessed).

    Raises UserError when the temporal unit is not a time (Hz, ppm, rad/s).
    """
    _, t_unit = header.get_xyzt_units()
    tr = float(header["pixdim"][4])
    if t_unit not in TIME_TO_S and t_unit != "unknown":
        raise UserError(f"the 4th axis is in {t_unit!r}, not time (s, ms, µs): not a series of volumes")
    if t_unit == "unknown" or not np.isfinite(tr) or tr <= 0:
        return None  # no unit: pixdim[4] may be a writer's placeholder (nibabel writes 1.0); not guessed
    return tr * TIME_TO_S[t_unit]


class NiftiVolumes(Movie):
    """A 4D NIfTI run read lazily: `len()` volumes of shape `volume_shape` = (I, J, K).

    A `Movie` whose frames are volumes (`open_movie` dispatches `.nii`/`.nii.gz` here):
    `shape` is (T, I, J, K), `frame_shape` the volume shape, `frame_rate` 1 / TR
    (volumes per second) when the TR is known.

    Attributes: `path`, `shape` (T, I, J, K), `dtype` (the stored type, float32 when
    the header scales), `header` (nibabel header, a copy), `affine` ((4, 4) float64,
    voxel (i, j, k) -> mm), `tr` (seconds: the header's `pixdim[4]`, else a BIDS sidecar's
    `RepetitionTime`, else None), `tr_source` ("header", "sidecar" or None), `units`
    ((spatial, temporal) names from `xyzt_units`), `bids` (entities of a BIDS name).
    """

    def __init__(self, path: str | os.PathLike):
        import nibabel as nib

        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"NIfTI file {self.path} does not exist; check the path")
        if not is_nifti_path(self.path):
            raise UserError(f"{self.path.name} is not a NIfTI file; use .nii or .nii.gz")
        try:
            img = nib.load(str(self.path))
        except Exception as exc:  # nibabel's own error, reduced to one line
            raise UserError(f"{self.path.name}: not a readable NIfTI file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise UserError(f"{self.path.name}: not a single-file NIfTI image ({type(img).__name__})")
        shape = tuple(int(s) for s in img.shape)
        if len(shape) < 4 or shape[3] < 2:
            raise UserError(f"{self.path.name} is a 3D volume ({'x'.join(map(str, shape))}); "
                            "denoising needs a 4D run (x, y, z, time) of at least 2 volumes")
        if len(shape) > 4 and any(s != 1 for s in shape[4:]):
            raise UserError(f"{self.path.name} has {len(shape)} axes ({'x'.join(map(str, shape))}): which one is "
                            "time is ambiguous; give a 4D (x, y, z, time) file")
        self._img = img
        self.header = img.header.copy()
        self.affine = np.array(img.affine, dtype=np.float64)
        self.units = tuple(self.header.get_xyzt_units())
        try:
            self.tr = tr_seconds(self.header)
        except UserError as exc:
            raise UserError(f"{self.path.name}: {exc}") from None
        self.tr_source = "header" if self.tr is not None else None
        if self.tr is None:  # BIDS: the sidecar's RepetitionTime (seconds) when the header has none
            side = bids_sidecar_tr(self.path)
            if side is not None:
                self.tr, self.tr_source = side, "sidecar"
        slope, inter = self.header.get_slope_inter()
        self.scaled = not (slope in (None, 1.0) and inter in (None, 0.0))
        self.dtype = np.dtype(np.float32) if self.scaled else np.dtype(img.get_data_dtype()).newbyteorder("=")
        self.shape = (shape[3], shape[0], shape[1], shape[2])
        self.bids = bids_entities(self.path)
        self.frame_rate = 1.0 / self.tr if self.tr else None

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        return tuple(self.shape[1:])  # type: ignore[return-value]

    @property
    def frame_shape(self) -> tuple[int, int, int]:  # type: ignore[override]
        """A frame of this movie is a volume: (I, J, K)."""
        return self.volume_shape

    def read(self, start: int, stop: int) -> np.ndarray:
        """Volumes start..stop-1 as a new (stop - start, I, J, K) array of `dtype` (only those are read)."""
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"volumes {start}:{stop} outside 0:{len(self)} of {self.path}")
        index = (slice(None),) * 3 + (slice(start, stop),) + (0,) * (len(self._img.shape) - 4)
        block = np.asarray(self._img.dataobj[index])
        return np.ascontiguousarray(np.moveaxis(block, 3, 0), dtype=self.dtype)

    def describe(self) -> str:
        tr = f"TR {self.tr:g} s" if self.tr else "no TR in header"
        return f"{self.path.name}: {len(self)} volumes of {'x'.join(map(str, self.volume_shape))} voxels, {tr}"

    def close(self) -> None:
        self._img = None

    def __enter__(self) -> "NiftiVolumes":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_nifti(path: str | os.PathLike) -> NiftiVolumes:
    """Open a 4D NIfTI run (see the module docstring for axes and refusals)."""
    return NiftiVolumes(path)


class NiftiWriter:
    """Write (n, I, J, K) volumes, in order, into a 4D NIfTI whose header, affine, TR and units are `header`'s.

    `header`: the input's nibabel header, extensions included (its data type, shape and scaling are
    replaced: `n_volumes` x `volume_shape`, `dtype`, no scaling). Volumes are
    streamed to `NAME.partial.nii[.gz]` (gzip when the name ends in .gz) and the
    file is renamed to its final name by `close()` (or when the enclosing
    `atomic.Outputs` completes); `abort()` leaves the partial. ValueError for
    volumes of the wrong shape or too many.
    """

    def __init__(self, path: str | os.PathLike, header, n_volumes: int, volume_shape, dtype):
        self.path = Path(path)
        split_ext(self.path)  # UserError for a non-NIfTI name
        self.n_frames = int(n_volumes)
        self.volume_shape = tuple(int(s) for s in volume_shape)
        hdr = header.copy()  # header extensions (comments, AFNI, JSON) included
        hdr.set_data_dtype(np.dtype(dtype))
        hdr.set_data_shape((*self.volume_shape, self.n_frames))
        hdr.set_slope_inter(1.0, 0.0)
        hdr["vox_offset"] = 0  # recomputed by write_to
        self.header = hdr
        self._disk_dtype = hdr.get_data_dtype()
        self.written = 0
        self._out = atomic.Output(self.path, owner=self, progress=lambda: f"{self.written} of {self.n_frames} volumes")
        self._out.partial = nifti_partial_path(self.path)
        self._out.prepare()
        opener = gzip.open if self.path.name.lower().endswith(".gz") else open
        self._f = opener(self._out.partial, "wb")
        hdr.write_to(self._f)
        pad = int(hdr["vox_offset"]) - self._f.tell()
        if pad > 0:
            self._f.write(b"\x00" * pad)

    def write(self, volumes: np.ndarray) -> None:
        volumes = np.asarray(volumes)
        if volumes.ndim == 3:
            volumes = volumes[None]
        if volumes.shape[1:] != self.volume_shape:
            raise ValueError(f"volumes of {volumes.shape[1:]} for a file of {self.volume_shape}")
        if self.written + len(volumes) > self.n_frames:
            raise ValueError(f"{self.written + len(volumes)} volumes for a file of {self.n_frames}")
        for vol in volumes:  # NIfTI stores i fastest: each (I, J, K) volume in Fortran order
            self._f.write(np.asarray(vol, dtype=self._disk_dtype).tobytes(order="F"))
        self.written += len(volumes)

    def close(self) -> None:
        if self._f is None:
            return
        if self.written != self.n_frames:
            self.abort()
            raise ValueError(f"{self.written} of {self.n_frames} volumes written to {self.path.name}")
        self._f.close()
        self._f = None
        self._out.complete()

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self._out.interrupted(has_data=self.written > 0)

    def __enter__(self) -> "NiftiWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_nifti(path: str | os.PathLike, volumes: np.ndarray, header) -> None:
    """Write a whole (T, I, J, K) array as a 4D NIfTI with `header` (see `NiftiWriter`)."""
    volumes = np.asarray(volumes)
    with NiftiWriter(path, header, len(volumes), volumes.shape[1:], volumes.dtype) as w:
        w.write(volumes)


__all__ = ["NIFTI_EXTS", "NiftiVolumes", "NiftiWriter", "open_nifti", "write_nifti", "is_nifti_path",
           "bids_entities", "bids_sidecar_tr", "tr_seconds", "nifti_partial_path", "split_ext"]

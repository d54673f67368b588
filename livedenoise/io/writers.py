"""Write movies frame chunk by frame chunk, never holding the whole movie.

`open_writer(path, n_frames, frame_shape, dtype)` picks the format from the
extension: TIFF (.tif/.tiff; one uncompressed page per frame, contiguous, so
readers can memory-map it; BigTIFF once the pixels pass 2 GB) or HDF5
(.h5/.hdf5/.hdf; dataset `data`, chunked one frame per chunk, attributes from
`attrs`). Every writer follows the rule of `livedenoise.io.atomic`: frames go to
the partial file `<stem>.partial<ext>` (`out.tif` -> `out.partial.tif`), which
takes the final name only when every frame has been written and the writer
closes cleanly; an interrupted run (an exception, Ctrl-C) never leaves a half
movie under the final name, nor touches an existing file there, and keeps the
frames it wrote under the partial name (a TIFF is preallocated: frames past the
last written one are zeros).
"""

from __future__ import annotations

import contextlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import UserError
from livedenoise.io import atomic

TIFF_EXTS = (".tif", ".tiff")
HDF5_EXTS = (".h5", ".hdf5", ".hdf")
WRITER_EXTS = TIFF_EXTS + HDF5_EXTS
BIGTIFF_BYTES = 2**31 - 2**25  # classic TIFF offsets are 32-bit: leave room for headers


class MovieWriter(ABC):
    """Writes `n_frames` frames of `frame_shape` and `dtype` to `path` (through its partial name, see module doc)."""

    def __init__(self, path: Path, n_frames: int, frame_shape: tuple[int, int], dtype):
        self.path = path
        self.n_frames = int(n_frames)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.dtype = np.dtype(dtype)
        self.written = 0
        self._closed = False
        self._out = atomic.Output(path, owner=self, progress=lambda: f"{self.written} of {self.n_frames} frames")
        self._out.prepare()
        self.partial = self._out.partial

    def write(self, frames: np.ndarray) -> None:
        """Append (n, H, W) frames (or one (H, W) frame)."""
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        if frames.shape[1:] != self.frame_shape:
            raise ValueError(f"frames of shape {frames.shape[1:]} do not match the writer's {self.frame_shape}")
        n = frames.shape[0]
        if self.written + n > self.n_frames:
            raise ValueError(f"writing {n} frames would exceed the {self.n_frames} declared")
        self._write(self.written, frames.astype(self.dtype, copy=False))
        self.written += n

    @abstractmethod
    def _write(self, start: int, frames: np.ndarray) -> None: ...

    @abstractmethod
    def _finish(self) -> None:
        """Flush and close the file."""

    @abstractmethod
    def _release(self) -> None:
        """Close the file without flushing (idempotent)."""

    def close(self) -> None:
        """Finish the file; it takes its final name only when all frames were written.

        Errors: RuntimeError when fewer frames than declared were written (the partial
        file keeps them; `path` is untouched).
        """
        if self._closed:
            return
        self._closed = True
        complete = self.written == self.n_frames
        try:
            self._finish()
        except BaseException:
            self._release()
            self._out.interrupted(self.written > 0)
            raise
        if not complete:
            self._out.interrupted(self.written > 0)
            kept = f"they are kept in {self.partial}" if self.written else "nothing was kept"
            raise RuntimeError(f"{self.path}: only {self.written} of {self.n_frames} frames were written; {kept}")
        self._out.complete()

    def abort(self) -> None:
        """Stop: the frames written stay in the partial file (removed if none); `path` is left as it was."""
        if self._closed:
            return
        self._closed = True
        try:
            self._finish()
        except Exception:
            with contextlib.suppress(Exception):
                self._release()
        self._out.interrupted(self.written > 0)

    def __enter__(self) -> "MovieWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class TiffWriter(MovieWriter):
    """A preallocated, memory-mapped TIFF: each frame lands at its final place."""

    def __init__(self, path, n_frames, frame_shape, dtype, attrs=None):
        import tifffile

        super().__init__(path, n_frames, frame_shape, dtype)
        nbytes = self.n_frames * int(np.prod(self.frame_shape)) * self.dtype.itemsize
        self.bigtiff = nbytes > BIGTIFF_BYTES
        description = json.dumps({"shape": [self.n_frames, *self.frame_shape], **_jsonable(attrs or {})})
        self._mm = tifffile.memmap(
            self.partial,
            shape=(self.n_frames, *self.frame_shape),
            dtype=self.dtype,
            bigtiff=self.bigtiff,
            photometric="minisblack",
            description=description,
            metadata=None,
        )

    def _write(self, start, frames):
        self._mm[start:start + frames.shape[0]] = frames

    def _finish(self):
        self._mm.flush()
        self._release()

    def _release(self):
        mm = getattr(self, "_mm", None)
        self._mm = None
        if mm is not None:
            inner = getattr(mm, "_mmap", None)
            del mm
            if inner is not None:
                with contextlib.suppress(Exception):
                    inner.close()


class H5Writer(MovieWriter):
    def __init__(self, path, n_frames, frame_shape, dtype, attrs=None):
        import h5py

        super().__init__(path, n_frames, frame_shape, dtype)
        self._file = h5py.File(self.partial, "w")
        self._ds = self._file.create_dataset(
            "data", shape=(self.n_frames, *self.frame_shape), dtype=self.dtype, chunks=(1, *self.frame_shape)
        )
        for k, v in (attrs or {}).items():
            self._ds.attrs[k] = v if isinstance(v, (str, int, float, bool, np.generic, np.ndarray)) else json.dumps(v)

    def _write(self, start, frames):
        self._ds[start:start + frames.shape[0]] = frames

    def _finish(self):
        self._file.flush()
        self._release()

    def _release(self):
        f = getattr(self, "_file", None)
        self._file = None
        if f is not None:
            f.close()


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, np.generic):
            v = v.item()
        try:
            json.dumps(v)
        except TypeError:
            v = str(v)
        out[k] = v
    return out


def open_writer(
    path: str | os.PathLike,
    n_frames: int,
    frame_shape,
    dtype,
    *,
    attrs: dict[str, Any] | None = None,
) -> MovieWriter:
    """A writer for `n_frames` frames of `frame_shape`; the extension picks the format."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in WRITER_EXTS:
        raise UserError(f"cannot write {path.name}: unknown output format {ext or '(no extension)'!r}; use one of {', '.join(WRITER_EXTS)}")
    if not path.parent.exists():
        raise UserError(f"output folder {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name ending in {' or '.join(WRITER_EXTS)}")
    dtype = np.dtype(dtype)
    try:
        if ext in TIFF_EXTS:
            return TiffWriter(path, n_frames, tuple(frame_shape), dtype, attrs)
        return H5Writer(path, n_frames, tuple(frame_shape), dtype, attrs)
    except OSError as exc:
        with contextlib.suppress(OSError):
            atomic.partial_path(path).unlink()
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None

"""The `Movie` contract: a (frames, height, width) movie on disk, read in frame ranges.

Every reader (`livedenoise.io.readers` for TIFF / HDF5 / .npy,
`livedenoise.io.readers_scanimage` for ScanImage TIFFs) returns a subclass;
`open_movie` in `readers` picks the reader. Also what the readers share: how
a stored N-D array's axes map onto (T, H, W) (`parse_axes`, `axis_letter`,
`plan_axes`, `AxisPlan`: axis letters T Z Y X C, from the file's own labels or
`--axes`), one-line error text, the message for a missing TIFF codec, and
quiet tifffile logging.
"""

from __future__ import annotations

import contextlib
import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from livedenoise.errors import UserError


class Movie(ABC):
    """A (T, H, W) movie on disk, read in frame ranges."""

    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype
    memmapped: bool = False
    """True when reads come from a memory map (no file I/O until pages are touched)."""
    frame_numbers: np.ndarray | None = None
    """The file's own counter of each frame, (T,) int64, where the file has one: ScanImage
    `frameNumbers`, the `frame` dataset of a `serve --record` file. None otherwise (then
    frames are taken as consecutive). -1 marks a frame whose number is missing."""
    frame_step: int = 1
    """Increment of `frame_numbers` between consecutive frames of this movie (ScanImage
    counts every plane of a volume, so one plane's frames step by the frames per volume)."""
    frame_rate: float | None = None
    """Frames per second of this movie where the file says (ScanImage headers), else None."""

    def counters(self) -> np.ndarray | None:
        """`frame_numbers` when the file gives one for every frame, else None.

        Offline denoising passes them to the pipeline, so a jump in them splits the
        movie into segments exactly as the live service splits the same stream
        (stream/gaps.py).
        """
        fn = self.frame_numbers
        if fn is None or len(fn) != len(self) or (len(fn) and int(np.min(fn)) < 0):
            return None
        return np.asarray(fn, np.int64)

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """(H, W) of a frame; (I, J, K) where the frames are volumes (a NIfTI run)."""
        return tuple(int(s) for s in self.shape[1:])

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def _check_range(self, start: int, stop: int) -> tuple[int, int]:
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"frames {start}:{stop} outside 0:{len(self)} of {self.path}")
        return start, stop

    @abstractmethod
    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1 as a new (stop - start, H, W) array of `dtype`."""

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first frame index, frames) in consecutive pieces of at most `size` frames."""
        for a in range(0, len(self), size):
            yield a, self.read(a, min(len(self), a + size))

    def close(self) -> None:
        pass

    def __enter__(self) -> "Movie":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        t, *fs = self.shape
        return f"{self.path.name}: {t} frames of {'x'.join(map(str, fs))} {np.dtype(self.dtype).name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


@contextlib.contextmanager
def quiet_tifffile():
    """tifffile logs multi-line warnings about broken files; we report one line ourselves."""
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


_NEEDS_PACKAGE = re.compile(r"requires the '([A-Za-z0-9_.-]+)' package")


def missing_codec(path, exc: BaseException, compression=None) -> UserError | None:
    """The one-line error for a TIFF page whose compression needs a package that is not installed.

    tifffile decodes deflate and PackBits itself; LZW, zstd, LZMA, JPEG ... need
    `imagecodecs` (a livedenoise dependency): tifffile says "<COMPRESSION.LZW: 5>
    requires the 'imagecodecs' package", or fails to import a fallback module (zstd:
    "No module named 'compression'"). `compression`: the page's compression (tifffile's
    enum or a name) for the message. None for any other error.
    """
    text = str(exc)
    m = _NEEDS_PACKAGE.search(text)
    if m:
        pkg = m.group(1)
        codec = re.search(r"COMPRESSION\.(\w+)", text[: m.start()])
        name = codec.group(1) if codec else None
    elif isinstance(exc, ImportError) or text.startswith("No module named"):
        pkg, name = "imagecodecs", None
    else:
        return None
    if name is None and compression is not None:
        name = getattr(compression, "name", None) or str(compression)
    return UserError(
        f"{path}: its pages are compressed with {name or 'a codec tifffile cannot decode by itself'}, which needs "
        f"the Python package {pkg!r}; install it (pip install {pkg}) and run again (the file is not at fault)"
    )


# --------------------------------------------------------------------------- axes

AXIS_LETTERS = "TZYXC"
"""Axis letters of `--axes` and of `AxisPlan.axes`: T time (frames), Z planes, Y lines,
X pixels along a line, C channels."""

_LABELS = {
    "T": ("t", "time", "times", "frame", "frames", "timepoint", "timepoints", "tp"),
    "Z": ("z", "plane", "planes", "depth", "slice", "slices", "zplane", "zplanes"),
    "Y": ("y", "row", "rows", "line", "lines", "height"),
    "X": ("x", "col", "cols", "column", "columns", "width"),
    "C": ("c", "ch", "channel", "channels"),
}
_LABEL_TO_LETTER = {name: letter for letter, names in _LABELS.items() for name in names}


def parse_axes(text: str | None) -> str | None:
    """`--axes` as upper-case letters (e.g. "yxt" -> "YXT"); UserError when it is not a layout.

    Letters T Z Y X C, each at most once, with T, Y and X present: one letter per
    axis of the stored array, slowest-varying (first) axis first, as numpy / h5py
    report the shape.
    """
    if text is None:
        return None
    axes = str(text).strip().upper()
    bad = sorted(set(axes) - set(AXIS_LETTERS))
    if not axes or bad or len(set(axes)) != len(axes) or not {"T", "Y", "X"} <= set(axes):
        raise UserError(
            f"--axes {text!r} is not a layout: give one letter per axis of the stored array, first axis first, "
            "from T (time), Z (plane), Y (line), X (pixel), C (channel), each once, with T, Y and X "
            "(e.g. TYX, YXT, TZYXC)"
        )
    return axes


def axis_letter(label) -> str | None:
    """The axis letter of a dimension label ("t", "time", "frames", "z", "y", "x", "channel" ...), else None."""
    if isinstance(label, bytes):
        label = label.decode(errors="replace")
    if not isinstance(label, str):
        return None
    return _LABEL_TO_LETTER.get(label.strip().lower())


@dataclass(frozen=True)
class AxisPlan:
    """How a stored N-D array maps onto the (T, H, W) movie a reader returns.

    `axes` has one character per stored axis: T, Y, X (kept), Z and C (one plane /
    channel picked: `index`), or "-" for a dropped singleton axis (index 0).
    `source` says where the layout came from ("--axes", "DIMENSION_LABELS",
    "TIFF metadata (axes TZCYX)", or "position": (T, Y, X) by the format's convention).
    """

    axes: str
    shape: tuple[int, ...]
    index: tuple[int | None, ...]
    """Per stored axis: the fixed index (Z, C, "-" axes), None for T, Y, X."""
    source: str

    @property
    def movie_shape(self) -> tuple[int, int, int]:
        return tuple(int(self.shape[self.axes.index(a)]) for a in "TYX")  # type: ignore[return-value]

    @property
    def plane(self) -> int | None:
        """The plane read (1-based) when the array has a Z axis, else None."""
        return None if "Z" not in self.axes else int(self.index[self.axes.index("Z")]) + 1

    @property
    def channel(self) -> int | None:
        """The channel read (1-based) when the array has a C axis, else None."""
        return None if "C" not in self.axes else int(self.index[self.axes.index("C")]) + 1

    def key(self, start: int | None = None, stop: int | None = None) -> tuple:
        """Index into the stored array for frames start..stop-1 (all frames by default)."""
        return tuple(slice(start, stop) if a == "T" else slice(None) if a in "YX" else int(i)
                     for a, i in zip(self.axes, self.index))

    def arrange(self, block: np.ndarray) -> np.ndarray:
        """`block` (the stored array indexed by `key`) as (n, H, W): kept axes reordered to T, Y, X."""
        kept = [a for a in self.axes if a in "TYX"]
        order = [kept.index(a) for a in "TYX"]
        return block if order == [0, 1, 2] else block.transpose(order)

    def describe(self) -> str:
        text = "".join(a for a in self.axes if a != "-")
        picks = [f"{'plane' if a == 'Z' else 'channel'} {int(i) + 1}"
                 for a, i in zip(self.axes, self.index) if a in "ZC"]
        return f"axes {text} ({self.source}){', ' + ', '.join(picks) if picks else ''}"


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def plan_axes(
    name: str,
    shape: Sequence[int],
    *,
    given: str | None = None,
    labels: Sequence[str | None] | None = None,
    label_source: str = "labels",
    default: str | None = None,
    channel: int | None = None,
    plane: int | None = None,
) -> AxisPlan:
    """Map a stored array of `shape` onto (T, H, W); UserError (one line) where it cannot be done.

    The layout comes from, in order: `given` (`--axes`, one letter per axis, or one
    per axis of size > 1), `labels` (one letter or None per axis, from the file's own
    metadata, e.g. HDF5 DIMENSION_LABELS), `default` (one letter per axis, "-" for a
    dropped singleton: the reader's positional convention). A Z or C axis longer than 1 needs `plane` /
    `channel` (1-based); neither is picked silently.
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    big = [i for i, s in enumerate(shape) if s != 1]
    if given is not None:
        if len(given) == ndim:
            axes = given
        elif len(given) == len(big):
            axes = "".join(given[big.index(i)] if i in big else "-" for i in range(ndim))
        else:
            raise UserError(
                f"{name}: --axes {given} has {len(given)} letters but the array has {ndim} axes, shape "
                f"{_shape_text(shape)}; give one letter per axis"
            )
        source = "--axes"
    elif labels is not None and any(labels):
        letters = list(labels) + [None] * (ndim - len(labels))
        missing = [i for i in big if not letters[i]]
        if missing:
            raise UserError(
                f"{name}: its {label_source} {tuple(letters)} do not name axis {missing[0]} of shape "
                f"{_shape_text(shape)}; say the layout with --axes (letters T Z Y X C, e.g. TYX or TZYXC)"
            )
        axes = "".join(letters[i] or "-" for i in range(ndim))
        if len(set(a for a in axes if a != "-")) != len([a for a in axes if a != "-"]):
            raise UserError(f"{name}: its {label_source} name an axis twice ({axes}); say the layout with --axes")
        source = label_source
    elif default is not None:
        if len(default) != ndim:
            raise UserError(f"{name}: layout {default} does not fit shape {_shape_text(shape)}")
        axes = default
        source = "position"
    else:
        raise UserError(
            f"{name} has shape {_shape_text(shape)}; say which axis is which with --axes "
            "(letters T Z Y X C, e.g. TYX, YXT, TZYXC)"
        )
    for a in "TYX":
        if a not in axes:
            raise UserError(
                f"{name}: layout {axes.replace('-', '')} ({source}) has no {a} axis; livedenoise needs time (T), "
                "lines (Y) and pixels (X)"
            )
    stray = [(flag, what) for a, pick, flag, what in (("C", channel, "--channel", "C (channel)"),
                                                      ("Z", plane, "--plane", "Z (plane)"))
             if pick is not None and a not in axes]
    if stray:
        flags = " and ".join(f for f, _ in stray)
        raise UserError(
            f"{flags} {'apply' if len(stray) > 1 else 'applies'} to ScanImage TIFFs and to movies with a "
            f"{' or '.join(w for _, w in stray)} axis; {name} has none (layout {axes.replace('-', '')}, {source}): "
            f"leave {'them' if len(stray) > 1 else 'it'} out, or say the layout with --axes"
        )
    index: list[int | None] = []
    for a, n in zip(axes, shape):
        if a in "TYX":
            index.append(None)
        elif a == "-":
            index.append(0)
        else:
            pick, flag, what = (plane, "--plane", "planes") if a == "Z" else (channel, "--channel", "channels")
            if pick is None:
                if n > 1:
                    raise UserError(
                        f"{name} holds {n} {what} (axis {a} of {axes.replace('-', '')}, {source}); pick one with "
                        f"{flag} (1-{n})"
                    )
                pick = 1
            if not 1 <= int(pick) <= n:
                raise UserError(f"{name} has no {what[:-1]} {pick}: it holds {what} 1-{n}" if n > 1
                                else f"{name} has no {what[:-1]} {pick}: it holds {what[:-1]} 1 only")
            index.append(int(pick) - 1)
    return AxisPlan(axes, shape, tuple(index), source)

"""The one ring buffer: the newest `capacity` items of a sequence, addressed by absolute index.

An item is one frame (H, W) of a two-photon stream, one sample (channels,) of an
extracellular stream, or one scalar (a ROI trace value). Index i is the item's
position in its stream (first item = 0), so the window arithmetic
(`WindowSpec.source_indices`) is the same for a ring as for a file (the imaging
pipeline, stream/pipeline.py, offsets it by the start of each gap-free segment). Index i lives
in slot i % capacity; writing item i overwrites item i - capacity.

The ring is allocated once and never grows (no per-item allocation on the hot
path). Besides the items it keeps per-item scalar fields named at construction
(e.g. the source's frame or sample number, its timestamp, its arrival time).

Nothing here invents data: a read of an index the ring does not hold raises
(`span` alone fills indices outside 0..end-1 with a caller-given value, for
models whose documented edge rule is padding with the normalised mean).
Not thread-safe: the owner serialises access (a lock or a single thread).
"""

from __future__ import annotations

import numpy as np


class Ring:
    """Preallocated (capacity, *item_shape) ring plus per-item scalar fields.

    Parameters: `capacity` items (>= 1); `item_shape` of one item, () for scalars;
    `dtype` of the items; `fields`, name -> dtype of per-item scalars.
    Errors: ValueError for a capacity < 1, a wrongly shaped block, or a block
    written behind what the ring still holds; KeyError for an index not held.
    """

    def __init__(self, capacity: int, item_shape: tuple[int, ...] = (), dtype: np.dtype | str = np.float32,
                 fields: dict[str, np.dtype | str] | None = None):
        if int(capacity) < 1:
            raise ValueError("ring capacity must be >= 1 item")
        self.capacity = int(capacity)
        self.item_shape = tuple(int(s) for s in item_shape)
        self.dtype = np.dtype(dtype)
        self.data = np.zeros((self.capacity, *self.item_shape), self.dtype)
        self.fields = {name: np.zeros(self.capacity, np.dtype(dt)) for name, dt in (fields or {}).items()}
        self.end = 0
        """One past the highest index written (0: empty)."""

    # ------------------------------------------------------------------ indices
    @property
    def newest(self) -> int:
        """Highest index written (-1: none)."""
        return self.end - 1

    @property
    def oldest(self) -> int:
        """Lowest index still held."""
        return max(0, self.end - self.capacity)

    def __len__(self) -> int:
        return min(self.end, self.capacity)

    def holds(self, i: int) -> bool:
        return self.oldest <= i < self.end

    def slot(self, i: int) -> int:
        return i % self.capacity

    def reset(self) -> None:
        """Forget every item (a new segment starts at index 0); nothing is reallocated."""
        self.end = 0

    # ------------------------------------------------------------------ writing
    def append(self, items: np.ndarray, **values) -> int:
        """Append a block (n, *item_shape) after the newest item; returns the first index written.

        `values` give the per-item fields, each a scalar or n values. A block
        longer than the ring keeps only its newest `capacity` items (the ring
        can hold no more); the returned index is still that of the block's first item.
        """
        first = self.end
        self.assign(first, items, **values)
        return first

    def assign(self, first: int, items: np.ndarray, cols=None, **values) -> None:
        """Write items first..first+n-1 (n = len(items)); with `cols`, only those columns of each item.

        Indices may overwrite held items or extend the ring past `end` (skipped
        indices in between are left as they were and must not be read as data);
        an index older than `oldest` raises.
        """
        items = np.asarray(items)
        n = items.shape[0] if items.ndim else 1
        want = (n, *self.item_shape) if cols is None else None
        if want is not None and items.shape != want:
            raise ValueError(f"expected a block of shape (n, {', '.join(map(str, self.item_shape))}), got {items.shape}")
        if first < self.oldest:
            raise ValueError(f"index {first} is older than the oldest item held ({self.oldest})")
        if n == 0:
            return
        skip = max(0, n - self.capacity)
        idx = np.arange(first + skip, first + n) % self.capacity
        if cols is None:
            self.data[idx] = items[skip:]
        else:
            self.data[idx[:, None], np.atleast_1d(cols)[None, :]] = np.asarray(items).reshape(n, -1)[skip:]
        for name, v in values.items():
            arr = self.fields[name]
            v = np.asarray(v)
            arr[idx] = v if v.ndim == 0 else v[skip:]
        self.end = max(self.end, first + n)

    def put(self, item: np.ndarray, **values) -> int:
        """Append one item (item_shape) after the newest; returns its index. Allocates nothing.

        `values` give its per-item fields, one scalar each.
        """
        i = self.end
        s = i % self.capacity
        self.data[s] = item
        for name, v in values.items():
            self.fields[name][s] = v
        self.end = i + 1
        return i

    # ------------------------------------------------------------------ reading
    def item(self, i: int) -> np.ndarray:
        """View of item `i`; valid only until it is overwritten."""
        if not self.holds(i):
            raise KeyError(f"index {i} is not in the ring (holds {self.oldest}..{self.newest})")
        return self.data[i % self.capacity]

    def field(self, name: str, i: int):
        if not self.holds(i):
            raise KeyError(f"index {i} is not in the ring (holds {self.oldest}..{self.newest})")
        return self.fields[name][i % self.capacity]

    def take(self, indices, out: np.ndarray | None = None) -> np.ndarray:
        """Items at `indices` (any shape of int array), gathered into a new array (or `out`)."""
        idx = np.asarray(indices, np.int64)
        if idx.size and (idx.min() < self.oldest or idx.max() >= self.end):
            raise KeyError(f"indices {int(idx.min())}..{int(idx.max())} are not all in the ring "
                           f"(holds {self.oldest}..{self.newest})")
        return np.take(self.data, idx % self.capacity, axis=0, out=out)

    def span(self, a: int, b: int, fill=0) -> np.ndarray:
        """Items a..b-1 as a new (b - a, *item_shape) array; indices < 0 or >= end hold `fill`."""
        out = np.full((b - a, *self.item_shape), fill, self.dtype)
        lo, hi = max(a, 0), min(b, self.end)
        if hi > lo:
            out[lo - a:hi - a] = self.take(np.arange(lo, hi))
        return out

"""The layout: θ samples grouped by their observed y into fixed-shape rows, on the host and on the device.

Two host layouts share one type, ``Buckets``:

* **padded** (the reference design): one row per y, as wide as the largest bucket,
  shape (num_y, max_n). Simple, but for skewed bucket sizes most of it is padding
  (2–5× the number of samples at 10^6 simulations).
* **packed**: rows of a fixed width C; a y spans as many rows as it needs and each row is
  tagged with the index of its y (``row_y``). Only the last row of each y is padded, so the
  layout holds at most N + num_y·(C − 1) slots.

Each row's samples fill its first ``row_count`` slots, so the mask is implied (4 bytes per slot,
not 5). Padded slots hold the first θ of their own bucket (a finite, in-range value) and are
masked out with ``jnp.where`` by the loss, so they can never produce NaN or change a gradient.
The θ array is 64-byte aligned, which lets ``jax.device_put`` use it in place on CPU.

``to_data`` moves a layout to the device as ``Data``: rows grouped into cache-sized blocks (tiles),
each row with the weight of its samples in the objective, and the network inputs of every y.

Example:
    >>> import numpy as np
    >>> theta = np.array([0.1, 0.2, 0.3, 0.4, 0.5], np.float32)
    >>> y = np.array([1, 2, 1, 1, 2], np.int32)
    >>> b = bucket(theta, y)
    >>> b.theta.shape, b.y_values.tolist(), b.counts.tolist()
    ((2, 3), [1, 2], [3, 2])
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class _Summary:
    """What every host layout says about its y: ``y_values``, ``counts`` and ``theta`` as fields."""

    @property
    def num_y(self) -> int:
        return int(self.y_values.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum())

    @property
    def size(self) -> int:
        """Number of slots (or points) in the layout, padding included."""
        return int(self.theta.size)


class Codebook:
    """The distinct rows of vector observations y (n, M), in lexicographic order; ``encode`` maps a
    row to its index (its code), so that every layout groups θ by one integer per y.

    Built in one piece (``of``; ``build`` also gives the codes) or merged chunk by chunk (``merge``,
    ``from_chunks``): the result is the same, ``numpy.unique(y, axis=0)``. Any integers, negative ones
    included.

    Example:
        >>> book = Codebook.of(np.array([[1, -2], [0, 5], [1, -2]]))
        >>> book.rows.tolist(), book.encode(np.array([[1, -2], [3, 3]])).tolist()
        ([[0, 5], [1, -2]], [1, -1])
    """

    def __init__(self, rows: np.ndarray):
        rows = np.asarray(rows, np.int64)
        self.rows = rows.reshape(len(rows), rows.shape[1] if rows.ndim == 2 else 1)
        self._keys = _row_keys(self.rows)

    @classmethod
    def of(cls, y) -> Codebook:
        return cls.build(y)[0]

    @classmethod
    def build(cls, y) -> tuple[Codebook, np.ndarray]:
        """The codebook of y (n, M) and every row's code, from one lexicographic sort of the rows."""
        y = np.asarray(y, np.int64)
        if y.shape[0] == 0:
            return cls(np.zeros((0,) + y.shape[1:], np.int64)), np.zeros(0, np.int64)
        y = y.reshape(y.shape[0], -1)
        order = np.lexsort(y.T[::-1])  # the last key sorts first: column 0 is the primary key
        ordered = y[order]
        new = np.ones(len(y), bool)
        new[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
        codes = np.empty(len(y), np.int64)
        codes[order] = np.cumsum(new) - 1
        return cls(ordered[new]), codes

    def merge(self, y) -> Codebook:
        """The codebook of this one's rows and those of y."""
        y = np.asarray(y, np.int64).reshape(len(y), -1)
        return Codebook.of(np.concatenate([self.rows, y]) if self.rows.size else y)

    @classmethod
    def from_chunks(cls, chunks) -> Codebook:
        """One pass over a stream of (θ, y) chunks; memory: the distinct rows and one chunk."""
        book = None
        for _, y in chunks():
            book = Codebook.of(y) if book is None else book.merge(Codebook.of(y).rows)
        return book if book is not None else cls(np.zeros((0, 1), np.int64))

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def encode(self, y) -> np.ndarray:
        """Codes (n,) int64 of the rows y (n, M); −1 for a row not in the codebook."""
        keys = _row_keys(np.asarray(y, np.int64).reshape(len(y), -1))
        if len(self) == 0:
            return np.full(keys.shape, -1, np.int64)
        at = np.searchsorted(self._keys, keys).clip(0, len(self) - 1)
        return np.where(self._keys[at] == keys, at, -1).astype(np.int64)


def index_of(y_values: np.ndarray, y) -> np.ndarray:
    """The index of each observation of y in a layout's sorted ``y_values`` ((U,) or (U, M)); −1
    for an observation not among them. y: (n,) for scalar observations, (n, M) for vectors."""
    y_values = np.asarray(y_values)
    if y_values.ndim == 2:
        return Codebook(y_values).encode(y)
    y = np.asarray(y).reshape(-1)
    if y_values.size == 0:
        return np.full(y.shape, -1, np.int64)
    at = np.searchsorted(y_values, y).clip(0, y_values.size - 1)
    return np.where(y_values[at] == y, at, -1).astype(np.int64)


def _row_keys(y: np.ndarray) -> np.ndarray:
    """Each int64 row as one structured scalar: sorts and compares lexicographically."""
    dtype = np.dtype([(f"f{i}", "<i8") for i in range(y.shape[1])])
    return np.ascontiguousarray(y, np.int64).view(dtype).reshape(-1)


@dataclasses.dataclass(frozen=True)
class Buckets(_Summary):
    """θ samples laid out in rows, each row holding samples of a single y.

    Attributes:
        theta: float32 (rows, width); padded slots hold an in-range θ of the same bucket.
        row_count: int32 (rows,); real samples in each row, in its first slots (0 for the
            empty rows a layout may end with).
        row_y: int32 (rows,); index into ``y_values`` of the y each row belongs to.
        y_values: int32 (num_y,); the observed y values, increasing.
        counts: int32 (num_y,); number of samples for each y.
        low, high: float32 (num_y,); the smallest and largest θ of each y (in the layout's space),
            which bracket a quadrature reference.
    """

    theta: np.ndarray
    row_count: np.ndarray
    row_y: np.ndarray
    y_values: np.ndarray
    counts: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """bool (rows, width): True where a slot holds a real sample."""
        return np.arange(self.theta.shape[1])[None, :] < self.row_count[:, None]

    def without_samples(self) -> Buckets:
        """The same layout description with θ dropped (a zero-strided placeholder of the same
        shape), to release host memory once the samples are on the device."""
        return dataclasses.replace(self, theta=np.broadcast_to(np.float32(0), self.theta.shape))


def aligned_empty(shape, dtype=np.float32, align: int = 64) -> np.ndarray:
    """An uninitialized array whose data starts on an ``align``-byte boundary.

    ``jax.device_put`` of such an array on CPU shares its memory instead of copying it, which
    halves the peak memory of moving a large layout to the device.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + align, np.uint8)
    offset = -raw.ctypes.data % align
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _empty(values: np.ndarray, counts: np.ndarray) -> Buckets:
    """A layout with no rows (no y has enough samples)."""
    return Buckets(
        np.zeros((0, 1), np.float32),
        np.zeros(0, np.int32),
        np.zeros(0, np.int32),
        values.astype(np.int32),
        counts.astype(np.int32),
        np.zeros(0, np.float32),
        np.zeros(0, np.float32),
    )


def packed_width(num_samples: int, num_y: int, overhead: float = 0.1, minimum: int = 8) -> int:
    """A row width C for which the packed layout holds at most (1 + overhead)·N slots.

    Each y wastes less than one row, so C ≤ overhead·N / num_y bounds the padding; C is
    rounded down to a multiple of 8 (at least ``minimum``) to keep rows vector-friendly.
    """
    width = int(overhead * num_samples / max(num_y, 1))
    return max(minimum, width - width % 8)


def bucket(
    theta: np.ndarray,
    y: np.ndarray,
    *,
    width: int | None = None,
    min_count: int = 2,
) -> Buckets:
    """Groups θ by y into rows of ``width`` slots (default: one row per y, the padded layout).

    Vectorized: a stable argsort by y, then one scatter; no Python loop over samples.

    Args:
        theta: float array, shape (N,) or (N, D).
        y: integer array, shape (N,) (vector observations: their ``Codebook`` codes).
        width: row width C of the packed layout; ``None`` gives the padded layout.
        min_count: buckets with fewer samples are left out (the notebook skips y seen once).

    Returns:
        The ``Buckets``; empty (num_y == 0) when no y has ``min_count`` samples.
    """
    theta = np.asarray(theta, np.float32)
    theta = theta.reshape(-1) if theta.ndim < 2 else theta  # (N,) or (N, D)
    y = np.asarray(y).reshape(-1)
    if theta.shape[0] != y.shape[0]:
        raise ValueError(f"theta and y must have the same length, got {theta.shape} and {y.shape}")
    order = np.argsort(y, kind="stable")
    y_sorted = y[order]
    values, starts, counts = np.unique(y_sorted, return_index=True, return_counts=True)
    keep = counts >= min_count
    if theta.size:
        sorted_theta = theta[order]
        low = np.minimum.reduceat(sorted_theta, starts)[keep]
        high = np.maximum.reduceat(sorted_theta, starts)[keep]
    values, starts, counts = values[keep], starts[keep], counts[keep]
    num_y = values.shape[0]
    if num_y == 0:
        return _empty(values, counts)

    if width is None:
        width = int(counts.max())
    rows_per_y = -(-counts // width)  # ceil
    row_start = np.concatenate([[0], np.cumsum(rows_per_y)[:-1]])
    row_y = np.repeat(np.arange(num_y, dtype=np.int32), rows_per_y)

    # For each kept sample (in sorted order): its bucket j and rank r inside the bucket.
    j = np.repeat(np.arange(num_y), counts)
    first = np.repeat(starts, counts)
    rank = np.arange(first.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
    src = order[first + rank]
    row = row_start[j] + rank // width
    col = rank % width

    out = aligned_empty((row_y.size, width) + theta.shape[1:])
    out[:] = theta[order[starts]][row_y][:, None]  # padding: the bucket's own first θ
    out[row, col] = theta[src]
    return Buckets(
        out, _row_counts(counts, rows_per_y, width), row_y, values.astype(np.int32), counts.astype(np.int32), low, high
    )


def _row_counts(counts: np.ndarray, rows_per_y: np.ndarray, width: int, extra_rows: int = 0) -> np.ndarray:
    """Samples in each row when each y fills ``rows_per_y`` rows of ``width`` from the left."""
    rows = int(rows_per_y.sum())
    row_count = np.full(rows + extra_rows, width, np.int32)
    row_count[rows:] = 0
    last = np.cumsum(rows_per_y) - 1
    row_count[last] = counts - (rows_per_y - 1) * width
    return row_count


WIDE_ROWS = 128  # the narrowest packed rows for θ ∈ ℝ^D: a narrower row costs the full-covariance
#                 kernel more per slot than the padding a wider one adds (measured on the 2-D tasks)


def bucket_packed(theta: np.ndarray, y: np.ndarray, *, overhead: float = 0.1, min_count: int = 2) -> Buckets:
    """The packed layout with a width chosen by ``packed_width`` (at most (1 + overhead)·N slots;
    for θ ∈ ℝ^D rows of at least ``WIDE_ROWS``)."""
    y = np.asarray(y)
    _, counts = np.unique(y, return_counts=True)
    kept = counts >= min_count
    minimum = 8 if np.ndim(theta) == 1 else WIDE_ROWS
    width = packed_width(int(counts[kept].sum()), int(kept.sum()), overhead, minimum)
    return bucket(theta, y, width=width, min_count=min_count)


def layout_ratio(b: Buckets) -> float:
    """Slots per sample: 1.0 means no padding at all."""
    return b.size / max(b.num_samples, 1)


def bucket_streamed(chunks, *, overhead: float = 0.1, min_count: int = 2, spare_rows=None) -> Buckets:
    """The packed layout built from a re-iterable stream of (θ, y) chunks, in bounded memory.

    Two passes over ``chunks()`` (a function returning a fresh iterator that yields the same
    chunks each time): the first counts samples per y, which fixes the layout; the second
    scatters each chunk straight into its final slots, a cursor per y keeping the order. Peak
    memory is the layout (4 bytes per slot) plus one chunk of scratch.

    Args:
        chunks: callable returning an iterator of (theta (n,), y (n,)) pairs.
        overhead: padding budget, as in ``bucket_packed``.
        min_count: buckets with fewer samples are left out.
        spare_rows: optional ``f(rows, width) -> int``: empty rows (``row_count`` 0) to append,
            so that a consumer that needs more rows (``loss.to_data`` tiles) finds them in place
            instead of copying the layout.

    Returns:
        The packed ``Buckets``; its rows hold the same samples as ``bucket_packed`` of the
        concatenated chunks (within a y, in stream order).
    """
    counts = np.zeros(0, np.int64)
    for _, y in chunks():
        c = np.bincount(np.asarray(y), minlength=counts.size)
        c[: counts.size] += counts
        counts = c
    values = np.flatnonzero(counts >= min_count)
    kept = counts[values]
    num_y = values.size
    if num_y == 0:
        return _empty(values, kept)
    width = packed_width(int(kept.sum()), num_y, overhead)
    rows_per_y = -(-kept // width)
    rows = int(rows_per_y.sum())
    extra = 0 if spare_rows is None else int(spare_rows(rows, width))
    row_start = np.concatenate([[0], np.cumsum(rows_per_y)[:-1]])
    row_y = np.repeat(np.arange(num_y, dtype=np.int32), rows_per_y)
    row_y = np.concatenate([row_y, np.full(extra, num_y - 1, np.int32)])
    row_count = _row_counts(kept, rows_per_y, width, extra)
    theta_out = aligned_empty((rows + extra, width))
    index = np.full(counts.size, -1, np.int64)  # y value -> bucket j
    index[values] = np.arange(num_y)
    cursor = np.zeros(num_y, np.int64)
    first = np.full(num_y, np.nan, np.float32)
    low = np.full(num_y, np.inf, np.float32)
    high = np.full(num_y, -np.inf, np.float32)
    for theta, y in chunks():
        j = index[np.asarray(y)]
        keep = j >= 0
        j, theta = j[keep], np.asarray(theta, np.float32)[keep]
        order = np.argsort(j, kind="stable")
        j, theta = j[order], theta[order]
        starts = np.searchsorted(j, np.arange(num_y))
        rank = np.arange(j.size) - starts[j] + cursor[j]
        theta_out[row_start[j] + rank // width, rank % width] = theta
        seen = np.bincount(j, minlength=num_y)
        present = np.flatnonzero(seen)
        if present.size:
            low[present] = np.minimum(low[present], np.minimum.reduceat(theta, starts[present]))
            high[present] = np.maximum(high[present], np.maximum.reduceat(theta, starts[present]))
        new = (cursor == 0) & (seen > 0)
        first[new] = theta[starts[new]]
        cursor += seen
    last = row_start + rows_per_y - 1  # only each y's last row has padding: fill it with its first θ
    cols = np.arange(width)[None, :]
    theta_out[last] = np.where(cols < row_count[last][:, None], theta_out[last], first[:, None])
    theta_out[rows:] = first[-1]  # spare rows: empty, in range
    return Buckets(theta_out, row_count, row_y, values.astype(np.int32), kept.astype(np.int32), low, high)


# ----------------------------------------------------------------------------- on the device


class Data(NamedTuple):
    """Device arrays of a bucket layout, rows grouped in blocks for cache-sized tiles.

    Each row's samples fill its first ``row_count`` slots. Rows are padded to
    ``blocks × block_rows`` with empty rows (row_count 0, weight 0).
    """

    x: jax.Array  # (num_y,) network inputs (y − shift) / scale
    theta: jax.Array  # (blocks, block_rows, width), or (blocks, block_rows, width, D) for θ ∈ ℝ^D
    row_count: jax.Array  # (blocks, block_rows) real samples in each row
    row_y: jax.Array  # (blocks, block_rows) index of each row's y in x
    weight: jax.Array  # (blocks, block_rows) weight of each sample of the row: 1 / n_y or 1 / N;
    #                    (blocks, block_rows, width) for the binned layout: a point's share of its bin
    centre: jax.Array | None = None  # θ ∈ ℝ^D: (num_y, D) each y's mean point, the full kernel's origin

    @property
    def mask(self) -> jax.Array:
        """(blocks, block_rows, width) True where a slot holds a real sample."""
        return row_mask(self.row_count, self.theta.shape[self.row_count.ndim])


def _centres(theta: np.ndarray, row_count: np.ndarray, row_y: np.ndarray, weight, num_y: int):
    """(num_y, D) float64: the mean of each y's real points (weighted where points carry weights),
    the origin the full-covariance kernel expands around; computed once here, not every epoch."""
    rows, width, dim = theta.shape
    mask = np.arange(width)[None, :] < row_count[:, None]
    w = mask * (np.broadcast_to(weight[:, None], mask.shape) if weight.ndim == 1 else weight) + 0.0
    w = np.where(mask, np.where(w > 0, w, 1.0), 0.0)  # an equal-weight mean where weights vanish
    total = np.bincount(row_y, w.sum(axis=1), num_y)
    sums = np.stack([np.bincount(row_y, (w * theta[..., d]).sum(axis=1), num_y) for d in range(dim)], axis=1)
    return sums / np.maximum(total, 1e-300)[:, None]


def row_mask(row_count, width: int):
    """(..., width) True in the first ``row_count`` slots of each row."""
    return jax.lax.broadcasted_iota(jnp.int32, row_count.shape + (width,), row_count.ndim) < row_count[..., None]


BLOCK = 131_072  # samples per tile: 4 MiB per (width, K) float32 temporary (measured faster than 32k–256k)


def tile_shape(rows: int, width: int, block: int | None = BLOCK, shards: int = 1) -> tuple[int, int]:
    """``(blocks, block_rows)`` of ``to_data``'s tiles for a layout of ``rows`` rows.

    ``ceil(rows·width / block)`` blocks of equal row counts, a multiple of ``shards``
    (``block=None``: a single block).
    """
    blocks = 1 if block is None else max(1, -(-rows * width // block))
    block_rows = -(-rows // blocks)
    block_rows += (-block_rows) % shards
    return blocks, block_rows


def spare_rows(block: int | None = BLOCK, shards: int = 1):
    """``f(rows, width)``: the empty rows ``to_data`` appends, for ``bucket_streamed``."""

    def f(rows: int, width: int) -> int:
        blocks, block_rows = tile_shape(rows, width, block, shards)
        return blocks * block_rows - rows

    return f


def to_data(
    b: Buckets,
    embedding: tuple[float, float],
    dtype=jnp.float32,
    block: int | None = BLOCK,
    weighting: str = "per-y",
    shards: int = 1,
) -> Data:
    """Moves a ``Buckets`` layout to the device, with the objective's sample weights.

    Without a copy where possible: a float32 layout that already ends with the empty rows the
    tiles need (``bucket_streamed(spare_rows=...)``) goes to a CPU device in place; the device
    array then shares the memory of ``b.theta``, which must not be modified afterwards.

    Args:
        b: the bucket layout.
        embedding: (shift, scale) of the network inputs x = (y − shift) / scale.
        dtype: float dtype of θ, x and the weights.
        block: samples per tile; rows are grouped into ``ceil(rows·width / block)`` blocks
            (``None``: a single block).
        weighting: ``"per-y"``: weight 1 / n_y, so the loss is Σ_y of each y's mean NLL (the
            notebook's); ``"per-sample"``: weight 1 / N, the mean NLL over all samples.
        shards: devices the rows of each block will be split over; ``block_rows`` is padded to a
            multiple of it with empty rows (row_count 0, weight 0).

    Returns:
        ``Data`` with a leading block axis.
    """
    if weighting not in ("per-y", "per-sample"):
        raise ValueError(f"unknown weighting {weighting!r}")
    total, width = b.theta.shape[:2]
    used = int(np.flatnonzero(b.row_count)[-1]) + 1 if total else 0  # rows before the trailing empty ones
    blocks, block_rows = tile_shape(used, width, block, shards)
    rows = blocks * block_rows
    theta, row_count, row_y = b.theta[:rows], b.row_count[:rows], b.row_y[:rows]
    tail = b.theta.shape[2:]  # (D,) for θ ∈ ℝ^D
    if rows > total:  # one host copy with the empty rows appended
        theta = aligned_empty((rows, width) + tail, np.dtype(dtype))
        theta[:total], theta[total:] = b.theta, 0.0
        row_count = np.pad(b.row_count, (0, rows - total))
        row_y = np.pad(b.row_y, (0, rows - total))
    if weighting == "per-y":
        weight = 1.0 / b.counts[row_y].astype(np.float64)
    else:
        weight = np.full(rows, 1.0 / b.num_samples)
    weight = np.where(row_count > 0, weight, 0.0)
    shape = (blocks, block_rows)
    centre = _centres(theta, row_count, row_y, weight, b.num_y) if theta.ndim == 3 else None
    shift, scale = embedding
    # device_put of arrays already in their final dtype: no copy of an aligned float32 θ on CPU
    put = lambda a, dt=None: jax.device_put(np.asarray(a, dt))  # noqa: E731
    return Data(
        x=put((b.y_values - np.asarray(shift)) / np.asarray(scale), dtype),
        theta=put(theta.reshape(shape + (width,) + tail), dtype),
        row_count=put(row_count.reshape(shape), np.int32),
        row_y=put(row_y.reshape(shape), np.int32),
        weight=put(weight.reshape(shape), dtype),
        centre=None if centre is None else put(centre, dtype),
    )


# ----------------------------------------------------------------------------- binned


@dataclasses.dataclass(frozen=True)
class Binned(_Summary):
    """Each y's draws summarised by B bins over that y's own range, two points per bin.

    A bin with n draws, mean m and variance v becomes two points m ± √v carrying n/2 each, which
    reproduces its count, mean and variance exactly: the error of the binned loss against the
    per-sample loss comes from the bins' third and higher moments only. A bin with one draw puts
    both points on it. The layout is (num_y, 2B) whatever N is.

    Attributes:
        theta: float32 (num_y, 2B) the points (empty bins: the y's first point, weight 0).
        count: float64 (num_y, 2B) the draws each point stands for (half its bin's count).
        y_values, counts, low, high: as in ``Buckets``; ``low``/``high`` span each y's draws.
    """

    theta: np.ndarray
    count: np.ndarray
    y_values: np.ndarray
    counts: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def without_samples(self) -> Binned:
        return self  # already O(num_y · B): nothing to release

    @property
    def bin_width(self) -> np.ndarray:
        """(num_y,) the width of each y's bins (0 where all of a y's draws are equal)."""
        return (self.high.astype(np.float64) - self.low) / (self.theta.shape[1] // 2)


def merge_ranges(parts) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merges per-y (values, counts, low, high) summaries: counts add, ranges widen."""
    values = np.concatenate([p[0] for p in parts]).astype(np.int64)
    merged, inverse = np.unique(values, return_inverse=True)
    counts = np.bincount(inverse, np.concatenate([p[1] for p in parts]), merged.size).astype(np.int64)
    low = np.full(merged.size, np.inf)
    high = np.full(merged.size, -np.inf)
    np.minimum.at(low, inverse, np.concatenate([p[2] for p in parts]))
    np.maximum.at(high, inverse, np.concatenate([p[3] for p in parts]))
    return merged, counts, low, high


def bin_streamed(chunks, bins: int = 256, min_count: int = 2, combine=None) -> Binned:
    """The binned layout from a re-iterable stream of (θ, y) chunks, with no O(N) array.

    Pass one finds each y's count and range; pass two adds every draw to its (y, bin) sums of
    1, (θ − c) and (θ − c)² in float64, c the bin's centre (no cancellation in the variance).

    Args:
        chunks: callable returning an iterator of (theta (n,), y (n,)) pairs.
        bins: B, bins per y.
        min_count: y with fewer draws are left out.
        combine: for several processes, each streaming its own share of the draws: ``combine(a)``
            returns every process's array ``a`` (``mdnjax.parallel.allgather_rows``). The per-y
            ranges are merged after pass one and the (y, bin) sums added after pass two, so every
            process ends with the layout of all the draws.

    Returns:
        The ``Binned`` layout.
    """
    summary = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    for theta, y in chunks():  # pass one: count and range per y, merged chunk by chunk
        theta, y = np.asarray(theta, np.float64), np.asarray(y).astype(np.int64)
        order = np.argsort(y, kind="stable")
        v, starts, c = np.unique(y[order], return_index=True, return_counts=True)
        lo, hi = np.minimum.reduceat(theta[order], starts), np.maximum.reduceat(theta[order], starts)
        summary = merge_ranges([summary, (v, c, lo, hi)])
    if combine is not None:
        summary = merge_ranges(list(zip(*(combine(np.asarray(a)) for a in summary))))
    values, counts, low, high = summary
    keep = counts >= min_count
    values, counts, low, high = values[keep], counts[keep], low[keep], high[keep]
    num_y = values.size
    width = np.where(high > low, (high - low) / bins, 0.0)
    acc = np.zeros((3, num_y * bins))
    for theta, y in chunks():  # pass two: per-(y, bin) sums
        theta, y = np.asarray(theta, np.float64), np.asarray(y).astype(np.int64)
        j = np.searchsorted(values, y).clip(0, max(num_y - 1, 0))
        hit = (values.size > 0) & (values[j] == y) if values.size else np.zeros(y.shape, bool)
        j, theta = j[hit], theta[hit]
        b = np.zeros(j.size, np.int64)
        ok = width[j] > 0
        b[ok] = np.clip(np.floor((theta[ok] - low[j[ok]]) / width[j[ok]]), 0, bins - 1).astype(np.int64)
        d = theta - (low[j] + (b + 0.5) * width[j])
        flat = j * bins + b
        acc[0] += np.bincount(flat, minlength=acc.shape[1])
        acc[1] += np.bincount(flat, d, minlength=acc.shape[1])
        acc[2] += np.bincount(flat, d * d, minlength=acc.shape[1])
    if combine is not None:
        acc = np.sum(combine(acc[None]), axis=0)[0]  # every process's sums, in rank order
    n, s1, s2 = (a.reshape(num_y, bins) for a in acc)
    centre = low[:, None] + (np.arange(bins)[None, :] + 0.5) * width[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_d = np.where(n > 0, s1 / n, 0.0)
        sd = np.sqrt(np.clip(np.where(n > 0, s2 / n, 0.0) - mean_d**2, 0.0, None))
    mean = centre + mean_d
    points = np.stack([mean - sd, mean + sd], axis=-1).reshape(num_y, 2 * bins)
    count = np.repeat(n / 2.0, 2, axis=1)
    first = np.argmax(count > 0, axis=1) if num_y else np.zeros(0, int)
    fill = points[np.arange(num_y), first]
    points = np.where(count > 0, points, fill[:, None])  # empty bins: a finite in-range value, weight 0
    return Binned(
        points.astype(np.float32),
        count,
        values.astype(np.int32),
        counts.astype(np.int32),
        low.astype(np.float32),
        high.astype(np.float32),
    )


COLLAPSE = 0.25  # a component narrower than this share of its y's bin width sees the bins, not the draws


def collapsed(b: Binned, logits, log_vars, min_weight: float = 1e-3) -> list[dict]:
    """The y where some component (weight ≥ ``min_weight``) is narrower than ``COLLAPSE`` × the bin
    width: there the mixture can fit the two-point summaries instead of the draws.

    Args:
        b: the binned layout.
        logits, log_vars: (num_y, K) the trained mixture at ``b.y_values`` (fitting space).

    Returns:
        [{"y", "sd", "bin_width"}] for each such y.
    """
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    sd = np.where(w >= min_weight, np.exp(0.5 * np.asarray(log_vars, np.float64)), np.inf).min(axis=-1)
    width = b.bin_width
    bad = np.flatnonzero((width > 0) & (sd < COLLAPSE * width))
    return [{"y": _json_y(b.y_values[i]), "sd": float(sd[i]), "bin_width": float(width[i])} for i in bad]


def _json_y(y):
    """An observation for a JSON report: an int, or a list of ints for a vector y."""
    return int(y) if np.ndim(y) == 0 else [int(v) for v in np.ravel(y)]


def binned_to_data(
    b: Binned, embedding: tuple[float, float], dtype=jnp.float32, weighting: str = "per-sample", width: int = 128
) -> Data:
    """The binned layout on the device: each y's non-empty points packed into rows of ``width``
    (a sparse y's empty bins cost nothing), a weight per point.

    Args:
        b: the binned layout.
        embedding: (shift, scale) of the network inputs.
        dtype: float dtype.
        weighting: ``"per-sample"`` (a point's count / N) or ``"per-y"`` (count / n_y).
        width: points per row.

    Returns:
        ``Data`` with one block (scalar θ: a few hundred thousand points at most) or, for θ ∈ ℝ^D,
        cache-sized blocks as ``to_data`` makes them.
    """
    if weighting not in ("per-y", "per-sample"):
        raise ValueError(f"unknown weighting {weighting!r}")
    denominator = b.counts[:, None].astype(np.float64) if weighting == "per-y" else float(b.num_samples)
    keep = b.count > 0  # (num_y, 2B) or, for θ ∈ ℝ^D, (num_y, S)
    points, weights = b.theta[keep], (b.count / denominator)[keep]  # y by y, in order
    per_y = keep.sum(axis=1)
    width = int(min(width, max(int(per_y.max(initial=1)), 1)))
    rows_per_y = -(-per_y // width)
    row_start = np.concatenate([[0], np.cumsum(rows_per_y)[:-1]])
    row_y = np.repeat(np.arange(b.num_y), rows_per_y)
    j = np.repeat(np.arange(b.num_y), per_y)
    rank = np.arange(j.size) - np.repeat(np.cumsum(per_y) - per_y, per_y)
    row, col = row_start[j] + rank // width, rank % width
    first = points[np.cumsum(per_y) - per_y]  # each y's first point: finite, in range, for the padding
    theta = np.repeat(first[row_y][:, None], width, axis=1).astype(np.float32)
    theta[row, col] = points
    weight = np.zeros(theta.shape[:2])
    weight[row, col] = weights
    row_count = _row_counts(per_y, rows_per_y, width)
    tail = theta.shape[2:]
    blocks = 1
    if tail:  # θ ∈ ℝ^D keeps its draws at sparse y: cache-sized blocks, padded with empty rows
        blocks, block_rows = tile_shape(theta.shape[0], width)
        extra = blocks * block_rows - theta.shape[0]
        theta = np.concatenate([theta, np.repeat(theta[-1:], extra, axis=0)])
        weight, row_count = np.pad(weight, ((0, extra), (0, 0))), np.pad(row_count, (0, extra))
        row_y = np.pad(row_y, (0, extra), constant_values=b.num_y - 1)
    rows = theta.shape[0] // blocks
    centre = _centres(theta, row_count, row_y, weight, b.num_y) if tail else None
    shift, scale = embedding
    put = lambda a, dt=None: jax.device_put(np.asarray(a, dt))  # noqa: E731
    return Data(
        x=put((b.y_values - np.asarray(shift)) / np.asarray(scale), dtype),
        theta=put(theta.reshape((blocks, rows, width) + tail), dtype),
        row_count=put(row_count.reshape(blocks, rows), np.int32),
        row_y=put(row_y.reshape(blocks, rows), np.int32),
        weight=put(weight.reshape(blocks, rows, width), dtype),
        centre=None if centre is None else put(centre, dtype),
    )


# ----------------------------------------------------------------------------- binned, θ ∈ ℝ^D

CELLS = 1024  # cells per y for θ ∈ ℝ^D: round(CELLS^(1/D)) per coordinate (32 × 32 for D = 2)


def cells_per_coordinate(dim: int) -> int:
    return max(2, int(round(CELLS ** (1.0 / dim))))


def moment_points(n, mean, cov):
    """2D points that reproduce a cell's count, mean and covariance exactly: mean ± √(D λ_i) v_i over
    the eigenpairs (λ_i, v_i) of the covariance, each carrying n / 2D (for D = 1: the two-point rule).

    Args:
        n: (C,) counts; mean: (C, D); cov: (C, D, D).

    Returns:
        points (C, 2D, D) and counts (C, 2D).
    """
    dim = mean.shape[-1]
    lam, vec = np.linalg.eigh(cov)  # (C, D), (C, D, D): columns are eigenvectors
    step = np.sqrt(np.clip(lam, 0.0, None) * dim)[:, None, :] * vec  # (C, D, D): column i is √(Dλ_i) v_i
    offsets = np.swapaxes(step, 1, 2)  # (C, D, D): row i is √(Dλ_i) v_i
    points = np.concatenate([mean[:, None, :] + offsets, mean[:, None, :] - offsets], axis=1)
    return points, np.repeat((np.asarray(n, np.float64) / (2 * dim))[:, None], 2 * dim, axis=1)


def bin_nd(theta: np.ndarray, y: np.ndarray, bins: int | None = None, min_count: int = 2) -> Binned:
    """The binned layout for θ ∈ ℝ^D (in memory): each y whose draws outnumber the points its
    cells could give is summarised cell by cell (``bins`` per coordinate over that y's own range,
    ``moment_points`` per non-empty cell: count, mean and covariance exact, in float64); every other y
    keeps its draws, each a point of weight 1. The cost of an epoch is then bounded by
    num_y · 2D · bins^D points, whatever N is.

    Args:
        theta: (N, D) draws in the fitting space; y: (N,) integer codes.
        bins: cells per coordinate (default ``cells_per_coordinate(D)``).
        min_count: y with fewer draws are left out.

    Returns:
        ``Binned`` with ``theta`` (num_y, S, D), ``count`` (num_y, S), ``low``/``high`` (num_y, D).
    """
    theta = np.asarray(theta, np.float64)
    y = np.asarray(y).reshape(-1)
    dim = theta.shape[1]
    bins = bins or cells_per_coordinate(dim)
    values, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    keep_y = counts >= min_count
    j_of = np.full(values.size, -1)
    j_of[keep_y] = np.arange(keep_y.sum())
    values, counts = values[keep_y], counts[keep_y]
    j = j_of[inverse]
    theta, j = theta[j >= 0], j[j >= 0]
    num_y, cells = values.size, bins**dim
    low = np.full((num_y, dim), np.inf)
    high = np.full((num_y, dim), -np.inf)
    np.minimum.at(low, j, theta)
    np.maximum.at(high, j, theta)
    dense = counts > 2 * dim * cells  # summarising these y gives fewer points than their draws
    pts, wts = [None] * num_y, [None] * num_y
    order = np.argsort(j, kind="stable")
    by_y = np.split(theta[order], np.cumsum(counts)[:-1])  # each y's draws, in stream order
    for i in np.flatnonzero(~dense):  # sparse y: the draws themselves
        pts[i] = by_y[i]
        wts[i] = np.ones(len(pts[i]))
    if dense.any():
        at = dense[j]
        t, jd = theta[at], j[at]
        width = np.where(high > low, (high - low) / bins, 0.0)  # (num_y, D)
        index = np.zeros(len(t), np.int64)
        for d in range(dim):
            w = width[jd, d]
            c = np.where(w > 0, np.floor((t[:, d] - low[jd, d]) / np.where(w > 0, w, 1.0)), 0.0)
            index = index * bins + np.clip(c, 0, bins - 1).astype(np.int64)
        flat = jd * cells + index
        used, cell_of = np.unique(flat, return_inverse=True)
        n = np.bincount(cell_of, minlength=used.size).astype(np.float64)
        first = np.zeros(used.size, np.int64)
        first[cell_of[::-1]] = np.arange(len(t))[::-1]  # a draw of each cell: the centre of its sums
        centre = t[first]
        dx = t - centre[cell_of]
        s1 = np.stack([np.bincount(cell_of, dx[:, d], used.size) for d in range(dim)], axis=1)
        s2 = np.stack(
            [
                np.stack([np.bincount(cell_of, dx[:, a] * dx[:, b], used.size) for b in range(dim)], -1)
                for a in range(dim)
            ],
            axis=1,
        )
        mean_dx = s1 / n[:, None]
        cov = s2 / n[:, None, None] - mean_dx[:, :, None] * mean_dx[:, None, :]
        cell_pts, cell_wts = moment_points(n, centre + mean_dx, cov)
        owner = used // cells  # increasing: each dense y's cells are contiguous
        bounds = np.searchsorted(owner, np.arange(num_y + 1))
        for i in np.flatnonzero(dense):
            pts[i] = cell_pts[bounds[i] : bounds[i + 1]].reshape(-1, dim)
            wts[i] = cell_wts[bounds[i] : bounds[i + 1]].reshape(-1)
    size = max((len(p) for p in pts), default=1)
    points = np.zeros((num_y, size, dim))
    count = np.zeros((num_y, size))
    for i in range(num_y):
        points[i, : len(pts[i])] = pts[i]
        points[i, len(pts[i]) :] = pts[i][0]  # empty slots: a finite in-range value, weight 0
        count[i, : len(wts[i])] = wts[i]
    return Binned(
        points.astype(np.float32),
        count,
        values.astype(np.int64),
        counts.astype(np.int32),
        low.astype(np.float32),
        high.astype(np.float32),
    )


def collapsed_nd(b: Binned, logits, covariances, min_weight: float = 1e-3, bins: int | None = None) -> list[dict]:
    """``collapsed`` for θ ∈ ℝ^D: the summarised y where some component (weight ≥ ``min_weight``) is
    narrower, along some coordinate, than ``COLLAPSE`` × that coordinate's cell width.

    Args:
        b: the layout of ``bin_nd``.
        logits: (num_y, K); covariances: (num_y, K, D, D) the trained components (fitting space).
        bins: the cells per coordinate ``bin_nd`` used (default: its default).

    Returns:
        [{"y", "sd", "cell_width", "coordinate"}] for each such y.
    """
    dim = b.theta.shape[-1]
    bins = bins or cells_per_coordinate(dim)
    dense = b.counts > 2 * dim * bins**dim
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    sd = np.sqrt(np.diagonal(np.asarray(covariances, np.float64), axis1=-2, axis2=-1))  # (num_y, K, D)
    sd = np.where((w >= min_weight)[..., None], sd, np.inf).min(axis=1)  # (num_y, D)
    width = (b.high.astype(np.float64) - b.low) / bins
    bad = dense[:, None] & (width > 0) & (sd < COLLAPSE * width)
    out = []
    for i in np.flatnonzero(bad.any(axis=1)):
        d = int(np.argmax(bad[i] * (width[i] / np.maximum(sd[i], 1e-300))))
        y = b.y_values[i]
        out.append(
            {"y": np.ravel(y).tolist(), "sd": float(sd[i, d]), "cell_width": float(width[i, d]), "coordinate": d}
        )
    return out

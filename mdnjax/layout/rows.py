"""Host row layouts of the draws: θ grouped by y into fixed-width rows (padded, packed, streamed).

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

"""Host layouts onto the device: rows grouped into cache-sized blocks (tiles), each row with the
weight of its samples in the objective, and the network inputs of every y (``mdnjax.data.Data``).

Example:
    >>> tile_shape(1000, 256, block=131_072)
    (2, 500)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax.data import Data, network_inputs
from mdnjax.layout.binned import Binned
from mdnjax.layout.rows import Buckets, _row_counts, aligned_empty


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
    # device_put of arrays already in their final dtype: no copy of an aligned float32 θ on CPU
    put = lambda a, dt=None: jax.device_put(np.asarray(a, dt))  # noqa: E731
    return Data(
        x=put(network_inputs(b.y_values, embedding), dtype),
        theta=put(theta.reshape(shape + (width,) + tail), dtype),
        row_count=put(row_count.reshape(shape), np.int32),
        row_y=put(row_y.reshape(shape), np.int32),
        weight=put(weight.reshape(shape), dtype),
        centre=None if centre is None else put(centre, dtype),
    )


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
    put = lambda a, dt=None: jax.device_put(np.asarray(a, dt))  # noqa: E731
    return Data(
        x=put(network_inputs(b.y_values, embedding), dtype),
        theta=put(theta.reshape((blocks, rows, width) + tail), dtype),
        row_count=put(row_count.reshape(blocks, rows), np.int32),
        row_y=put(row_y.reshape(blocks, rows), np.int32),
        weight=put(weight.reshape(blocks, rows, width), dtype),
        centre=None if centre is None else put(centre, dtype),
    )

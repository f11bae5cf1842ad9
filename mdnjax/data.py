"""The training data on the device (``Data``): what every kernel reads, with no host code.

Rows of θ samples (or weighted points) grouped in blocks for cache-sized tiles, each row tagged
with its y; the network inputs of every y. ``mdnjax.layout.device`` builds it from a host layout.

Example:
    >>> import jax.numpy as jnp
    >>> row_mask(jnp.array([2, 0]), 3).tolist()
    [[True, True, False], [False, False, False]]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


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


def row_mask(row_count, width: int):
    """(..., width) True in the first ``row_count`` slots of each row."""
    return jax.lax.broadcasted_iota(jnp.int32, row_count.shape + (width,), row_count.ndim) < row_count[..., None]


def network_inputs(y, embedding) -> np.ndarray:
    """x = (y − shift) / scale in float64: the network input of observations y ((n,) or (n, M)),
    ``embedding`` = (shift, scale) (scalars, or one per component of a vector y)."""
    shift, scale = embedding
    return (np.asarray(y, np.float64) - np.asarray(shift, np.float64)) / np.asarray(scale, np.float64)

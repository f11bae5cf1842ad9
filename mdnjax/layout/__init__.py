"""Layouts of the draws: θ grouped by their observed y into fixed-shape rows or binned summaries.

The data travel one way through this package:

* ``codebook``: vector observations as one integer code per distinct y.
* ``rows``: the host row layouts (``Buckets``: padded, packed, streamed).
* ``binned``: the binned layouts (``Binned``: two points per bin, or moment points per cell).
* ``device``: a host layout onto the device as ``mdnjax.data.Data`` (tiles, weights, inputs).
* ``build``: which layout a run uses (``plan``, the one place that reads a layout's name) and
  building it from a run's simulations.
* ``choose``: ``layout="auto"``: bucketed when the observations repeat, per sample otherwise.

Example:
    >>> import numpy as np
    >>> b = bucket(np.array([0.1, 0.2, 0.3, 0.4], np.float32), np.array([1, 2, 1, 2]))
    >>> b.y_values.tolist(), b.counts.tolist()
    ([1, 2], [2, 2])
"""

from mdnjax.data import Data, row_mask
from mdnjax.layout.binned import Binned, bin_nd, bin_streamed, cells_per_coordinate, merge_ranges, moment_points
from mdnjax.layout.build import MIN_COUNT, Plan, bucket_budget, build_layout, describe_budget, plan
from mdnjax.layout.choose import Choice, choose
from mdnjax.layout.codebook import Codebook, index_of
from mdnjax.layout.device import BLOCK, binned_to_data, spare_rows, tile_shape, to_data
from mdnjax.layout.rows import (
    Buckets,
    aligned_empty,
    bucket,
    bucket_packed,
    bucket_streamed,
    layout_ratio,
    packed_width,
)

__all__ = [
    "BLOCK",
    "MIN_COUNT",
    "Binned",
    "Buckets",
    "Choice",
    "Codebook",
    "Data",
    "Plan",
    "aligned_empty",
    "bin_nd",
    "bin_streamed",
    "bucket",
    "bucket_budget",
    "bucket_packed",
    "bucket_streamed",
    "build_layout",
    "cells_per_coordinate",
    "choose",
    "describe_budget",
    "index_of",
    "layout_ratio",
    "merge_ranges",
    "moment_points",
    "packed_width",
    "plan",
    "row_mask",
    "spare_rows",
    "tile_shape",
    "to_data",
    "binned_to_data",
]

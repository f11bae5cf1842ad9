"""A dataset folder of stored simulations: a manifest and shards of (θ, y), written atomically,
opened with every shard verified, appended to with new seeds.

The folder (readable without mdnjax: JSON and NumPy ``.npy`` files)::

    DATA/
      manifest.json        format, version, the task's record, θ's support, θ and y dtypes and shapes,
                           and one "part" per simulation run (seed, samples, shard size, seeding)
      shards/00000.json    one record per complete shard: rows, seed, SHA-256 of both arrays
      shards/00000.theta.npy   θ as the simulator drew it (float64, (rows,) or (rows, D))
      shards/00000.y.npy       y (int64 or float64, (rows,) or (rows, M))

A shard's arrays are written first, its record last (each through a temporary file and a rename),
so a shard without a record is incomplete and is drawn again; a record whose checksums do not match
its arrays names the shard. Shard i of a part with seed s draws from ``default_rng([s, i])``; a part
of one shard of at most ``sources.CHUNK`` draws from ``default_rng(s)``: exactly the draws a run
with that seed trains on inline, so training from the dataset is bitwise training inline.

Example:
    >>> import tempfile, numpy as np
    >>> from mdnjax import tasks
    >>> path = tempfile.mkdtemp() + "/beta"
    >>> data = simulate(tasks.BetaBinomial(), 1_000, path, seed=0)
    >>> data.count, data.y_kind, data.read(0, 3)[1].dtype
    (1000, 'counts', dtype('int64'))
"""

from mdnjax.datasets.folder import (
    MANIFEST,
    SHARD_SIZE,
    SHARDS,
    Arrays,
    Dataset,
    DatasetError,
    heldout_rows,
    open_dataset,
    task_for,
    task_record,
    write_arrays,
)
from mdnjax.datasets.simulate import merge, simulate
from mdnjax.datasets.tables import read_table, write_parquet

__all__ = [
    "MANIFEST",
    "SHARDS",
    "SHARD_SIZE",
    "Arrays",
    "Dataset",
    "DatasetError",
    "heldout_rows",
    "merge",
    "open_dataset",
    "read_table",
    "simulate",
    "task_for",
    "task_record",
    "write_arrays",
    "write_parquet",
]

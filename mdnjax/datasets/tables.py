"""Simulations as tables: ``.npz``, CSV and Parquet in (named columns, a column mapping), Parquet
out (``pyarrow``: the ``data`` extra); see ``mdnjax.datasets``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdnjax.datasets.folder import Arrays, Dataset, DatasetError


def read_table(path, theta_columns=None, y_columns=None) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(θ, y, θ's names) from ``.npz`` (arrays ``theta`` and ``y``, or the names given), ``.csv``
    or ``.parquet`` (named columns: ``theta_columns`` and ``y_columns``; by default the columns
    named ``theta*``/``y*``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            t, v = (theta_columns or ["theta"])[0], (y_columns or ["y"])[0]
            missing = [k for k in (t, v) if k not in z.files]
            if missing:
                raise DatasetError(f"{path} has no array {missing[0]!r} (it holds {', '.join(z.files)})")
            return np.asarray(z[t]), np.asarray(z[v]), None
    if suffix == ".csv":
        with open(path) as f:
            header = f.readline().strip().split(",")
        table = np.genfromtxt(path, delimiter=",", skip_header=1, ndmin=2)
        columns = {name.strip(): table[:, i] for i, name in enumerate(header)}
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DatasetError("reading Parquet needs pyarrow: pip install 'mdnjax[data]'") from None
        t = pq.read_table(path)
        columns = {name: t.column(name).to_numpy() for name in t.column_names}
    else:
        raise DatasetError(f"{path}: read .npz, .csv or .parquet, not {suffix or 'a file without a suffix'}")
    theta_columns = theta_columns or [c for c in columns if c.startswith("theta")]
    y_columns = y_columns or [c for c in columns if c.startswith("y")]
    for c in [*theta_columns, *y_columns]:
        if c not in columns:
            raise DatasetError(f"{path} has no column {c!r} (it has {', '.join(columns)})")
    if not theta_columns or not y_columns:
        raise DatasetError(f"{path}: name the θ and y columns (it has {', '.join(columns)})")
    theta = np.stack([np.asarray(columns[c], np.float64) for c in theta_columns], axis=1)
    y = np.stack([np.asarray(columns[c]) for c in y_columns], axis=1)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)  # a CSV writes counts as numbers: integers they are
    return theta[:, 0] if theta.shape[1] == 1 else theta, y[:, 0] if y.shape[1] == 1 else y, theta_columns


def write_parquet(data: Dataset | Arrays, out) -> None:
    """Exports a dataset to one Parquet file: columns theta_0.., y_0.. (or ``theta``/``y``)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError("writing Parquet needs pyarrow: pip install 'mdnjax[data]'") from None
    theta, y = data.read(0, data.count)
    cols = {}
    for name, a in (("theta", np.asarray(theta)), ("y", np.asarray(y))):
        if a.ndim == 1:
            cols[name] = a
        else:
            cols.update({f"{name}_{i}": a[:, i] for i in range(a.shape[1])})
    pq.write_table(pa.table(cols), str(out))

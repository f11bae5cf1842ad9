"""The codebook of vector observations: each distinct row of y (n, M) as one integer code.

Example:
    >>> import numpy as np
    >>> index_of(np.array([1, 4, 9]), np.array([4, 5])).tolist()
    [1, -1]
"""

from __future__ import annotations

import numpy as np


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

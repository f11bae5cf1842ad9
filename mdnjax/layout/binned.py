"""Binned layouts: each y's draws summarised by weighted points whose count grows with the bins,
not with N (two points per bin for a scalar θ, 2D moment points per cell for θ ∈ ℝ^D).

Example:
    >>> import numpy as np
    >>> theta = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> b = bin_streamed(lambda: iter([(theta, y)]), bins=2)
    >>> b.theta.shape, b.count.sum(axis=1).tolist()
    ((2, 4), [3.0, 3.0])
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mdnjax.layout.rows import _Summary


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

"""Single (θ, y) pairs for the per-sample layout: the run's pairs (simulated, stored or given),
standardisation, the validation split and the minibatches of each pass, drawn from a key (the
same key and pass give the same batches).

Example:
    >>> import numpy as np

from mdnjax import sources
from mdnjax.config import ConfigError
from mdnjax.simulation import merge_stats
    >>> s = standardise(np.array([[1.0, 10.0], [3.0, 10.0]]))
    >>> s.shift.tolist(), s.scale.tolist()
    ([2.0, 10.0], [1.0, 1.0])
    >>> train, val = split(10, 0.2, seed=0)
    >>> len(train), len(val), sorted([*train, *val]) == list(range(10))
    (8, 2, True)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import sources
from mdnjax.config import ConfigError
from mdnjax.simulation import merge_stats

SPLIT_STREAM = 0x5B17  # the validation split's own random stream


class Standard(NamedTuple):
    """z = (a − shift) / scale per column, each (C,) float64."""

    shift: np.ndarray
    scale: np.ndarray

    def apply(self, a) -> np.ndarray:
        a = np.asarray(a, np.float64)
        return ((a.reshape(a.shape[0], -1) - self.shift) / self.scale).astype(np.float32)

    def to_json(self) -> list:
        return [self.shift.tolist(), self.scale.tolist()]


def standardise(a) -> Standard:
    """Column means and standard deviations of ``a`` (n,) or (n, C), NaN (padding) ignored; a
    constant column keeps scale 1."""
    a = np.asarray(a, np.float64)
    a = a.reshape(a.shape[0], -1)
    with np.errstate(all="ignore"):
        shift = np.nanmean(a, axis=0) if a.size else np.zeros(a.shape[1])
        scale = np.nanstd(a, axis=0) if a.size else np.ones(a.shape[1])
    shift = np.where(np.isfinite(shift), shift, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return Standard(shift, scale)


SKIP_T = 4.0  # |t| an input's coefficient needs to stay in the linear skip (``skip_kernel``)


def skip_kernel(x, z, components: int, t_min: float = SKIP_T) -> np.ndarray:
    """The linear skip's kernel for the per-sample layouts (``Config.linear_skip``): for each
    coordinate of the standardised θ z (n, D), the least-squares map from the standardised
    inputs x (n, M) over the inputs whose coefficient is significant, solved in float64 (NaN
    padding read as 0, as the network reads it), the same for every component: (M, K·D)
    float32, laid out as ``model.MDN``'s means.

    Inputs whose coefficient has |t| < ``t_min`` (its ordinary least-squares standard error)
    are dropped and the rest refitted, until every one left passes: an input with no linear
    relation to θ then adds nothing, rather than its coefficient's sampling noise (a pure-noise
    input passes |t| ≥ 4 with probability 6·10⁻⁵; measured on slcp_distractors' 92 heavy-tailed
    distractors: docs/quality.md).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(1000, 2))  # θ depends on the first input only
        >>> z = 0.5 * x[:, :1] + 0.1 * rng.normal(size=(1000, 1))
        >>> skip_kernel(x, z, 2).round(2)  # plain least squares gives the second −0.0017
        array([[0.5, 0.5],
               [0. , 0. ]], dtype=float32)
    """
    x = np.asarray(x, np.float64)
    x = np.where(np.isnan(x), 0.0, x).reshape(x.shape[0], -1)
    z = np.asarray(z, np.float64).reshape(x.shape[0], -1)
    n, m = x.shape
    gram, cross, sq = x.T @ x, x.T @ z, np.einsum("nd,nd->d", z, z)
    w = np.zeros((m, z.shape[1]))
    for d in range(z.shape[1]):
        keep = np.arange(m)
        while keep.size:
            inv = np.linalg.pinv(gram[np.ix_(keep, keep)])
            coef = inv @ cross[keep, d]
            rss = max(sq[d] - cross[keep, d] @ coef, 0.0)
            se = np.sqrt(np.maximum(np.diag(inv), 0.0) * rss / max(n - keep.size, 1))
            passed = np.abs(coef) >= t_min * se
            if passed.all():
                w[keep, d] = coef
                break
            keep = keep[passed]
    return np.tile(w, (1, components)).astype(np.float32)


def split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices of n pairs: ``share`` of them (at least one, at most n − 1)
    for validation, chosen by a permutation from the seed's own stream."""
    perm = np.random.default_rng([seed, SPLIT_STREAM]).permutation(n)
    k = min(max(1, round(share * n)), n - 1)
    return np.sort(perm[k:]), np.sort(perm[:k])


def plan(n_train: int, batch_size: int) -> tuple[int, int]:
    """(batch, steps) of one pass: full batches only (the remainder of a shuffle waits for the
    next pass); a training set smaller than a batch is one batch."""
    batch = min(batch_size, n_train)
    return batch, n_train // batch


def indices(key, epoch, n: int, batch: int, steps: int):
    """(steps, batch) indices of pass ``epoch``: a permutation of n from ``fold_in(key, epoch)``."""
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
    return perm[: steps * batch].reshape(steps, batch).astype(jnp.int32)


def simulated_pairs(task, config, allow_nan: bool, report: dict):
    """The run's ``config.samples`` pairs (θ in the fitting space, y): the same draws the bucketed
    layouts train on at this seed (one piece up to ``sources.CHUNK``, streamed chunks beyond)."""
    n = config.samples
    if n <= sources.CHUNK:
        theta, y, stats = sources.whole(task, config, np.float64, allow_nan)
        merge_stats(report, stats)
        return theta, y
    parts = list(sources.streamed(task, config, report, np.float64)())
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def given_pairs(task, config, theta, y, report: dict):
    """Pairs handed in: θ checked against the support and moved to the fitting space."""
    theta, y = np.asarray(theta, np.float64), np.asarray(y)
    n = theta.shape[0]
    if y.shape[0] != n:
        raise ConfigError(f"theta holds {n:,} rows and y {y.shape[0]:,}: give one y per theta", "samples")
    dim = len(task.support)
    cols = theta.reshape(n, dim)
    out = np.empty_like(cols)
    for d, bound in enumerate(task.support):
        inside, moved = bound.interior(cols[:, d]) if config.space == "unconstrained" else (cols[:, d], 0)
        out[:, d] = bound.forward(inside) if config.space == "unconstrained" else inside
        report["moved_to_interior"] += moved
    return out, y

"""Sources of (θ, y) chunks: a task's simulations, chunk i drawn from ``default_rng([seed, i])``,
or arrays already in memory. A source is a function ``chunks()`` that returns a fresh iterator of
the same (θ, y) pairs on every call, so a layout can pass over the draws twice in bounded memory.

Also the run's other draws, each from a random stream of its own: the held-out simulations, and
exact posterior draws at one y (rejection from the joint).

Example:
    >>> import numpy as np
    >>> chunks = in_memory(np.zeros(3), np.array([1, 2, 1]))
    >>> [y.tolist() for _, y in chunks()]
    [[1, 2, 1]]
"""

from __future__ import annotations

import numpy as np

from mdnjax.config import Config
from mdnjax.simulation import draw, merge_stats

CHUNK = 10_000_000  # above this many simulations, simulation and bucketing stream


STREAM_CHUNK = 2_000_000  # simulations per streamed chunk (~100 MB of scratch)


def in_memory(theta, y):
    """``chunks()`` over arrays already in memory: one chunk, the arrays themselves."""
    return lambda: iter([(theta, y)])


def simulated(task, config: Config, report: dict, dtype=np.float32):
    """``chunks()``: the run's ``config.samples`` simulations in one chunk from
    ``default_rng(seed)`` (drawn once, kept); the checks go into ``report``."""
    theta, y, stats = draw(task, np.random.default_rng(config.seed), config.samples, config.space, dtype)
    merge_stats(report, stats)
    return in_memory(theta, y)


def streamed(
    task, config: Config, report: dict, dtype=np.float32, share: tuple[int, int] = (0, 1), cut: int | None = None
):
    """``chunks()``: the run's simulations in chunks of ``STREAM_CHUNK``, chunk i from
    ``default_rng([seed, i])`` (every pass yields the same chunks); the first pass's checks go
    into ``report``. With ``share = (rank, processes)`` this process streams chunks rank, rank +
    processes, … of a stream cut into at least ``cut`` (default: ``processes``) chunks."""
    n = config.samples
    rank, processes = share
    size = min(STREAM_CHUNK, -(-n // (cut or processes)))
    sizes = [min(size, n - s) for s in range(0, n, size)]
    first_pass = [True]

    def chunks():
        for i, size in enumerate(sizes):
            if i % processes != rank:
                continue
            theta, y, stats = draw(task, np.random.default_rng([config.seed, i]), size, config.space, dtype)
            if first_pass[0]:
                merge_stats(report, stats)
            yield theta, y
        first_pass[0] = False

    return chunks


HOLDOUT_CAP = 200_000  # held-out draws at most, whatever the number of simulations


HOLDOUT_STREAM = 0x5EED  # the held-out draws' own random stream: the training draws stay as they were


def draw_heldout(task, config: Config):
    """Fresh simulations that training never sees: ``holdout`` × samples of them (at most
    ``HOLDOUT_CAP``), from their own random stream. Every one whose y has a bucket is an exact
    draw from p(θ | y), so they check q(θ | y) for any task, with or without a likelihood.

    Returns:
        (theta (n,) float32 in the fitting space, y (n,) integer), or None when ``holdout`` is 0.
    """
    n = min(round(config.holdout * config.samples), HOLDOUT_CAP)
    if n < 1:
        return None
    theta, y, _ = draw(task, np.random.default_rng([config.seed, HOLDOUT_STREAM]), n, config.space)
    return theta, y


AT_Y_STREAM = 0xA7  # the draws at a chosen y have their own random stream


AT_Y_MIN_BUDGET = 200_000  # simulations the draws at one y may always spend


def draw_at(task, config: Config, y, n: int, budget: int | None = None, chunk: int = 1_000_000):
    """Up to ``n`` exact draws from p(θ | y) at one y, by simulating from the joint and keeping the
    draws whose y matches exactly (rejection with no tolerance), in at most ``budget`` simulations
    (default: twice the run's own, at least ``AT_Y_MIN_BUDGET``: a check never costs much more
    than the training it checks), in chunks of at most ``chunk``.

    Returns:
        θ (k, D) or (k,) in the fitting space, k ≤ n (fewer when y is too rare for the budget).
    """
    y = np.asarray(y, np.int64)
    budget = max(2 * config.samples, AT_Y_MIN_BUDGET) if budget is None else budget
    chunk = min(chunk, budget)
    kept, total, done = [], 0, 0
    i = 0
    while total < n and done < budget:
        theta, ys, _ = draw(task, np.random.default_rng([config.seed, AT_Y_STREAM, i]), chunk, config.space)
        hit = np.all(ys.reshape(chunk, -1) == y.reshape(1, -1), axis=1)
        kept.append(theta[hit])
        total, done, i = total + int(hit.sum()), done + chunk, i + 1
    return np.concatenate(kept)[:n]

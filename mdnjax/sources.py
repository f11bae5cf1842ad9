"""Sources of (θ, y) chunks: a task's simulations, chunk i drawn from ``default_rng([seed, i])``,
simulations stored in a dataset (``mdnjax.datasets``, read through a ``StoredTask``), or arrays
already in memory. A source is a function ``chunks()`` that returns a fresh iterator of
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
from mdnjax.simulation import SimulationError, check, draw, merge_stats

CHUNK = 10_000_000  # above this many simulations, simulation and bucketing stream


STREAM_CHUNK = 2_000_000  # simulations per streamed chunk (~100 MB of scratch)


def in_memory(theta, y):
    """``chunks()`` over arrays already in memory: one chunk, the arrays themselves."""
    return lambda: iter([(theta, y)])


class StoredTask:
    """A task whose simulations are stored: training reads rows ``0:train_rows`` of ``data`` (a
    ``datasets.Dataset`` or ``datasets.Arrays``) and holds out the rest; everything else (support,
    names, exact posterior) is the task's. It has no simulator: a step that would simulate fails
    in one line instead of re-using stored rows as if they were fresh."""

    def __init__(self, task, data, heldout_rows: int = 0):
        self._task, self.data = task, data
        self.train_rows = data.count - heldout_rows
        self.y_kind, self.y_shape = data.y_kind, data.y_shape

    def __getattr__(self, name):
        return getattr(self._task, name)

    @property
    def task(self):
        return self._task

    def simulate(self, rng, n):
        raise SimulationError(
            f"{self._task.name}: trained from stored simulations, this run has no simulator for new draws"
        )

    def __repr__(self) -> str:
        return f"StoredTask({self._task!r}, rows={self.data.count})"


def stored(task) -> StoredTask | None:
    """The ``StoredTask`` when ``task`` trains from stored simulations, else None."""
    return task if isinstance(task, StoredTask) else None


def whole(task, config: Config, dtype=np.float32, allow_nan: bool = False):
    """The run's ``config.samples`` training pairs in memory, checked, θ in the fitting space:
    drawn at once from ``default_rng(seed)``, or the first rows of the stored simulations (the
    same arrays when the dataset was simulated with that seed). Returns ``draw``'s (θ, y, stats)."""
    data = stored(task)
    if data is None:
        return draw(task, np.random.default_rng(config.seed), config.samples, config.space, dtype, allow_nan)
    theta, y = data.data.read(0, config.samples)
    return check(data, theta, y, config.samples, config.space, dtype, allow_nan, "the data hold")


def simulated(task, config: Config, report: dict, dtype=np.float32):
    """``chunks()``: the run's ``config.samples`` simulations in one chunk (``whole``: drawn
    once, kept); the checks go into ``report``."""
    theta, y, stats = whole(task, config, dtype)
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

    data = stored(task)

    def chunks():
        for i, size in enumerate(sizes):
            if i % processes != rank:
                continue
            if data is None:
                theta, y, stats = draw(task, np.random.default_rng([config.seed, i]), size, config.space, dtype)
            else:
                lo = i * sizes[0]
                theta, y, stats = check(
                    data, *data.data.read(lo, lo + size), size, config.space, dtype, origin="the data hold"
                )
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
    data = stored(task)
    if data is not None:  # the rows after the training share: stored, never trained on
        if data.train_rows >= data.data.count:
            return None
        theta, y = data.data.read(data.train_rows, data.data.count)
        return check(data, theta, y, len(theta), config.space, origin="the data hold")[:2]
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
    data = stored(task)
    if data is not None:  # no simulator: the held-out rows at y are exact draws from p(θ | y) too
        heldout = draw_heldout(task, config)
        if heldout is None:
            return np.empty((0,) + (() if len(task.support) == 1 else (len(task.support),)), np.float32)
        theta, ys = heldout
        hit = np.all(ys.reshape(len(ys), -1) == y.reshape(1, -1), axis=1)
        return theta[hit][:n]
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

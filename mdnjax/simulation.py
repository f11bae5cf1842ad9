"""Simulations of a task, checked and moved to the fitting space, then grouped by y.

``draw`` calls the task's simulator once and checks what it returns (shapes, dtypes, finite
values, θ inside the declared support); ``build_layout`` turns a run's simulations into a
``mdnjax.layout.Buckets`` layout, in one piece up to ``CHUNK`` samples and streamed in chunks of
``STREAM_CHUNK`` beyond (two passes, layout-sized memory).

An exception raised inside the user's simulator becomes a ``UserCodeError`` that names the
function and keeps the original exception (and its frames) as ``__cause__``.

Example:
    >>> import numpy as np
    >>> from mdnjax import tasks
    >>> u, y, stats = draw(tasks.BetaBinomial(), np.random.default_rng(0), 1000, "unconstrained")
    >>> u.dtype, y.dtype, stats["moved_to_interior"]
    (dtype('float32'), dtype('int64'), 0)
"""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np

from mdnjax import layout, parallel
from mdnjax.config import Config, ConfigError

CHUNK = 10_000_000  # above this many simulations, simulation and bucketing stream
STREAM_CHUNK = 2_000_000  # simulations per streamed chunk (~100 MB of scratch)
MIN_COUNT = 2  # a y needs this many samples to form a bucket
DROP_WARN = 0.01  # warn when more than this share of the samples falls in buckets too small to train
DROP_ERROR = 0.5  # refuse when more than this share does


class UserCodeError(Exception):
    """An exception raised inside a user's function; ``__cause__`` holds the original."""

    def __init__(self, function: str, err: BaseException):
        super().__init__(f"{function} raised {type(err).__name__}: {err}")
        self.function = function


class SimulationError(ValueError):
    """The simulator returned something that cannot be trained on; the message is one line."""


def _function_name(task) -> str:
    fn = getattr(task, "_simulate", None) or task.simulate
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
    return f"{task.name}: simulate ({name})"


def _as_column(a: np.ndarray, what: str, n: int) -> np.ndarray:
    if a.shape == (n, 1):
        return a[:, 0]
    if a.shape != (n,):
        raise SimulationError(f"simulate returned {what} of shape {a.shape}; expected ({n},) or ({n}, 1)")
    return a


def _as_rows(a: np.ndarray, what: str, n: int, width: int) -> np.ndarray:
    if a.shape != (n, width):
        raise SimulationError(f"simulate returned {what} of shape {a.shape}; expected ({n}, {width})")
    return a


def draw(task, rng: np.random.Generator, n: int, space: str, dtype=np.float32):
    """``n`` checked simulations with θ in the fitting space.

    Args:
        task: a ``mdnjax.Task``.
        rng: the generator to draw from.
        n: number of simulations.
        space: ``"raw"`` (θ as drawn) or ``"unconstrained"`` (u = f(θ), ``Bound.forward``).

    Returns:
        theta: (n,) in the fitting space, ``dtype`` (float32 unless asked); (n, D) for D parameters
            (each transformed by its own ``Bound``).
        y: integer (n,), or (n, M) for vector observations.
        stats: ``moved_to_interior`` (draws on a bound moved inside), ``warnings`` (messages the
            simulator emitted, by text), ``shape`` (the θ shape seen).

    Raises:
        UserCodeError: the simulator raised.
        SimulationError: wrong shapes or dtypes, non-finite values, θ outside the support.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = task.simulate(rng, n)
        except Exception as err:  # noqa: BLE001 - the user's code: re-raised with its name
            raise UserCodeError(_function_name(task), err) from err
    try:
        theta, y = out
    except (TypeError, ValueError):
        raise SimulationError(f"simulate must return a pair (theta, y), got {type(out).__name__}") from None
    theta, y = np.asarray(theta), np.asarray(y)
    seen = theta.shape
    if not np.issubdtype(theta.dtype, np.floating):
        raise SimulationError(f"simulate returned theta of dtype {theta.dtype}; expected a float array")
    if not np.issubdtype(y.dtype, np.integer):
        raise SimulationError(f"simulate returned y of dtype {y.dtype}; expected an integer array (counts)")
    dim = len(task.support)
    theta = _as_column(theta, "theta", n) if dim == 1 else _as_rows(theta, "theta", n, dim)
    y = _as_column(y, "y", n) if y.ndim < 2 or y.shape[1] == 1 else _as_rows(y, "y", n, y.shape[1])
    bad = ~np.isfinite(theta)
    if bad.any():
        raise SimulationError(
            f"simulate returned {int(bad.sum())} non-finite theta of {n} "
            f"(first at index {int(np.argmax(bad.reshape(n, -1).any(axis=1)))})"
        )
    columns = theta.reshape(n, dim)
    moved = 0
    out = np.empty(columns.shape, np.float64 if space == "unconstrained" else columns.dtype)
    for d, bound in enumerate(task.support):
        col = columns[:, d]
        outside = (col < bound.low) | (col > bound.high)
        if outside.any():
            first = float(col[np.argmax(outside)])
            which = f"theta[:, {d}]" if dim > 1 else "theta"
            raise SimulationError(
                f"simulate returned {int(outside.sum())} {which} of {n} outside the declared support "
                f"{bound.describe()} (e.g. {first:g})"
            )
        if space == "unconstrained":
            inside, m = bound.interior(col)  # float64, before any cast
            out[:, d], moved = bound.forward(inside), moved + m
        else:
            out[:, d] = col
    theta = out[:, 0] if dim == 1 else out
    stats = {
        "moved_to_interior": moved,
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        "shape": seen,
    }
    return theta.astype(dtype), y, stats


def _merge(total: dict, stats: dict) -> None:
    total["moved_to_interior"] += stats["moved_to_interior"]
    total["warnings"].extend(stats["warnings"])
    total["theta_shape"] = list(stats["shape"][1:])


def _streamed_chunks(
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
                _merge(report, stats)
            yield theta, y
        first_pass[0] = False

    return chunks


def _probe_y(task, seed: int) -> np.ndarray:
    """A few checked observations from a random stream of their own (what shape y has)."""
    return draw(task, np.random.default_rng([seed, 0xC0DE]), 16, "raw")[1]


def observation_width(task, seed: int = 0) -> int | None:
    """M, the length of the task's observations (None when the simulator fails: ``fit`` reports
    that properly)."""
    try:
        y = _probe_y(task, seed)
    except (UserCodeError, SimulationError):
        return None
    return 1 if y.ndim == 1 else int(y.shape[1])


def _vector_y(task, config: Config) -> bool:
    """Whether the task observes vectors."""
    return _probe_y(task, config.seed).ndim == 2


def _encoded(chunks, vector: bool | None = None, combine=None):
    """``(codebook, chunks')``: for vector y, a first pass builds the ``layout.Codebook`` and
    ``chunks'`` yields each y row's code; for scalar y, ``(None, chunks)``. ``combine`` merges
    the codebooks of several processes (``mdnjax.parallel.allgather_rows``)."""
    if vector is None:
        vector = next(iter(chunks()))[1].ndim == 2
    if not vector:
        return None, chunks
    book = layout.Codebook.from_chunks(chunks)
    if combine is not None:
        book = layout.Codebook.of(np.concatenate(combine(book.rows)))
    return book, lambda: ((theta, book.encode(y)) for theta, y in chunks())


def build_layout(task, config: Config, shards: int = 1, block: int | None = layout.BLOCK):
    """Simulates ``config.samples`` pairs and buckets them in ``config.layout``.

    Up to ``CHUNK`` samples are drawn at once from ``default_rng(seed)``; beyond that (packed
    layout), chunk i draws from ``default_rng([seed, i])`` and the chunks stream twice through
    ``layout.bucket_streamed``, which leaves room for the tiles' empty rows so that the layout
    moves to the device without a copy.

    Returns:
        buckets: the ``layout.Buckets``.
        report: ``samples``, ``moved_to_interior``, ``warnings`` (one summary per distinct
            message), ``dropped`` (samples in buckets of fewer than ``MIN_COUNT``), ``simulate_s``,
            ``bucket_s``.

    Raises:
        ConfigError: too many samples fall in buckets too small to train.
        UserCodeError, SimulationError: see ``draw``.
    """
    report = {"samples": config.samples, "moved_to_interior": 0, "warnings": []}
    n = config.samples
    if n > CHUNK and len(task.support) > 1:
        raise ConfigError(
            f"more than {CHUNK:,} simulations stream chunk by chunk, which needs a scalar theta; "
            f"this task has {len(task.support)} parameters",
            "samples",
        )
    if config.layout == "binned":
        # float64 draws into per-(y, bin) sums; up to CHUNK the same draws as the other layouts
        # (kept in memory for the two passes), beyond it streamed chunk by chunk; with several
        # processes each streams its own chunks and the sums are added once
        t0 = time.perf_counter()
        share = parallel.process_share()
        combine = parallel.allgather_rows if share[1] > 1 and len(task.support) == 1 else None
        if len(task.support) > 1:  # θ ∈ ℝ^D: in memory, cell by cell (every process the same)
            theta, y, stats = draw(task, np.random.default_rng(config.seed), n, config.space, np.float64)
            _merge(report, stats)
            report["simulate_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            book, codes = layout.Codebook.build(y) if y.ndim == 2 else (None, y)
            b = layout.bin_nd(theta, codes, min_count=MIN_COUNT)
            report["bucket_s"] = time.perf_counter() - t0
        elif combine is not None:
            chunks = _streamed_chunks(task, config, report, np.float64, share)
            book, chunks = _encoded(chunks, _vector_y(task, config), combine)
            report["simulate_s"] = 0.0
        elif n <= CHUNK:
            theta, y, stats = draw(task, np.random.default_rng(config.seed), n, config.space, np.float64)
            _merge(report, stats)
            report["simulate_s"] = time.perf_counter() - t0
            book, chunks = _encoded(lambda: iter([(theta, y)]))
        else:
            book, chunks = _encoded(_streamed_chunks(task, config, report, np.float64), _vector_y(task, config))
            report["simulate_s"] = 0.0
        if len(task.support) == 1:
            t0 = time.perf_counter()
            b = layout.bin_streamed(chunks, bins=config.bins, min_count=MIN_COUNT, combine=combine)
            if combine is not None:  # every process's draws moved off a bound
                total = combine(np.array([report["moved_to_interior"]], np.int64))
                report["moved_to_interior"] = int(sum(total).item())
            report["bucket_s"] = time.perf_counter() - t0
    elif n > CHUNK and config.layout == "packed":
        book, chunks = _encoded(_streamed_chunks(task, config, report), _vector_y(task, config))
        t0 = time.perf_counter()
        b = layout.bucket_streamed(chunks, min_count=MIN_COUNT, spare_rows=layout.spare_rows(block, shards))
        report["simulate_s"], report["bucket_s"] = 0.0, time.perf_counter() - t0  # interleaved: one figure
    else:
        t0 = time.perf_counter()
        theta, y, stats = draw(task, np.random.default_rng(config.seed), n, config.space)
        _merge(report, stats)
        report["simulate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        book, codes = layout.Codebook.build(y) if y.ndim == 2 else (None, y)
        if config.layout == "packed":
            b = layout.bucket_packed(theta, codes, min_count=MIN_COUNT)
        else:
            b = layout.bucket(theta, codes, min_count=MIN_COUNT)
        report["bucket_s"] = time.perf_counter() - t0
    if book is not None:  # the layouts grouped by code: give them back their observations
        b = dataclasses.replace(b, y_values=book.rows[b.y_values])
    report["warnings"] = summarize_warnings(report["warnings"])
    report["dropped"] = n - b.num_samples
    report["buckets"] = bucket_budget(b, n)
    share = report["dropped"] / n
    if b.num_y == 0 or share > DROP_ERROR:
        raise ConfigError(
            f"{report['dropped']:,} of {n:,} samples fall on a y seen fewer than {MIN_COUNT} times and cannot be "
            f"trained on: increase samples or use a task whose y repeat (fewer possible observations)",
            "samples",
        )
    if report["buckets"]["distinct_y"] > n / 20:
        report["warnings"].append(
            f"{report['buckets']['distinct_y']:,} distinct y for {n:,} samples (more than N/20): the buckets are thin "
            "and the network must interpolate between y; this design pays off when observations repeat"
        )
    if share > DROP_WARN:
        report["warnings"].append(
            f"{report['dropped']:,} of {n:,} samples ({100 * share:.1f}%) fall on a y seen once and are left out"
        )
    if report["moved_to_interior"]:
        report["warnings"].append(
            f"{report['moved_to_interior']:,} draws lay on a bound of the support "
            "and were moved to the nearest interior value"
        )
    return b, report


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


def per_sample_loss(task, config: Config, posterior, y_values, processes: int = 1) -> float:
    """The training objective on the run's own draws, sample by sample (−Σ w log q_u(u | y) in the
    fitting space, per the run's weighting, over the y that had a bucket), re-simulated from the
    seed in chunks: the loss that compares across layouts (a binned run trains on summaries)."""
    y_values = np.asarray(y_values)
    num_y = y_values.shape[0]
    counts = np.zeros(num_y)
    total = np.zeros(num_y)  # Σ −log q per y
    report = {"moved_to_interior": 0, "warnings": []}
    if processes > 1 and config.layout == "binned":  # the chunks the processes shared
        chunks = _streamed_chunks(task, config, report, cut=processes)
    elif config.samples <= CHUNK:
        chunks = lambda: iter([draw(task, np.random.default_rng(config.seed), config.samples, config.space)[:2]])  # noqa: E731
    else:
        chunks = _streamed_chunks(task, config, report)
    for u, y in chunks():
        j = layout.index_of(y_values, y)
        keep = j >= 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rare y are part of the objective too
            lp, _ = posterior.fitting_log_prob_and_cdf(u[keep], y[keep])
        counts += np.bincount(j[keep], minlength=num_y)
        total += np.bincount(j[keep], -lp, minlength=num_y)
    if config.weighting == "per-y":
        return float(np.sum(total / np.maximum(counts, 1)))
    return float(total.sum() / max(counts.sum(), 1))


def bucket_budget(b, n: int) -> dict:
    """How the samples spread over the buckets: the design pays off when each y holds many."""
    counts = np.asarray(b.counts)
    if counts.size == 0:
        return {"distinct_y": 0, "median": 0, "min": 0, "share_in_buckets_of_100": 0.0}
    return {
        "distinct_y": int(counts.size),
        "median": float(np.median(counts)),
        "min": int(counts.min()),
        "share_in_buckets_of_100": float(counts[counts >= 100].sum() / max(n, 1)),
    }


def describe_budget(budget: dict) -> str:
    """The bucket budget as one line."""
    return (
        f"buckets: {budget['distinct_y']:,} distinct y, {budget['median']:,.0f} samples per bucket "
        f"(median; min {budget['min']:,}), {100 * budget['share_in_buckets_of_100']:.1f}% of samples "
        f"in buckets of >= 100"
    )


def summarize_warnings(messages: list[str]) -> list[str]:
    """One line per distinct message, with its count."""
    counts: dict[str, int] = {}
    for m in messages:
        counts[m] = counts.get(m, 0) + 1
    return [f"simulate warned {c}× — {m}" if c > 1 else f"simulate warned — {m}" for m, c in counts.items()]


AT_Y_STREAM = 0xA7  # the draws at a chosen y have their own random stream


def draw_at(task, config: Config, y, n: int, budget: int = 20_000_000, chunk: int = 1_000_000):
    """Up to ``n`` exact draws from p(θ | y) at one y, by simulating from the joint and keeping the
    draws whose y matches exactly (rejection with no tolerance), in at most ``budget`` simulations.

    Returns:
        θ (k, D) or (k,) in the fitting space, k ≤ n (fewer when y is too rare for the budget).
    """
    y = np.asarray(y, np.int64)
    kept, total, done = [], 0, 0
    i = 0
    while total < n and done < budget:
        theta, ys, _ = draw(task, np.random.default_rng([config.seed, AT_Y_STREAM, i]), chunk, config.space)
        hit = np.all(ys.reshape(chunk, -1) == y.reshape(1, -1), axis=1)
        kept.append(theta[hit])
        total, done, i = total + int(hit.sum()), done + chunk, i + 1
    return np.concatenate(kept)[:n]

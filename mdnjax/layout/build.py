"""Which layout a run trains on, and building it from a source of (θ, y) chunks.

``plan`` is the one place that reads a layout's name: every other module asks the ``Plan`` what
the layout does (summarise into bins, train with the reference kernel, split rows over devices,
tile). ``build_layout`` draws a run's simulations and lays them out, in one piece up to
``sources.CHUNK`` samples and streamed beyond (two passes, layout-sized memory), and applies the
policy for y too rare to train on.

Example:
    >>> plan("packed").sharded, plan("binned").binned, plan("padded").reference
    (True, True, True)
"""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import numpy as np

from mdnjax import parallel, sources
from mdnjax.config import LAYOUTS, PER_SAMPLE_LAYOUT, Config, ConfigError
from mdnjax.layout import binned, rows
from mdnjax.layout.codebook import Codebook
from mdnjax.layout.device import BLOCK, spare_rows
from mdnjax.simulation import merge_stats, observation_shape, summarize_warnings

MIN_COUNT = 2  # a y needs this many samples to form a bucket
DROP_WARN = 0.01  # warn when more than this share of the samples falls in buckets too small to train
DROP_ERROR = 0.5  # refuse when more than this share does


class Plan(NamedTuple):
    """What a layout means for the rest of a run."""

    name: str
    binned: bool  # draws summarised by weighted points (``layout.binned``), an epoch cost bounded in N
    reference: bool  # one row per y, trained with the autodiff reference kernel
    sharded: bool  # rows split over the devices (otherwise one device, or replicated)
    block: int | None  # samples per tile (None: one block)


def plan(name: str) -> Plan:
    """The ``Plan`` of a bucketed layout's name (one of ``config.LAYOUTS`` but ``"per-sample"``)."""
    if name not in LAYOUTS or name == PER_SAMPLE_LAYOUT:
        raise ConfigError(f"unknown layout {name!r}: choose one of {', '.join(LAYOUTS)}", "layout")
    padded, is_binned = name == "padded", name == "binned"
    # the padded reference runs on one device; the binned layout is tiny: replicated, not split
    return Plan(name, is_binned, padded, not (padded or is_binned), None if padded else BLOCK)


def build_layout(task, config: Config, shards: int = 1, min_count: int = MIN_COUNT):
    """Simulates ``config.samples`` pairs and lays them out as ``plan(config.layout)`` says.

    Up to ``sources.CHUNK`` samples are drawn at once from ``default_rng(seed)``; beyond that
    (packed and binned layouts), chunk i draws from ``default_rng([seed, i])`` and the chunks
    stream twice through the layout, which for the packed layout leaves room for the tiles' empty
    rows so that the layout moves to the device without a copy.

    Returns:
        layout: the ``Buckets`` or ``Binned`` layout.
        report: ``samples``, ``moved_to_interior``, ``warnings`` (one summary per distinct
            message), ``dropped`` (samples in buckets of fewer than ``min_count``), ``buckets``
            (``bucket_budget``), ``simulate_s``, ``bucket_s``.

    Raises:
        ConfigError: too many samples fall in buckets too small to train.
        UserCodeError, SimulationError: see ``mdnjax.simulation.draw``.
    """
    how = plan(config.layout)
    report = {"samples": config.samples, "moved_to_interior": 0, "warnings": []}
    n, dim = config.samples, len(task.support)
    if n > sources.CHUNK and dim > 1:
        raise ConfigError(
            f"more than {sources.CHUNK:,} simulations stream chunk by chunk, which needs a scalar theta; "
            f"this task has {dim} parameters",
            "samples",
        )
    if how.binned:
        b, book = _binned(task, config, report, min_count)
    elif n > sources.CHUNK:
        book, chunks = _encoded(sources.streamed(task, config, report), _vector_y(task, config))
        t0 = time.perf_counter()
        b = rows.bucket_streamed(chunks, min_count=min_count, spare_rows=spare_rows(how.block, shards))
        report["simulate_s"], report["bucket_s"] = 0.0, time.perf_counter() - t0  # interleaved: one figure
    else:
        t0 = time.perf_counter()
        theta, y, stats = sources.whole(task, config)
        merge_stats(report, stats)
        report["simulate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        book, codes = Codebook.build(y) if y.ndim == 2 else (None, y)
        if how.reference:
            b = rows.bucket(theta, codes, min_count=min_count)
        else:
            b = rows.bucket_packed(theta, codes, min_count=min_count)
        report["bucket_s"] = time.perf_counter() - t0
    if book is not None:  # the layouts grouped by code: give them back their observations
        b = dataclasses.replace(b, y_values=book.rows[b.y_values])
    _apply_policy(b, report, n, min_count)
    return b, report


def _binned(task, config: Config, report: dict, min_count: int):
    """The binned layout: float64 draws into per-(y, bin) sums; up to ``sources.CHUNK`` the same
    draws as the other layouts (kept in memory for the two passes), beyond it streamed chunk by
    chunk; with several processes each streams its own chunks and the sums are added once."""
    n = config.samples
    t0 = time.perf_counter()
    share = parallel.process_share()
    if len(task.support) > 1:  # θ ∈ ℝ^D: in memory, cell by cell (every process the same)
        theta, y, stats = sources.whole(task, config, np.float64)
        merge_stats(report, stats)
        report["simulate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        book, codes = Codebook.build(y) if y.ndim == 2 else (None, y)
        b = binned.bin_nd(theta, codes, min_count=min_count)
        report["bucket_s"] = time.perf_counter() - t0
        return b, book
    combine = parallel.allgather_rows if share[1] > 1 else None
    if combine is not None:
        chunks = sources.streamed(task, config, report, np.float64, share)
        book, chunks = _encoded(chunks, _vector_y(task, config), combine)
        report["simulate_s"] = 0.0
    elif n <= sources.CHUNK:
        theta, y, stats = sources.whole(task, config, np.float64)
        merge_stats(report, stats)
        report["simulate_s"] = time.perf_counter() - t0
        book, chunks = _encoded(sources.in_memory(theta, y))
    else:
        book, chunks = _encoded(sources.streamed(task, config, report, np.float64), _vector_y(task, config))
        report["simulate_s"] = 0.0
    t0 = time.perf_counter()
    b = binned.bin_streamed(chunks, bins=config.bins, min_count=min_count, combine=combine)
    if combine is not None:  # every process's draws moved off a bound
        total = combine(np.array([report["moved_to_interior"]], np.int64))
        report["moved_to_interior"] = int(sum(total).item())
    report["bucket_s"] = time.perf_counter() - t0
    return b, book


def _vector_y(task, config: Config) -> bool:
    """Whether the task observes vectors."""
    return observation_shape(task, config.seed) != ()


def _encoded(chunks, vector: bool | None = None, combine=None):
    """``(codebook, chunks')``: for vector y, a first pass builds the ``Codebook`` and
    ``chunks'`` yields each y row's code; for scalar y, ``(None, chunks)``. ``combine`` merges
    the codebooks of several processes (``mdnjax.parallel.allgather_rows``)."""
    if vector is None:
        vector = next(iter(chunks()))[1].ndim == 2
    if not vector:
        return None, chunks
    book = Codebook.from_chunks(chunks)
    if combine is not None:
        book = Codebook.of(np.concatenate(combine(book.rows)))
    return book, lambda: ((theta, book.encode(y)) for theta, y in chunks())


def _apply_policy(b, report: dict, n: int, min_count: int = MIN_COUNT) -> None:
    """The rare-y policy: refuse when too many samples fall on y seen fewer than ``MIN_COUNT``
    times, warn when some do; the warnings summarised, the bucket budget recorded."""
    report["warnings"] = summarize_warnings(report["warnings"])
    report["dropped"] = n - b.num_samples
    report["buckets"] = bucket_budget(b, n)
    share = report["dropped"] / n
    if b.num_y == 0 or share > DROP_ERROR:
        raise ConfigError(
            f"{report['dropped']:,} of {n:,} samples fall on a y seen fewer than {min_count} times and cannot be "
            f"trained on: use layout auto or per-sample (trains on every pair), or increase samples",
            "samples",
        )
    if report["buckets"]["distinct_y"] > n / 20 and min_count > 1:  # on auto the choice said how they repeat
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

"""Training on the bucketed and binned layouts: simulate, lay the draws out by y, train every y at
once, and return the posterior. It never prints: progress goes to a callback. ``mdnjax.fit``
(``mdnjax.train.fit``) picks this path or the per-sample one.

Example:
    >>> import mdnjax
    >>> result = fit("beta", mdnjax.Config(samples=20_000, epochs=100))
    >>> int(result.state.epoch), result.losses.shape
    (100, (100,))
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import kernels, layout, model, objective, parallel, sources, tasks
from mdnjax.config import AUTO, Config, ConfigError
from mdnjax.posterior import Posterior, PosteriorSpec
from mdnjax.train.loop import (
    Progress,
    TrainState,
    kept,
    make_flat_run_epochs,
    optimizer,
    optimizer_key,
    state_of,
    train,
)


class Result(NamedTuple):
    """What ``fit`` returns."""

    posterior: Posterior
    state: TrainState
    losses: np.ndarray  # (epochs so far,) every epoch's loss, resumed epochs included
    timings: dict
    buckets: layout.Buckets  # the layout's description (its θ released)
    report: dict  # the simulations: samples, draws moved off a bound, warnings, samples left out, buckets
    config: Config  # resolved
    diverged_at: int | None  # first epoch with a non-finite loss
    stopped_at: int | None  # epoch at which ``should_stop`` ended training
    heldout: tuple | None = None  # (θ in the fitting space, y): simulations training never saw


def make_loss(config: Config, graphdef, dim: int = 1) -> Callable:
    """``loss(params, data)``: the objective with the layout's kernel."""
    kernel = kernels.select(reference=layout.plan(config.layout).reference, dim=dim)
    return lambda params, data: objective.loss(params, graphdef, data, kernel)


def _program(layout_name: str, graphdef, dim: int, opt_key: tuple) -> Callable:
    """The compiled epochs of one layout, network and optimiser (``loop.kept`` keeps it); the
    schedule's horizon is an input of the program."""
    lr, schedule = opt_key
    config = Config(layout=layout_name, lr=lr, schedule=schedule)
    return make_flat_run_epochs(make_loss(config, graphdef, dim), functools.partial(optimizer, config))


def input_width(y_values) -> int:
    """M, the length of an observation, from a layout's ``y_values`` ((num_y,) or (num_y, M))."""
    y_values = np.asarray(y_values)
    return 1 if y_values.ndim == 1 else int(y_values.shape[1])


def resolve_task(task):
    """A task object from a task or a registered name."""
    if isinstance(task, str):
        return tasks.from_name(task)
    if not hasattr(task, "simulate") or not hasattr(task, "support"):
        raise ValueError(f"fit needs a mdnjax.Task or a task name, got {type(task).__name__}")
    return task


def fit(
    task,
    config: Config | dict | None = None,
    *,
    init_state: TrainState | None = None,
    history: np.ndarray | None = None,
    buckets: layout.Buckets | None = None,
    callback: Callable[[Progress], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_checkpoint: Callable[[TrainState, np.ndarray], None] | None = None,
    checkpoint_every: int = 0,
    should_stop: Callable[[], bool] | None = None,
    min_count: int = layout.MIN_COUNT,
    choice: layout.Choice | None = None,
) -> Result:
    """Simulates, buckets and trains an MDN posterior q(θ | y) for ``task``.

    Args:
        task: a ``mdnjax.Task`` or a built-in task's name (``"beta"``, ``"gamma"``, ...).
        config: training settings (a ``Config`` or a dict of its fields; default ``Config()``),
            resolved and checked here.
        init_state: continue from this state (``Result.state`` or a checkpoint); the result is
            bitwise that of an uninterrupted run with the same config.
        history: the losses of the epochs ``init_state`` already trained.
        buckets: reuse an existing layout (θ in the fitting space) instead of simulating.
        callback: called with a ``Progress`` after every ``config.log_every`` epochs.
        on_stage: called with a one-line description as each stage before training starts
            (simulating, laying out, moving to the device, compiling).
        on_checkpoint: called with ``(state, losses)`` every ``checkpoint_every`` epochs, when
            stopped, and at the end (host copies).
        checkpoint_every: epochs between checkpoints (0: only when stopped and at the end).
        should_stop: polled after every dispatch; True stops training there (``Result.stopped_at``).
        min_count: a y needs this many samples to form a bucket (fewer: left out, and counted).
        choice: the ``layout.Choice`` that picked this layout (recorded in ``Result.report``).

    Returns:
        A ``Result``; simulation warnings are also issued once each with ``warnings.warn``.

    Raises:
        ConfigError: a setting out of range or data that cannot be trained on.
    """
    task = resolve_task(task)
    config = Config.of(config)
    if config.layout == AUTO:  # this path's own choice: binned (packed above MAX_BINNED_DIM parameters)
        config = dataclasses.replace(config, layout="binned")
    config = config.resolve(task)
    how = layout.plan(config.layout)
    mesh = parallel.device_mesh(config.devices if how.sharded else 1)
    shards = 1 if mesh is None else mesh.size
    timings: dict = {}
    stage = on_stage or (lambda text: None)
    if buckets is None:
        verb = "reading" if sources.stored(task) else "simulating"
        stage(f"{verb} {config.samples:,} draws and laying them out ({config.layout} layout)")
        b, report = layout.build_layout(task, config, shards, min_count)
    else:
        b, report = buckets, {"samples": buckets.num_samples, "moved_to_interior": 0, "warnings": [], "dropped": 0}
    if buckets is None and config.holdout > 0:
        stage("reading the held-out rows" if sources.stored(task) else "simulating the held-out draws")
    heldout = sources.draw_heldout(task, config) if buckets is None else None
    for line in report["warnings"]:
        warnings.warn(line, RuntimeWarning, stacklevel=2)
    timings.update({k: report.pop(k) for k in ("simulate_s", "bucket_s") if k in report})
    if choice is not None:
        report["layout"] = choice.to_json()
    embedding = task.input_embedding(b.y_values, b.counts)
    if how.binned:
        data = layout.binned_to_data(b, embedding, weighting=config.weighting)
    else:
        data = layout.to_data(b, embedding, block=how.block, weighting=config.weighting, shards=shards)
    b = b.without_samples()  # the samples now live in ``data``
    dim, inputs = len(task.support), input_width(b.y_values)
    graphdef, params = model.init(
        jax.random.key(config.seed), config.components, config.hidden, dim, inputs, None, config.linear_skip
    )
    opt = optimizer(config)
    state = init_state if init_state is not None else state_of(params, opt)
    start = int(state.epoch)
    if start > config.epochs:
        raise ConfigError(f"the run already trained {start} epochs: ask for more than that", "epochs")
    state = jax.tree_util.tree_map(jnp.asarray, state)
    run = kept(_program, config.layout, graphdef, dim, optimizer_key(config))
    stage(f"compiling the training step ({b.num_y:,} y, {int(data.theta.size):,} slots)")
    if mesh is not None:
        data, state = parallel.shard(data, state, mesh)
    out = train(
        run,
        state,
        data,
        config.epochs,
        config.log_every,
        history=history,
        callback=callback,
        on_checkpoint=on_checkpoint,
        checkpoint_every=checkpoint_every,
        should_stop=should_stop,
    )
    timings.update(out.timings)
    final = out.state.last_finite if out.diverged_at is not None else out.state.params
    spec = PosteriorSpec.of(task, config, embedding, b.y_values, b.counts)
    post = Posterior(spec, jax.tree_util.tree_map(jnp.asarray, final))
    return Result(post, out.state, out.losses, timings, b, report, config, out.diverged_at, out.stopped_at, heldout)

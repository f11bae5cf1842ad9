"""Training: the named state, the step, many epochs in one ``lax.scan``, and ``fit``.

``step(params, opt_state, data) -> (params, opt_state, loss)`` is a pure function; ``log_every``
epochs run inside one ``jax.lax.scan`` per dispatch, so XLA reuses its buffers and Python is out
of the loop. A non-finite loss freezes the parameters at the last finite point and stops the run.
``fit`` never prints: progress goes to a callback. Resuming is handing a ``TrainState`` back.

``python -m mdnjax.train`` runs the command line (``mdnjax.cli``).

Example:
    >>> import mdnjax
    >>> result = fit("beta", mdnjax.Config(samples=20_000, epochs=100))
    >>> int(result.state.epoch), result.losses.shape
    (100, (100,))
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdnjax import kernels, layout, model, objective, parallel, simulation, tasks
from mdnjax.config import Config, ConfigError
from mdnjax.posterior import Posterior, PosteriorSpec


class TrainState(NamedTuple):
    """Everything that continues a run exactly (training draws no random numbers).

    Attributes:
        params: MDN parameters.
        opt_state: Adam's state (its step count drives the schedule).
        last_finite: the last parameters whose loss was finite.
        finite: False once a loss or an update was non-finite (the parameters then stop moving).
        epoch: epochs trained so far.
    """

    params: Any
    opt_state: Any
    last_finite: Any
    finite: jax.Array
    epoch: jax.Array


class Progress(NamedTuple):
    """What ``fit`` reports to its callback after every dispatch of ``log_every`` epochs."""

    epoch: int  # epochs done
    epochs: int  # epochs in all
    losses: np.ndarray  # the losses of the epochs just run
    ms_per_epoch: float


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


def learning_rate(config: Config):
    """The learning rate, or an optax schedule of the step count."""
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.lr, config.epochs)
    return config.lr


def optimizer(config: Config) -> optax.GradientTransformation:
    return optax.adam(learning_rate(config))


def initial_state(config: Config, dim: int = 1, inputs: int = 1) -> TrainState:
    """The state before the first epoch (``config`` resolved) of a θ ∈ ℝ^dim, y ∈ ℤ^inputs model."""
    _, params = model.init(jax.random.key(config.seed), config.components, config.hidden, dim, inputs)
    return TrainState(
        params=params,
        opt_state=optimizer(config).init(params),
        last_finite=jax.tree_util.tree_map(jnp.copy, params),
        finite=jnp.array(True),
        epoch=jnp.array(0, jnp.int32),
    )


def make_step(loss: Callable, opt: optax.GradientTransformation) -> Callable:
    """One full-batch Adam step: ``step(params, opt_state, data) -> (params, opt_state, loss)``."""

    def step(params, opt_state, data):
        value, grads = jax.value_and_grad(loss)(params, data)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def _select(pred, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), new, old)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))


def make_run_epochs(step: Callable) -> Callable:
    """``run(state, data, num) -> (state, losses)``: ``num`` epochs of ``step`` in one ``lax.scan``."""

    @functools.partial(jax.jit, static_argnums=2, donate_argnums=0)
    def run(state: TrainState, data, num: int):
        def body(s: TrainState, _):
            params, opt_state, value = step(s.params, s.opt_state, data)
            finite = s.finite & jnp.isfinite(value)
            last_finite = _select(finite, s.params, s.last_finite)
            finite &= _all_finite(params)
            new = TrainState(
                params=_select(finite, params, s.params),
                opt_state=_select(finite, opt_state, s.opt_state),
                last_finite=last_finite,
                finite=finite,
                epoch=s.epoch + finite.astype(s.epoch.dtype),
            )
            return new, value

        return jax.lax.scan(body, state, None, length=num)

    return run


def make_loss(config: Config, graphdef, dim: int = 1) -> Callable:
    """``loss(params, data)``: the objective with the layout's kernel."""
    kernel = kernels.for_layout(config.layout, dim=dim)
    return lambda params, data: objective.loss(params, graphdef, data, kernel)


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
    config: Config | None = None,
    *,
    init_state: TrainState | None = None,
    history: np.ndarray | None = None,
    buckets: layout.Buckets | None = None,
    callback: Callable[[Progress], None] | None = None,
    on_checkpoint: Callable[[TrainState, np.ndarray], None] | None = None,
    checkpoint_every: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> Result:
    """Simulates, buckets and trains an MDN posterior q(θ | y) for ``task``.

    Args:
        task: a ``mdnjax.Task`` or a built-in task's name (``"beta"``, ``"gamma"``, ...).
        config: training settings (default ``Config()``); resolved and checked here.
        init_state: continue from this state (``Result.state`` or a checkpoint); the result is
            bitwise that of an uninterrupted run with the same config.
        history: the losses of the epochs ``init_state`` already trained.
        buckets: reuse an existing layout (θ in the fitting space) instead of simulating.
        callback: called with a ``Progress`` after every ``config.log_every`` epochs.
        on_checkpoint: called with ``(state, losses)`` every ``checkpoint_every`` epochs, when
            stopped, and at the end (host copies).
        checkpoint_every: epochs between checkpoints (0: only when stopped and at the end).
        should_stop: polled after every dispatch; True stops training there (``Result.stopped_at``).

    Returns:
        A ``Result``; simulation warnings are also issued once each with ``warnings.warn``.

    Raises:
        ConfigError: a setting out of range or data that cannot be trained on.
    """
    task = resolve_task(task)
    config = (config or Config()).resolve(task)
    timings: dict = {}
    # the padded reference runs on one device; the binned layout is tiny: replicated, not split
    mesh = parallel.device_mesh(1 if config.layout in ("padded", "binned") else config.devices)
    shards = 1 if mesh is None else mesh.size
    block = None if config.layout == "padded" else layout.BLOCK
    if buckets is None:
        b, report = simulation.build_layout(task, config, shards, block)
    else:
        b, report = buckets, {"samples": buckets.num_samples, "moved_to_interior": 0, "warnings": [], "dropped": 0}
    heldout = simulation.draw_heldout(task, config) if buckets is None else None
    for line in report["warnings"]:
        warnings.warn(line, RuntimeWarning, stacklevel=2)
    timings.update({k: report.pop(k) for k in ("simulate_s", "bucket_s") if k in report})
    embedding = task.input_embedding(b.y_values, b.counts)
    if config.layout == "binned":
        data = layout.binned_to_data(b, embedding, weighting=config.weighting)
    else:
        data = layout.to_data(b, embedding, block=block, weighting=config.weighting, shards=shards)
    b = b.without_samples()  # the samples now live in ``data``
    dim, inputs = len(task.support), input_width(b.y_values)
    graphdef, _ = model.init(jax.random.key(config.seed), config.components, config.hidden, dim, inputs)
    state = init_state if init_state is not None else initial_state(config, dim, inputs)
    losses = [np.asarray(history, np.float32)] if history is not None and len(history) else []
    start = int(state.epoch)
    if start > config.epochs:
        raise ConfigError(f"the run already trained {start} epochs: ask for more than that", "epochs")
    state = jax.tree_util.tree_map(jnp.asarray, state)
    run = make_run_epochs(make_step(make_loss(config, graphdef, dim), optimizer(config)))
    if mesh is not None:
        data, state = parallel.shard(data, state, mesh)

    def checkpoint() -> None:
        if on_checkpoint is not None:
            on_checkpoint(parallel.host(state), np.concatenate(losses) if losses else np.zeros(0, np.float32))

    chunk = min(config.log_every, config.epochs)
    compiled: dict = {}
    timings["compile_s"] = 0.0
    diverged_at, stopped_at, train_s, epoch = None, None, 0.0, start
    while epoch < config.epochs:
        num = min(chunk, config.epochs - epoch)
        if num not in compiled:
            t0 = time.perf_counter()
            compiled[num] = run.lower(state, data, num).compile()
            timings["compile_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        state, chunk_losses = compiled[num](state, data)
        chunk_losses = parallel.host(chunk_losses)
        train_s += time.perf_counter() - t0
        losses.append(chunk_losses)
        if callback is not None:
            callback(Progress(epoch + num, config.epochs, chunk_losses, 1e3 * train_s / (epoch + num - start)))
        bad = np.flatnonzero(~np.isfinite(chunk_losses))
        if bad.size or not bool(parallel.host(state.finite)):
            diverged_at = epoch + int(bad[0]) if bad.size else epoch + num
            break
        epoch += num
        if epoch < config.epochs and should_stop is not None and should_stop():
            stopped_at = epoch
            checkpoint()
            break
        if checkpoint_every and epoch < config.epochs and epoch % checkpoint_every < num:
            checkpoint()
    if diverged_at is None and stopped_at is None:
        checkpoint()
    history = np.concatenate(losses) if losses else np.zeros(0, np.float32)
    epochs_run = max(history.size - start, 1)
    timings["train_s"] = train_s
    timings["epochs_per_s"] = epochs_run / train_s if train_s > 0 else float("nan")
    timings["ms_per_epoch"] = 1e3 * train_s / epochs_run
    state = parallel.host(state)
    final = state.last_finite if diverged_at is not None else state.params
    spec = PosteriorSpec.of(task, config, embedding, b.y_values, b.counts)
    post = Posterior(spec, jax.tree_util.tree_map(jnp.asarray, final))
    return Result(post, state, history, timings, b, report, config, diverged_at, stopped_at, heldout)


if __name__ == "__main__":  # the command line lives in mdnjax.cli; hand over without importing it here
    import runpy

    runpy.run_module("mdnjax", run_name="__main__")

"""The training loop any layout shares: the named state, the step, many epochs in one
``lax.scan``, checkpoints, stopping and divergence.

``step(params, opt_state, data) -> (params, opt_state, loss)`` is a pure function; ``log_every``
epochs run inside one ``jax.lax.scan`` per dispatch, so XLA reuses its buffers and Python is out
of the loop. A non-finite loss freezes the parameters at the last finite point and stops the run.
Resuming is handing a ``TrainState`` back.

Example:
    >>> import jax.numpy as jnp, optax
    >>> loss = lambda params, data: jnp.sum((params["w"] - data) ** 2)
    >>> run = make_run_epochs(make_step(loss, optax.sgd(0.1)))
    >>> params = {"w": jnp.zeros(2)}
    >>> state = state_of(params, optax.sgd(0.1))
    >>> state, losses = run(state, jnp.ones(2), 3)
    >>> int(state.epoch), losses.shape
    (3, (3,))
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdnjax import model, parallel
from mdnjax.config import Config


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
    validation: float | None = None  # the per-sample layout: this pass's validation loss


def cosine(lr: float, horizon) -> Callable:
    """``optax.cosine_decay_schedule(lr, horizon)`` with ``horizon`` an array, so a compiled
    program takes it as an input: fits of the same network to other epoch counts (and a resume
    that trains longer) run the program the first one compiled. Equal to optax's to the last bit
    of float32 or so (optax's constant horizon is folded into the program)."""

    def schedule(count):
        count = jnp.minimum(count, horizon)
        return lr * (0.5 * (1 + jnp.cos(jnp.pi * count / horizon)))

    return schedule


def learning_rate(config: Config, horizon=None):
    """The learning rate, or a schedule of the step count (cosine: to 0 at ``horizon``, default
    ``config.epochs``)."""
    if config.schedule == "cosine":
        return cosine(config.lr, jnp.float32(config.epochs) if horizon is None else horizon)
    return config.lr


def optimizer(config: Config, horizon=None) -> optax.GradientTransformation:
    return optax.adam(learning_rate(config, horizon))


def optimizer_key(config: Config) -> tuple:
    """What ``optimizer(config, horizon)`` depends on besides the horizon (a key for ``kept``)."""
    return config.lr, config.schedule


def kept(build: Callable, *key):
    """``build(*key)``, kept for the process when ``key`` is hashable: a later fit with the same
    network and training settings (another seed, more samples of the same shape, a resume in the
    same session) runs the program the first one compiled, since ``jax.jit`` caches compiled
    programs by function and shapes.

    Example:
        >>> kept(list, (1, 2)) is kept(list, (1, 2))
        True
    """
    try:
        return _kept(build, key)
    except TypeError:  # an unhashable part (a user's module): built anew
        return build(*key)


@functools.lru_cache(maxsize=16)
def _kept(build, key):
    return build(*key)


def state_of(params, opt: optax.GradientTransformation) -> TrainState:
    """The state before the first epoch of training ``params`` with ``opt``."""
    return TrainState(
        params=params,
        opt_state=opt.init(params),
        last_finite=jax.tree_util.tree_map(jnp.copy, params),
        finite=jnp.array(True),
        epoch=jnp.array(0, jnp.int32),
    )


def initial_state(config: Config, dim: int = 1, inputs: int = 1) -> TrainState:
    """The state before the first epoch (``config`` resolved) of a θ ∈ ℝ^dim, y ∈ ℤ^inputs model."""
    _, params = model.init(
        jax.random.key(config.seed), config.components, config.hidden, dim, inputs, None, config.linear_skip
    )
    return state_of(params, optimizer(config))


def make_step(loss: Callable, opt: optax.GradientTransformation) -> Callable:
    """One full-batch Adam step: ``step(params, opt_state, data) -> (params, opt_state, loss)``."""

    def step(params, opt_state, data):
        value, grads = jax.value_and_grad(loss)(params, data)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def flattened(tree, params):
    """``tree`` with ``params`` and every subtree shaped like them (Adam's moments, the best
    parameters) as one flat vector each, for the inside of a compiled step.

    The optimiser's arithmetic is elementwise, so on one vector it is a few kernels instead of a
    few per layer: XLA:CPU compiles the per-sample pass about 1.5–2× faster and runs it 10–30%
    faster (``benchmarks/train_time.py``). State in and out keeps its tree (checkpoints are
    unchanged). Parameters that are one array already are left as they are.

    Returns:
        (flat_tree, unravel, back): ``unravel`` maps a flat vector to a tree like ``params`` (for
        the loss); ``back`` maps a tree shaped like ``flat_tree`` to one shaped like ``tree``.

    Example:
        >>> params = {"a": jnp.ones(2), "b": jnp.zeros((1, 2))}
        >>> flat, unravel, back = flattened((params, 3), params)
        >>> flat[0].shape, back(flat)[0]["b"].shape
        ((4,), (1, 2))
    """
    from jax.flatten_util import ravel_pytree

    _, unravel = ravel_pytree(params)
    shape = jax.tree_util.tree_structure(params)
    if jax.tree_util.treedef_is_leaf(shape):
        return tree, lambda flat: flat, lambda new: new

    def like_params(node):
        return jax.tree_util.tree_structure(node) == shape

    def down(node):
        return ravel_pytree(node)[0] if like_params(node) else node

    def up(node, flat):
        return unravel(flat) if like_params(node) else flat

    flat_tree = jax.tree_util.tree_map(down, tree, is_leaf=like_params)
    return flat_tree, unravel, lambda new: jax.tree_util.tree_map(up, tree, new, is_leaf=like_params)


def select(pred, new, old):
    """``new`` where ``pred`` else ``old``, leaf by leaf."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), new, old)


def all_finite(tree) -> jax.Array:
    """Whether every number in ``tree`` is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))


def _scan_epochs(step: Callable, state, data, num: int, active):
    """``num`` epochs of ``step`` in one loop; with ``active`` (a traced count), only the first
    ``active`` of them run (the losses of the rest are NaN), so one program serves every shorter
    dispatch: the last of a run and a resume's first."""

    def epoch(s: TrainState):
        params, opt_state, value = step(s.params, s.opt_state, data)
        finite = s.finite & jnp.isfinite(value)
        last_finite = select(finite, s.params, s.last_finite)
        finite &= all_finite(params)
        new = TrainState(
            params=select(finite, params, s.params),
            opt_state=select(finite, opt_state, s.opt_state),
            last_finite=last_finite,
            finite=finite,
            epoch=s.epoch + finite.astype(s.epoch.dtype),
        )
        return new, value

    if active is None:
        return jax.lax.scan(lambda s, _: epoch(s), state, None, length=num)

    def body(i, carry):
        s, losses = carry
        s, value = epoch(s)
        return s, losses.at[i].set(value)

    losses = jnp.full((num,), jnp.nan, jax.eval_shape(epoch, state)[1].dtype)
    return jax.lax.fori_loop(0, jnp.minimum(active, num), body, (state, losses))


def make_run_epochs(step: Callable) -> Callable:
    """``run(state, data, num, active=None, horizon=None) -> (state, losses)``: ``num`` epochs of
    ``step`` in one ``lax.scan`` (``active``: train only the first ``active`` of them, a traced int;
    ``horizon`` is ignored: ``make_flat_run_epochs`` takes one)."""

    @functools.partial(jax.jit, static_argnums=2, donate_argnums=0)
    def run(state: TrainState, data, num: int, active=None, horizon=None):
        return _scan_epochs(step, state, data, num, active)

    return run


def make_flat_run_epochs(loss: Callable, opt) -> Callable:
    """``make_run_epochs(make_step(loss, opt))`` with the parameters, Adam's moments and the last
    finite parameters as one flat vector each inside the program (``flattened``): the same
    arithmetic element by element in fewer kernels: on XLA:CPU the bucketed epochs compile about
    25–35% faster (beta binned 4.1 → 2.8 s, a D = 2 binned run 7.2 → 4.9 s) and run no slower.
    State in and out keeps its tree. ``opt`` is an optax transformation or a function of the
    schedule's horizon (``run``'s ``horizon``, a traced number: ``optimizer(config, horizon)``).

    Example:
        >>> loss = lambda params, data: jnp.sum((params["w"] - data) ** 2) + params["b"] ** 2
        >>> run = make_flat_run_epochs(loss, optax.sgd(0.1))
        >>> state = state_of({"w": jnp.zeros(2), "b": jnp.ones(())}, optax.sgd(0.1))
        >>> state, losses = run(state, jnp.ones(2), 3)
        >>> state.params["w"].shape, losses.shape
        ((2,), (3,))
    """

    @functools.partial(jax.jit, static_argnums=2, donate_argnums=0)
    def run(state: TrainState, data, num: int, active=None, horizon=None):
        flat, unravel, back = flattened(state, state.params)
        step = make_step(lambda params, data: loss(unravel(params), data), opt(horizon) if callable(opt) else opt)
        flat, losses = _scan_epochs(step, flat, data, num, active)
        return back(flat), losses

    return run


class Outcome(NamedTuple):
    """What ``train`` ends with."""

    state: TrainState  # host copies
    losses: np.ndarray  # (epochs so far,) every epoch's loss, resumed epochs included
    timings: dict  # compile_s, train_s, epochs_per_s, ms_per_epoch
    diverged_at: int | None  # first epoch with a non-finite loss
    stopped_at: int | None  # epoch at which ``should_stop`` ended training


def train(
    run: Callable,
    state: TrainState,
    data,
    epochs: int,
    log_every: int,
    *,
    history: np.ndarray | None = None,
    callback: Callable[[Progress], None] | None = None,
    on_checkpoint: Callable[[TrainState, np.ndarray], None] | None = None,
    checkpoint_every: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> Outcome:
    """Runs ``run(state, data, num)`` (``make_run_epochs``) from ``state.epoch`` to ``epochs``.

    Each dispatch runs ``log_every`` epochs, the last one fewer through the same program (compiled
    once, compile time apart from training time); after it: the callback, the divergence check, the stop poll, and a
    checkpoint every ``checkpoint_every`` epochs (0: only when stopped and at the end).
    """
    start = int(state.epoch)
    losses = [np.asarray(history, np.float32)] if history is not None and len(history) else []

    def checkpoint() -> None:
        if on_checkpoint is not None:
            on_checkpoint(parallel.host(state), np.concatenate(losses) if losses else np.zeros(0, np.float32))

    chunk = min(log_every, epochs)
    compiled = None
    timings = {"compile_s": 0.0}
    diverged_at, stopped_at, train_s, epoch = None, None, 0.0, start
    horizon = jnp.float32(epochs)  # the schedule's length (cosine), an input of the program
    while epoch < epochs:
        num = min(chunk, epochs - epoch)
        active = jnp.asarray(num, jnp.int32)
        if compiled is None:
            t0 = time.perf_counter()
            compiled = run.lower(state, data, chunk, active, horizon).compile()
            timings["compile_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        state, chunk_losses = compiled(state, data, active, horizon)
        chunk_losses = parallel.host(chunk_losses)[:num]
        train_s += time.perf_counter() - t0
        losses.append(chunk_losses)
        if callback is not None:
            callback(Progress(epoch + num, epochs, chunk_losses, 1e3 * train_s / (epoch + num - start)))
        bad = np.flatnonzero(~np.isfinite(chunk_losses))
        if bad.size or not bool(parallel.host(state.finite)):
            diverged_at = epoch + int(bad[0]) if bad.size else epoch + num
            break
        epoch += num
        if epoch < epochs and should_stop is not None and should_stop():
            stopped_at = epoch
            checkpoint()
            break
        if checkpoint_every and epoch < epochs and epoch % checkpoint_every < num:
            checkpoint()
    if diverged_at is None and stopped_at is None:
        checkpoint()
    history = np.concatenate(losses) if losses else np.zeros(0, np.float32)
    epochs_run = max(history.size - start, 1)
    timings["train_s"] = train_s
    timings["epochs_per_s"] = epochs_run / train_s if train_s > 0 else float("nan")
    timings["ms_per_epoch"] = 1e3 * train_s / epochs_run
    return Outcome(parallel.host(state), history, timings, diverged_at, stopped_at)

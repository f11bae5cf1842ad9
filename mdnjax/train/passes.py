"""The per-sample layout's compiled pass: its state, the optimiser, the Adam steps over shuffled
minibatches in one ``lax.scan`` and the end of a pass (validation loss, best parameters, patience,
the plateau schedule), and the host loop over passes (``drive``: progress, stopping, checkpoints).
``minibatch.fit`` (data resident on the device) and ``streamed.fit`` (data streamed in blocks) both
run these."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdnjax import batches, objective, parallel
from mdnjax.config import Config
from mdnjax.train.loop import Progress, all_finite, flattened, select

CLIP = 5.0  # the global gradient norm Adam's steps are clipped to


class SampleState(NamedTuple):
    """Everything that continues a per-sample run exactly.

    Attributes:
        params: MDN parameters (with the embedding's).
        opt_state: the optimiser's state.
        best_params: the parameters with the lowest validation loss so far.
        best_loss: that validation loss (inf before the first pass).
        since_best: passes since the validation loss last improved.
        epoch: passes trained so far.
        skipped: steps skipped for a non-finite loss or update.
        lr_scale: the factor on Adam's steps (``schedule="plateau"`` halves it after every
            ``patience // 4`` passes without a better validation loss).
        avg_params: the exponential moving average of the parameters over the steps
            (``Config.ema``; None when it is off): what is validated and kept as the best.
    """

    params: Any
    opt_state: Any
    best_params: Any
    best_loss: jax.Array
    since_best: jax.Array
    epoch: jax.Array
    skipped: jax.Array
    lr_scale: jax.Array
    avg_params: Any = None


class Pairs(NamedTuple):
    """The training and validation pairs on the device: network inputs x and standardised θ."""

    x: jax.Array  # (n_train, M)
    theta: jax.Array  # (n_train, D)
    val_x: jax.Array  # (n_val, M)
    val_theta: jax.Array  # (n_val, D)


def optimizer(config: Config, steps_per_pass: int) -> optax.GradientTransformation:
    return _optimizer(*optimizer_key(config, steps_per_pass))


def optimizer_key(config: Config, steps_per_pass: int) -> tuple:
    """What ``optimizer(config, steps_per_pass)`` depends on (a key for ``loop.kept``)."""
    return config.lr, config.epochs * steps_per_pass if config.schedule == "cosine" else None


def _optimizer(lr: float, decay_steps: int | None) -> optax.GradientTransformation:
    schedule = lr if decay_steps is None else optax.cosine_decay_schedule(lr, decay_steps)
    return optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(schedule))


def decay(ema: float, steps_per_pass: int) -> float:
    """The moving average's factor per step for a time constant of ``ema`` passes (0: off).

    Example:
        >>> decay(1.0, 1000), decay(0.0, 1000)
        (0.999, 0.0)
    """
    return max(0.0, 1.0 - 1.0 / (ema * steps_per_pass)) if ema else 0.0


def state_of(params, opt, ema: float = 0.0) -> SampleState:
    return SampleState(
        params=params,
        opt_state=opt.init(params),
        best_params=jax.tree_util.tree_map(jnp.copy, params),
        best_loss=jnp.array(jnp.inf, jnp.float32),
        since_best=jnp.array(0, jnp.int32),
        epoch=jnp.array(0, jnp.int32),
        skipped=jnp.array(0, jnp.int32),
        lr_scale=jnp.array(1.0, jnp.float32),
        avg_params=jax.tree_util.tree_map(jnp.copy, params) if ema else None,
    )


def scan_steps(loss, opt, state: SampleState, x, theta, idx, rho: float = 0.0):
    """The Adam steps over the minibatches ``idx`` (steps, batch) of (x, θ) in a ``lax.scan``;
    a step with a non-finite loss or update is skipped and counted; a state with an average
    (``avg_params``) has a ← rho·a + (1 − rho)·params after every step (``decay``). Returns the
    state with the new params, opt_state, skipped and avg_params, and each step's loss or NaN."""

    def body(carry, i):
        params, opt_state, skipped, avg = carry
        value, grads = jax.value_and_grad(loss)(params, x[i], theta[i])
        updates, new_opt = opt.update(grads, opt_state, params)
        updates = jax.tree_util.tree_map(lambda u: u * state.lr_scale, updates)
        new_params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(value) & all_finite(new_params) & all_finite(new_opt)
        params = select(ok, new_params, params)
        if avg is not None:
            avg = jax.tree_util.tree_map(lambda a, p: rho * a + (1.0 - rho) * p, avg, params)
        carry = (params, select(ok, new_opt, opt_state), skipped + (~ok).astype(jnp.int32), avg)
        return carry, jnp.where(ok, value, jnp.nan)

    carry = (state.params, state.opt_state, state.skipped, state.avg_params)
    (params, opt_state, skipped, avg), values = jax.lax.scan(body, carry, idx)
    return state._replace(params=params, opt_state=opt_state, skipped=skipped, avg_params=avg), values


def validated(state: SampleState):
    """The parameters a pass is judged and kept by: the average when there is one."""
    return state.params if state.avg_params is None else state.avg_params


def close_pass(state: SampleState, stepped: SampleState, val, plateau: int) -> SampleState:
    """The state after a pass (``stepped``: ``state`` after its steps): the best parameters
    (``validated``) and the patience count from the validation loss ``val``; ``plateau`` > 0
    halves the step size after every ``plateau`` passes without a better one."""
    better = jnp.isfinite(val) & (val < state.best_loss)
    since = jnp.where(better, 0, state.since_best + 1).astype(jnp.int32)
    halve = (~better) & (since % max(plateau, 1) == 0) if plateau else jnp.array(False)
    return stepped._replace(
        best_params=select(better, validated(stepped), state.best_params),
        best_loss=jnp.where(better, val, state.best_loss),
        since_best=since,
        epoch=state.epoch + 1,
        lr_scale=jnp.where(halve, 0.5 * state.lr_scale, state.lr_scale),
    )


def make_pass(graphdef, opt, batch: int, steps: int, plateau: int = 0, rho: float = 0.0) -> Callable:
    """``run(state, pairs, key) -> (state, (train_loss, val_loss))``: one pass of ``steps``
    minibatches in a ``lax.scan``, then the validation loss and the best-parameters bookkeeping;
    ``plateau`` > 0 halves the step size after every ``plateau`` passes without improvement;
    a state with an average moves it by ``rho`` a step and validates and keeps it (``scan_steps``)."""

    @functools.partial(jax.jit, donate_argnums=0)
    def run(state: SampleState, pairs: Pairs, key):
        flat, loss, back = flat_state(state, graphdef)
        idx = batches.indices(key, state.epoch, pairs.x.shape[0], batch, steps)
        stepped, values = scan_steps(loss, opt, flat, pairs.x, pairs.theta, idx, rho)
        val = loss(validated(stepped), pairs.val_x, pairs.val_theta)
        return back(close_pass(flat, stepped, val, plateau)), (jnp.nanmean(values), val)

    return run


def _pass(graphdef, opt_key: tuple, batch: int, steps: int, plateau: int, rho: float = 0.0) -> Callable:
    """``make_pass`` from hashable settings (``loop.kept`` keeps it for the process)."""
    return make_pass(graphdef, _optimizer(*opt_key), batch, steps, plateau, rho)


def flat_state(state: SampleState, graphdef):
    """Inside a compiled pass: the state with its parameters and Adam's moments as flat vectors
    (``loop.flattened``), the loss of flat parameters, and the map back to the state's trees."""
    flat, unravel, back = flattened(state, state.params)

    def loss(params, x, theta):
        return _loss(unravel(params), x, theta, graphdef=graphdef)

    return flat, loss, back


def _loss(params, x, theta, *, graphdef):
    if "means_skip" in params:  # the linear skip is set before training (``batches.skip_kernel``), not trained
        params = {**params, "means_skip": jax.lax.stop_gradient(params["means_skip"])}
    return objective.sample_nll(params, graphdef, x, theta[:, 0] if theta.shape[1] == 1 else theta)


class Driven(NamedTuple):
    """What ``drive`` leaves: the last state, every pass's losses (those handed in first) and why it ended."""

    state: SampleState
    train: list[float]  # the training loss of every pass, the run's earlier sessions first
    validation: list[float]
    train_s: float  # seconds in the passes of this session
    passes: int  # passes of this session (at least 1, for rates)
    diverged_at: int | None  # a non-finite training loss: nothing left to learn from
    stopped_at: int | None  # ``should_stop`` said so (a checkpoint written)
    early_stopped_at: int | None  # ``config.patience`` passes without a better validation loss


def drive(
    one_pass,
    state: SampleState,
    config: Config,
    history=None,
    *,
    callback=None,
    on_checkpoint=None,
    checkpoint_every: int = 0,
    should_stop=None,
) -> Driven:
    """Runs ``one_pass(state, epoch) -> (state, train_loss, validation_loss)`` from ``state.epoch``
    until ``config.epochs``, a non-finite training loss, ``config.patience`` passes without a better
    validation loss, or ``should_stop()``; reports to ``callback`` every ``log_every`` passes (at most
    10) and hands ``on_checkpoint`` the host state and the (passes, 2) losses every
    ``checkpoint_every`` passes, when stopped and at the end. ``history``: the losses of the run's
    earlier sessions, (passes, 2)."""
    start = int(state.epoch)
    past = np.zeros((0, 2), np.float32) if history is None else np.asarray(history, np.float32).reshape(-1, 2)
    train_hist, val_hist = [float(v) for v in past[:, 0]], [float(v) for v in past[:, 1]]
    log_every = max(1, min(config.log_every, 10))
    diverged_at = stopped_at = early = None
    train_s, epoch, last_log = 0.0, start, start

    def checkpoint():
        if on_checkpoint is not None:
            losses = np.stack([train_hist, val_hist], axis=1) if train_hist else np.zeros((0, 2))
            on_checkpoint(parallel.host(state), losses.astype(np.float32))

    while epoch < config.epochs:
        t0 = time.perf_counter()
        state, tr, va = one_pass(state, epoch)
        train_s += time.perf_counter() - t0
        epoch += 1
        train_hist.append(tr)
        val_hist.append(va)
        if callback is not None and (epoch - last_log >= log_every or epoch == config.epochs):
            chunk = np.asarray(train_hist[-(epoch - last_log) :], np.float32)
            callback(Progress(epoch, config.epochs, chunk, 1e3 * train_s / (epoch - start), va))
            last_log = epoch
        if not np.isfinite(tr):
            diverged_at = epoch
            break
        if int(state.since_best) >= config.patience:
            early = epoch
            break
        if epoch < config.epochs and should_stop is not None and should_stop():
            stopped_at = epoch
            checkpoint()
            break
        if checkpoint_every and epoch % checkpoint_every == 0 and epoch < config.epochs:
            checkpoint()
    if stopped_at is None:
        checkpoint()
    return Driven(state, train_hist, val_hist, train_s, max(epoch - start, 1), diverged_at, stopped_at, early)


def timings_of(driven: Driven) -> dict:
    """The training seconds and rates of ``drive``'s passes."""
    return {
        "train_s": driven.train_s,
        "epochs_per_s": driven.passes / driven.train_s if driven.train_s > 0 else float("nan"),
        "ms_per_epoch": 1e3 * driven.train_s / driven.passes,
    }

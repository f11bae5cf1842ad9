"""Sequential rounds for one observation y_o: truncated sequential NPE (TSNPE, Deistler et al.
2022). Round 1 simulates from the prior; each later round from the prior truncated to the region
R where q(θ | y_o) exceeds its (1 − ε)-highest-density threshold τ (τ the ε-quantile of log q over
q's own draws); every round trains anew on all rounds' simulations with the same maximum-likelihood
loss (``mdnjax.fit`` on the pooled pairs, either layout).

Why the loss needs no correction: round r draws θ from p(θ) 1[θ ∈ R_r] / Z_r, so the pooled pairs
come from p̄(θ) = p(θ) w(θ) with w(θ) = Σ_r c_r 1[θ ∈ R_r] / Z_r, and maximum likelihood learns
q(θ | y) ∝ p̄(θ) p(y | θ). On the intersection of the regions w is one constant; the posterior at
y_o keeps all but ε of its mass inside every R_r (each R_r holds 1 − ε of q, and q ≈ p there), so
at y_o the learnt q(θ | y_o) ∝ p(θ) p(y_o | θ) is the posterior itself. Away from y_o it is the
posterior under a truncated prior: a run of rounds answers for y_o alone.

Drawing from the truncated prior: θ from ``task.sample_prior``, kept when log q(θ | y_o) ≥ τ, then
``task.simulate_at`` on the kept θ only. When the acceptance falls below ``floor``, the stated
fallback: propose from q(· | y_o) with every component widened ``WIDEN``-fold, keep the draws in R,
and accept each with probability p(θ) / (M g(θ)) (rejection sampling, g the widened q, M estimated
from a pilot), which leaves them exact draws of the truncated prior; it needs ``task.log_prior``.
A task that draws θ and y only together keeps the joint draws whose θ falls in R.

Example:
    >>> import mdnjax
    >>> out = fit_rounds("beta", {"samples": 8_000, "epochs": 20}, observed=90, rounds=2)
    >>> [r["method"] for r in out.rounds]
    ['prior', 'truncated prior']
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import datasets, density
from mdnjax.config import Config
from mdnjax.posterior import RareObservationWarning
from mdnjax.simulation import UserCodeError

EPSILON = 1e-4  # the share of q's mass outside the truncated region
FLOOR = 1e-3  # below this acceptance from the prior, the widened-q fallback
THRESHOLD_DRAWS = 100_000  # draws of q at y_o that estimate τ
BLOCK = 65_536  # θ per density call (one compiled shape)
WIDEN = 2.0  # the fallback's proposal: q's components with sd × WIDEN
MARGIN = 1.0  # the region is the (1 − ε)-HDR of q with sd × MARGIN (1: of q itself, as in TSNPE)
PILOT = 100_000  # proposals per batch; the first batch also estimates the acceptance
MAX_PROPOSALS = 10**9  # a round that would need more proposals stops with one line
# The bucketed layouts train each round this many times their recipe's epochs unless epochs are
# given: a round must fit one y well, not all of them on average. Beta task, y_o = 95, 4 rounds of
# 2.5·10^5 (docs/quality.md): KL at y_o 0.0055 / 0.0071 / 0.129 over three seeds with the recipe's
# 4,000 epochs, 0.0034 / 0.0040 / 0.0041 with 8,000.
ROUND_EPOCHS = 2
ROUND_STREAM = 0x520  # rounds' random streams: default_rng([seed, ROUND_STREAM, r])


class RoundError(ValueError):
    """A round cannot go on (too few draws land in the region, a failed check); one line."""


class RoundsResult(NamedTuple):
    """What ``fit_rounds`` returns."""

    result: Any  # the last round's ``mdnjax.fit`` result (its posterior answers at y_o); None if no round ran
    task: Any  # the last round's task: a ``sources.StoredTask`` over every round's pairs (pooled)
    rounds: list  # one record per round: simulations, acceptance, threshold, validation loss, summary
    theta: np.ndarray  # every round's θ, in order
    y: np.ndarray  # and y


def _user(task, what: str, fn: Callable, *args):
    """Calls a user's function; its exception becomes a ``UserCodeError`` naming it."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - the user's code: re-raised with its name
        name = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
        raise UserCodeError(f"{task.name}: {what} ({name})", err) from err


def observed_y(post, y_o):
    """y_o as the posterior takes it: an int or float, or an (M,) array."""
    y = post.check_y(y_o)
    if post.spec.inputs == 1:
        y = y.reshape(-1)
        if y.size != 1:
            raise ValueError(f"y_o is one observation of one number, got {y.size}")
        return y[0].item()
    if y.shape != (post.spec.inputs,):
        raise ValueError(f"y_o is one observation of {post.spec.inputs} numbers, got shape {y.shape}")
    return y


def log_q(post, params, theta) -> np.ndarray:
    """log q(θ | y_o) for θ (n,) or (n, D) (θ's own space, Jacobian included), float64; the
    mixture ``params`` at y_o (``post.mixture(y_o)``, or widened); −inf outside the support."""
    theta = np.asarray(theta, np.float32)
    n = len(theta)
    out = np.empty(n)
    bounds, unconstrained = tuple(post.spec.bounds), post.unconstrained
    for lo in range(0, n, BLOCK):
        block = theta[lo : lo + BLOCK]
        m = len(block)
        if m < BLOCK:
            block = np.concatenate([block, np.repeat(block[:1], BLOCK - m, axis=0)])
        out[lo : lo + m] = np.asarray(density.log_prob(jnp.asarray(block), *params, bounds, unconstrained))[:m]
    return out


def draw_q(post, params, key, n: int) -> np.ndarray:
    """``n`` draws (n,) or (n, D) from the mixture ``params`` at y_o, in θ's space."""
    rows = density.bucket_size(1)  # the row count ``Posterior.sample`` compiles for one y
    flat = [np.repeat(np.asarray(a)[None], rows, axis=0) for a in params]
    sampler = density.sample_rows if post.dim == 1 else density.sample_rows_nd
    u = sampler(key, *flat, n)[0]
    theta = density.from_fitting(u, tuple(post.spec.bounds)) if post.unconstrained else u
    return np.asarray(theta, np.float64)


def threshold(post, params, key, epsilon: float = EPSILON, draws: int = THRESHOLD_DRAWS) -> float:
    """τ: the ε-quantile of log q(θ | y_o) over ``draws`` of q itself, so that the region
    {log q ≥ τ} holds 1 − ε of q's mass."""
    lp = log_q(post, params, draw_q(post, params, key, draws))
    lp = lp[np.isfinite(lp)]
    if lp.size < draws // 2:
        raise RoundError(f"q at y_o put {draws - lp.size:,} of {draws:,} draws outside θ's support")
    return float(np.quantile(lp, epsilon))


def widen(params, factor: float, dim: int):
    """The mixture with every component's covariance scaled by factor² (weights and means kept)."""
    logits, means, scales = params
    shift = 2.0 * math.log(factor)
    if dim == 1:
        return logits, means, scales + shift
    return logits, means, jnp.concatenate([scales[..., :dim] + shift, scales[..., dim:] / factor], axis=-1)


def _prior_rejection(task, post, params, tau, n, rng, floor):
    """θ from the prior kept in the region: (θ, proposals, kept), θ None below the floor."""
    kept, proposals, found = [], 0, 0
    while found < n:
        batch = max(PILOT, min(4 * (n - found) * max(proposals, 1) // max(found, 1), 4_000_000))
        theta = np.asarray(_user(task, "sample_prior", task.sample_prior, rng, batch), np.float64)
        theta = theta.reshape(batch) if post.dim == 1 else theta.reshape(batch, post.dim)
        proposals += batch
        keep = log_q(post, params, theta) >= tau
        kept.append(theta[keep])
        found += int(keep.sum())
        if found < floor * proposals:
            return None, proposals, found
        if proposals > MAX_PROPOSALS:
            raise RoundError(f"{proposals:,} prior draws gave {found:,} of the {n:,} needed in the region")
    return np.concatenate(kept)[:n], proposals, found


def _widened_rejection(task, post, params, tau, n, key, rng):
    """Exact draws of the truncated prior by rejection from the widened q: (θ, proposals, log M)."""
    wide = widen(params, WIDEN, post.dim)
    kept, proposals, found, log_m = [], 0, 0, None
    while found < n:
        key, sub = jax.random.split(key)
        theta = draw_q(post, wide, sub, PILOT)
        proposals += PILOT
        log_g = log_q(post, wide, theta)  # the proposal's density, once per draw
        inside = (log_q(post, params, theta) >= tau) & np.isfinite(log_g)
        theta, log_g = theta[inside], log_g[inside]
        log_w = np.asarray(_user(task, "log_prior", task.log_prior, theta), np.float64) - log_g
        ok = np.isfinite(log_w)
        theta, log_w = theta[ok], log_w[ok]
        if log_m is None:  # the envelope from the pilot, with room to spare
            if not log_w.size:
                raise RoundError("the widened q put none of its draws in the region")
            log_m = float(np.max(log_w)) + math.log(1.5)
        log_m = max(log_m, float(np.max(log_w, initial=-np.inf)))
        accept = rng.random(len(theta)) < np.exp(log_w - log_m)
        kept.append(theta[accept])
        found += int(accept.sum())
        if proposals > MAX_PROPOSALS:
            raise RoundError(f"{proposals:,} widened-q draws gave {found:,} of the {n:,} needed")
    return np.concatenate(kept)[:n], proposals, log_m


def _joint_rejection(task, post, params, tau, n, rng, floor):
    """A task without ``sample_prior``/``simulate_at``: joint draws whose θ falls in the region."""
    thetas, ys, proposals, found = [], [], 0, 0
    while found < n:
        batch = max(1_000, min(2 * (n - found) * max(proposals, 1) // max(found, 1), 1_000_000))
        theta, y = _user(task, "simulate", task.simulate, rng, batch)
        theta = np.asarray(theta, np.float64)
        theta = theta.reshape(batch) if post.dim == 1 else theta.reshape(batch, post.dim)
        proposals += batch
        keep = log_q(post, params, theta) >= tau
        thetas.append(theta[keep])
        ys.append(np.asarray(y)[keep])
        found += int(keep.sum())
        if found < floor * proposals:
            raise RoundError(
                f"{found:,} of {proposals:,} simulations fell in the truncated region (acceptance below {floor:g}) "
                "and the task draws θ and y only together: give it sample_prior and simulate_at (and log_prior) "
                "so that rounds draw θ first"
            )
    return np.concatenate(thetas)[:n], np.concatenate(ys)[:n], proposals


def propose(task, post, y_o, n: int, rng, key, epsilon: float = EPSILON, floor: float = FLOOR, margin: float = MARGIN):
    """``n`` simulations (θ, y) from the prior truncated to q's (1 − ε)-highest-density region at
    y_o (q's components widened ``margin``-fold first), and a record: threshold, proposals,
    acceptance, method."""
    with warnings.catch_warnings():  # few training samples at y_o is why rounds are run
        warnings.simplefilter("ignore", RareObservationWarning)
        params = post.mixture(observed_y(post, y_o))
    if margin != 1.0:
        params = widen(params, margin, post.dim)
    k_tau, k_wide = jax.random.split(key)
    tau = threshold(post, params, k_tau, epsilon)
    info = {"threshold": tau}
    if not task.separable:
        theta, y, proposals = _joint_rejection(task, post, params, tau, n, rng, floor)
        return theta, y, {**info, "method": "joint rejection", "proposals": proposals, "acceptance": n / proposals}
    theta, proposals, found = _prior_rejection(task, post, params, tau, n, rng, floor)
    if theta is not None:
        info.update(method="truncated prior", proposals=proposals, acceptance=n / proposals)
    else:
        if not callable(task.log_prior):
            raise RoundError(
                f"only {100 * floor:g}% or fewer of the prior's draws fall in the truncated region and the task "
                "has no log_prior for the widened-q fallback: give it log_prior, or lower --floor"
            )
        theta, wide, log_m = _widened_rejection(task, post, params, tau, n, k_wide, rng)
        info.update(
            method="widened q",
            prior_proposals=proposals,
            prior_acceptance=found / proposals,
            proposals=wide,
            acceptance=n / wide,
            log_envelope=log_m,
        )
    y = _user(task, "simulate_at", task.simulate_at, rng, theta)
    return theta, np.asarray(y), info


def summary_at(post, y_o) -> dict:
    """Mean, sd and 90% interval of q(θ | y_o) per parameter."""
    y = observed_y(post, y_o)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RareObservationWarning)
        mean = np.atleast_1d(np.asarray(post.mean(y), np.float64))
        sd = np.atleast_1d(np.asarray(post.std(y), np.float64))
        q = np.asarray(post.quantile(np.array([0.05, 0.95]), y), np.float64).reshape(2, -1)
    return {"mean": mean.tolist(), "sd": sd.tolist(), "q05": q[0].tolist(), "q95": q[1].tolist()}


def _first(task, config: Config, n: int, data, rng):
    """Round 1: n prior simulations, or the first n rows of a dataset."""
    if data is not None:
        stored = data if isinstance(data, (datasets.Dataset, datasets.Arrays)) else datasets.open_dataset(data)
        if stored.count < n:
            raise RoundError(f"round 1 needs {n:,} simulations; the data hold {stored.count:,}")
        theta, y = stored.read(0, n)
        return np.asarray(theta, np.float64), np.asarray(y), {"method": "data", "proposals": n, "acceptance": 1.0}
    theta, y = _user(task, "simulate", task.simulate, rng, n)
    return np.asarray(theta, np.float64), np.asarray(y), {"method": "prior", "proposals": n, "acceptance": 1.0}


def _pooled(thetas, ys, seed: int, r: int):
    """Every round's pairs in one seeded order, so the held-out share comes from every round."""
    theta, y = np.concatenate(thetas), np.concatenate(ys)
    order = np.random.default_rng([seed, ROUND_STREAM, r, 1]).permutation(len(theta))
    return theta[order], y[order]


def fit_rounds(
    task,
    config: Config | dict | None = None,
    *,
    observed,
    rounds: int,
    per_round: int | None = None,
    epsilon: float = EPSILON,
    floor: float = FLOOR,
    margin: float = MARGIN,
    data=None,
    previous: list | None = None,
    posterior=None,
    on_round: Callable | None = None,
    on_stage: Callable | None = None,
    **options,
) -> RoundsResult:
    """Trains a posterior for one observation ``observed`` in ``rounds`` rounds (TSNPE).

    Args:
        task: a ``mdnjax.Task`` or a built-in task's name.
        config: as for ``mdnjax.fit``; ``config.samples`` is the budget of all rounds together
            unless ``per_round`` is given; unset epochs of a bucketed layout are ``ROUND_EPOCHS``
            times its recipe's.
        observed: y_o (a number, or M numbers).
        rounds: the number of rounds R ≥ 1 (R = 1 is amortized training on the prior).
        per_round: simulations per round (default ``config.samples // rounds``; with ``data``,
            the rows the data hold).
        epsilon: the share of q's mass at y_o left outside each round's region.
        floor: the prior's acceptance below which the widened-q fallback proposes.
        margin: the region is that of q with every component's sd × ``margin`` (> 1 guards
            against a q that is off at y_o, at the cost of a larger region).
        data: round 1 from stored simulations (a dataset folder, ``Dataset`` or ``Arrays``: its
            first ``per_round`` rows).
        previous: the rounds done already, ``[(theta, y, record), ...]`` (resuming), with
        posterior: the posterior the last of them trained.
        on_round: called after each round with (record, result, theta, y) of that round's new
            simulations (the run folder writes them).
        on_stage: called with a one-line description as each stage starts.
        **options: passed to ``mdnjax.fit`` for every round.

    Returns:
        ``RoundsResult``: the last round's fit, a record per round, every round's simulations.

    Raises:
        RoundError: a round cannot go on (acceptance below the floor without a fallback).
    """
    from mdnjax.train import bucketed, run

    task = bucketed.resolve_task(task)
    config = Config.of(config)
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a whole number >= 1, got {rounds!r}")
    if data is not None and not isinstance(data, (datasets.Dataset, datasets.Arrays)):
        data = datasets.open_dataset(data)
    default = data.count if data is not None else config.samples // rounds
    n = per_round if per_round is not None else default
    if n < 2:
        raise ValueError(f"{n} simulations per round: too few")
    stage = on_stage or (lambda text: None)
    records, thetas, ys = [], [], []
    for theta, y, record in previous or []:
        thetas.append(np.asarray(theta, np.float64))
        ys.append(np.asarray(y))
        records.append(record)
    post, result, stored = posterior, None, None
    for r in range(len(records), rounds):
        t0 = time.perf_counter()
        rng = np.random.default_rng([config.seed, ROUND_STREAM, r])
        if r == 0:
            stage(f"round 1/{rounds}: {n:,} simulations from the {'data' if data is not None else 'prior'}")
            theta, y, info = _first(task, config, n, data, rng)
        else:
            if post is None:
                raise ValueError("resuming rounds needs the posterior of the last round done (posterior=)")
            stage(f"round {r + 1}/{rounds}: {n:,} simulations from the prior truncated at y_o")
            key = jax.random.fold_in(jax.random.key(config.seed), ROUND_STREAM + r)
            theta, y, info = propose(task, post, observed, n, rng, key, epsilon, floor, margin)
        t_sim = time.perf_counter() - t0
        thetas.append(theta)
        ys.append(y)
        pooled = _pooled(thetas, ys, config.seed, r)
        stage(f"round {r + 1}/{rounds}: training on {len(pooled[0]):,} simulations")
        stored, settings = pooled_task(task, config, *pooled)
        checked, choice = run.chosen(stored, settings)
        if config.epochs is None and checked.layout != "per-sample":  # see ROUND_EPOCHS
            settings = dataclasses.replace(settings, epochs=ROUND_EPOCHS * checked.epochs)
        result = run.fit(stored, settings, choice=choice, **options)
        if getattr(result, "stopped_at", None) is not None:  # should_stop: this round is not done
            break
        _check_finite(result, r)
        post = result.posterior
        record = {
            "round": r + 1,
            "simulations": int(len(theta)),
            "total": int(sum(len(t) for t in thetas)),
            **info,
            "validation_loss": _validation(result),
            "at_observed": summary_at(result.posterior, observed),
            "simulate_s": t_sim,
            "seconds": time.perf_counter() - t0,
        }
        records.append(record)
        if on_round is not None:
            on_round(record, result, theta, y)
    return RoundsResult(result, stored, records, np.concatenate(thetas), np.concatenate(ys))


def pooled_task(task, config: Config, theta, y):
    """(a ``sources.StoredTask`` over the pooled pairs, the config with their training rows)."""
    from mdnjax.train import run

    stored, config = run.with_data(task, datasets.Arrays(theta, y, support=[tuple(b) for b in task.support]), config)
    stored.observed_only = True  # its q answers for y_o alone: reports skip the other y's exact posteriors
    return stored, config


def pooled(thetas, ys, seed: int):
    """Every round's pairs in one seeded order (so the held-out share comes from every round);
    the order depends on the seed and the number of rounds only."""
    return _pooled(thetas, ys, seed, len(thetas) - 1)


def _validation(result) -> float | None:
    validation = getattr(result, "validation", None)
    if validation is None or not np.size(validation):
        return None
    return float(np.nanmin(validation))


def _check_finite(result, r: int) -> None:
    if getattr(result, "diverged_at", None) is not None:
        raise RoundError(f"round {r + 1}: the loss became non-finite at epoch {result.diverged_at}")
    if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(result.posterior.params)):
        raise RoundError(f"round {r + 1}: the trained parameters are not finite")

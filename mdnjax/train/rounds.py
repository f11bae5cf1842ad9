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

Drawing from the truncated prior, with its acceptance and fallback: ``mdnjax.train.truncation``.

Example:
    >>> import mdnjax
    >>> out = fit_rounds("beta", {"samples": 8_000, "epochs": 20}, observed=90, rounds=2)
    >>> [r["method"] for r in out.rounds]
    ['prior', 'truncated prior']
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import datasets
from mdnjax.config import Config
from mdnjax.posterior import RareObservationWarning
from mdnjax.train.truncation import (
    EPSILON,
    FLOOR,
    MARGIN,
    RoundError,
    observed_y,
    propose,
    user_call,
)

# The bucketed layouts train each round this many times their recipe's epochs unless epochs are
# given: a round must fit one y well, not all of them on average. Beta task, y_o = 95, 4 rounds of
# 2.5·10^5 (docs/quality.md): KL at y_o 0.0055 / 0.0071 / 0.129 over three seeds with the recipe's
# 4,000 epochs, 0.0034 / 0.0040 / 0.0041 with 8,000.
ROUND_EPOCHS = 2
ROUND_STREAM = 0x520  # rounds' random streams: default_rng([seed, ROUND_STREAM, r])


class RoundsResult(NamedTuple):
    """What ``fit_rounds`` returns."""

    result: Any  # the last round's ``mdnjax.fit`` result (its posterior answers at y_o); None if no round ran
    task: Any  # the last round's task: a ``sources.StoredTask`` over every round's pairs (pooled)
    rounds: list  # one record per round: simulations, acceptance, threshold, validation loss, summary
    theta: np.ndarray  # every round's θ, in order
    y: np.ndarray  # and y


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
    theta, y = user_call(task, "simulate", task.simulate, rng, n)
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
        if config.epochs is None and not checked.per_sample:  # see ROUND_EPOCHS
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

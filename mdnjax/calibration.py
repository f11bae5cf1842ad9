"""Calibration of a trained posterior over fresh draws from the prior predictive.

For M fresh pairs (θ*, y*) ~ p(θ) p(y | θ):

* **simulation-based calibration (SBC)**: the rank of θ* among L draws from q(θ | y*) is uniform
  on {0, …, L} when q is the true posterior;
* **expected coverage** of central credible intervals: the central α-interval of q(θ | y*)
  contains θ* iff |Q(θ* | y*) − 1/2| ≤ α/2, with Q the mixture's CDF in closed form, so the
  coverage at every level α comes from one vectorized CDF evaluation per draw.

Both need only the task's simulator. Everything is vectorized over the M draws.
``python -m mdnjax calibrate RUN`` (``mdnjax.cli``) writes ``calibration.json``, ``sbc_ranks.png``
and ``coverage.png`` into the run folder.

Example:
    >>> coverage(np.array([0.5, 0.1, 0.9]), levels=[0.5, 0.9])
    array([0.33333333, 1.        ])
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from mdnjax import mixture
from mdnjax.posterior import Posterior, RareObservationWarning

LEVELS = np.round(np.linspace(0.05, 0.95, 19), 2)


def _fitting_space(posterior: Posterior, theta) -> jax.Array:
    theta = np.asarray(theta, np.float64)
    if posterior.unconstrained:  # ranks and CDFs are invariant under the increasing map f
        theta = posterior.bound.forward(posterior.bound.interior(theta)[0])
    return jnp.asarray(theta, jnp.float32)


def _mixture(posterior: Posterior, y):
    with warnings.catch_warnings():  # fresh draws may land on rare y: that is part of what is measured
        warnings.simplefilter("ignore", RareObservationWarning)
        return posterior.mixture(np.asarray(y))


def pit(posterior: Posterior, theta, y) -> np.ndarray:
    """Q(θ | y) for paired arrays θ (M,) and y (M,): the probability integral transform."""
    logits, means, log_vars = _mixture(posterior, y)  # (M, K) each
    return np.asarray(mixture.cdf(_fitting_space(posterior, theta), logits, means, log_vars), np.float64)


def coverage(u: np.ndarray, levels=LEVELS) -> np.ndarray:
    """Fraction of central α-intervals that hold θ*, from PIT values u (M,), for each α."""
    return np.array([np.mean(np.abs(u - 0.5) <= a / 2) for a in levels])


def sbc_ranks(posterior: Posterior, key, theta, y, num: int) -> np.ndarray:
    """Rank of each θ* among ``num`` draws from q(θ | y*): integers in [0, num], shape (M,)."""
    logits, means, log_vars = _mixture(posterior, y)  # (M, K)
    keys = jax.random.split(key, logits.shape[0])
    draws = jax.vmap(lambda k, lg, m, lv: mixture.sample(k, lg, m, lv, num))(keys, logits, means, log_vars)
    return np.asarray(jnp.sum(draws < _fitting_space(posterior, theta)[:, None], axis=1))


def fresh_draws(task, draws: int, seed: int):
    """Prior-predictive draws the posterior never trained on: simulated from ``seed``, or for a
    run trained from stored simulations (``sources.StoredTask``) the first ``draws`` of its
    held-out rows."""
    if getattr(task, "data", None) is None or not hasattr(task, "train_rows"):
        return task.simulate(np.random.default_rng(seed), draws)
    available = task.data.count - task.train_rows
    if available < 10:
        raise ValueError(
            f"the run trained on stored simulations and held out {available} of them: calibrating needs at least "
            "10 (train with --holdout above 0)"
        )
    return task.data.read(task.train_rows, task.train_rows + min(draws, available))


def run(posterior: Posterior, task, draws: int = 4000, per_draw: int = 99, seed: int = 1) -> dict:
    """Fresh prior-predictive draws → SBC ranks, the coverage curve, and the exact posterior's
    coverage on the same draws when the task has one."""
    theta, y = fresh_draws(task, draws, seed)
    theta, y = np.asarray(theta, np.float64).reshape(-1), np.asarray(y).reshape(-1)
    posterior.check_y(y)
    u = pit(posterior, theta, y)
    ranks = sbc_ranks(posterior, jax.random.key(seed), theta, y, per_draw)
    cov = coverage(u)
    se = np.sqrt(LEVELS * (1 - LEVELS) / len(u))
    out = {
        "draws": int(len(u)),
        "samples_per_draw": per_draw,
        "levels": LEVELS.tolist(),
        "coverage": cov.tolist(),
        "coverage_standard_error": se.tolist(),
        "max_coverage_error": float(np.max(np.abs(cov - LEVELS))),
        "rank_counts": np.bincount(ranks, minlength=per_draw + 1).tolist(),
        "rank_chi2_pvalue": uniform_pvalue(ranks, per_draw),
        "pit_ks_pvalue": float(stats.kstest(u, "uniform").pvalue),
    }
    if task.has_exact_posterior:
        exact_cov = coverage(task.posterior_cdf(theta, y))
        out["coverage_exact_posterior"] = exact_cov.tolist()
        out["max_coverage_error_exact_posterior"] = float(np.max(np.abs(exact_cov - LEVELS)))
    return out


def uniform_pvalue(ranks: np.ndarray, per_draw: int, bins: int = 20) -> float:
    """χ² p-value of the ranks' uniformity over ``bins`` groups of ranks."""
    counts = np.histogram(ranks, bins=bins, range=(-0.5, per_draw + 0.5))[0]
    return float(stats.chisquare(counts).pvalue)


def run_nd(posterior: Posterior, task, draws: int = 4000, per_draw: int = 99, seed: int = 1) -> dict:
    """``run`` for θ ∈ ℝ^D: per coordinate the marginal PIT, coverage curve and SBC ranks, and the
    SBC ranks of log q (the rank of log q(θ* | y*) among log q of q's own draws; uniform when q is
    calibrated jointly, not only coordinate by coordinate)."""
    theta, y = fresh_draws(task, draws, seed)
    theta, y = np.asarray(theta, np.float64), np.asarray(y)
    posterior.check_y(y)
    dim = posterior.dim
    cols = [b.forward(b.interior(theta[:, d])[0]) for d, b in enumerate(posterior.spec.bounds)]
    u_star = np.stack(cols, axis=1) if posterior.unconstrained else theta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RareObservationWarning)
        lp_star, u = posterior.fitting_log_prob_and_cdf(u_star, y)
        logits, means, scales = posterior.mixture(y)
    keys = jax.random.split(jax.random.key(seed), logits.shape[0])
    samples = jax.vmap(lambda k, lg, m, s: mixture.mvn_sample(k, lg, m, s, per_draw))(keys, logits, means, scales)
    lp_samples = jax.vmap(mixture.mvn_log_prob, in_axes=(0, 0, 0, 0))(samples, logits, means, scales)
    star = jnp.asarray(u_star, samples.dtype)
    ranks = np.asarray(jnp.sum(samples < star[:, None, :], axis=1))  # (M, D)
    rank_lq = np.asarray(jnp.sum(lp_samples < jnp.asarray(lp_star, lp_samples.dtype)[:, None], axis=1))
    cov = np.stack([coverage(u[:, d]) for d in range(dim)], axis=1)  # (levels, D)
    se = np.sqrt(LEVELS * (1 - LEVELS) / len(u))
    return {
        "draws": int(len(u)),
        "samples_per_draw": per_draw,
        "levels": LEVELS.tolist(),
        "coverage": cov.tolist(),
        "coverage_standard_error": se.tolist(),
        "max_coverage_error": float(np.max(np.abs(cov - LEVELS[:, None]))),
        "rank_chi2_pvalue": [uniform_pvalue(ranks[:, d], per_draw) for d in range(dim)],
        "rank_log_q_chi2_pvalue": uniform_pvalue(rank_lq, per_draw),
        "pit_ks_pvalue": [float(stats.kstest(u[:, d], "uniform").pvalue) for d in range(dim)],
    }

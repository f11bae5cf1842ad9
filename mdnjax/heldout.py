"""Checks of q(θ | y) for any task, from simulations training never saw.

A fresh simulation (θ, y) is an exact draw from p(θ | y) for its y, so the held-out draws of each
bucket test q there without a likelihood:

* **held-out −log q**: the mean of −log q(θ | y) over the bucket's held-out θ. Its expectation is
  H(p) + KL(p‖q) (H the posterior's entropy), so where a reference exists, held-out −log q − H
  estimates the KL, with Monte Carlo noise ≈ sd(log q)/√n.
* **PIT**: Q(θ | y) of the held-out θ is uniform on (0, 1) when q = p; the KS distance and a
  uniformity p-value measure the departure (a small p-value: q is miscalibrated at that y).
* **W1** between q's draws and the held-out draws.

Example:
    >>> import numpy as np
    >>> u = np.random.default_rng(0).uniform(size=500)
    >>> round(pit_uniformity(u)["ks_pvalue"], 2) > 0.01
    True
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
from scipy import stats

from mdnjax.posterior import RareObservationWarning

MIN_DRAWS = 50  # a y needs this many held-out draws to be checked


def pit_uniformity(u: np.ndarray) -> dict:
    """KS distance of PIT values from the uniform distribution, and its p-value."""
    res = stats.kstest(np.asarray(u, np.float64), "uniform")
    return {"ks": float(res.statistic), "ks_pvalue": float(res.pvalue)}


def check(posterior, heldout, ys=None, min_draws: int = MIN_DRAWS, seed: int = 0, references: dict | None = None):
    """Per-y held-out checks of a posterior.

    Args:
        posterior: the trained ``Posterior``.
        heldout: (θ (n,) in the fitting space, y (n,)) from ``simulation.draw_heldout``.
        ys: the observations to check (default: every y with ``min_draws`` held-out draws).
        min_draws: fewer held-out draws than this and a y is skipped.
        seed: for q's draws (W1).
        references: optional {y: reference posterior} for the entropy H(p) alongside.

    Returns:
        A list of dicts: ``y``, ``draws``, ``nll`` (held-out −log q), ``ks``, ``ks_pvalue``, ``w1``,
        and ``entropy`` (H of the reference) where given.
    """
    theta_u, y = np.asarray(heldout[0], np.float64), np.asarray(heldout[1])
    bound = posterior.bound
    theta = bound.inverse(theta_u) if posterior.unconstrained else theta_u
    values, counts = np.unique(y, return_counts=True)
    if ys is None:
        ys = values[counts >= min_draws]
    ys = np.array([int(v) for v in ys if np.sum(y == v) >= min_draws], np.int64)
    refs = references or {}
    if ys.size == 0:
        return []
    keep = np.isin(y, ys)
    theta, theta_u, y = theta[keep], theta_u[keep], y[keep]
    with warnings.catch_warnings():  # one call per question over every draw: no per-y dispatch
        warnings.simplefilter("ignore", RareObservationWarning)
        # in the fitting space, where a draw within float32 rounding of a bound stays inside; the
        # Jacobian in float64 at the draw itself
        lp, u = posterior.fitting_log_prob_and_cdf(theta_u, y)
        q_draws = np.asarray(posterior.sample(jax.random.key(seed), ys, 2000), np.float64)  # (num_y, 2000)
    if posterior.unconstrained:
        lp = lp + bound.log_abs_det_jacobian(bound.interior(theta)[0])
    rows = []
    for i, yv in enumerate(ys.tolist()):
        at = y == yv
        t = theta[at]
        row = {
            "y": yv,
            "draws": int(t.size),
            "nll": float(-lp[at].mean()),
            "nll_se": float(lp[at].std() / np.sqrt(t.size)),
            **pit_uniformity(u[at]),
            "w1": float(stats.wasserstein_distance(t, q_draws[i])),
        }
        if yv in refs:
            row["entropy"] = float(refs[yv].entropy())
            row["kl_estimate"] = row["nll"] - row["entropy"]
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Summaries over the checked y: how many, the share whose PIT rejects uniformity at 1%."""
    if not rows:
        return {}
    p = np.array([r["ks_pvalue"] for r in rows])
    se = np.array([r["nll_se"] for r in rows])
    out = {
        "count": len(rows),
        "nll_mean_se": float(np.sqrt(np.sum(se**2)) / len(rows)),
        "draws": int(sum(r["draws"] for r in rows)),
        "pit_ks_pvalue_median": float(np.median(p)),
        "pit_rejected_at_1pct": float(np.mean(p < 0.01)),
        "nll_mean": float(np.mean([r["nll"] for r in rows])),
        "w1_mean": float(np.mean([r["w1"] for r in rows])),
    }
    if all("kl_estimate" in r for r in rows):
        out["kl_estimate_mean"] = float(np.mean([r["kl_estimate"] for r in rows]))
    return out

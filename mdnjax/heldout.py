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

from mdnjax.layout.codebook import Codebook
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
        heldout: (θ (n,) in the fitting space, y (n,)) from ``sources.draw_heldout``.
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


# ----------------------------------------------------------------------------- θ ∈ ℝ^D

MMD_PERMUTATIONS = 500
MMD_LEVEL = 0.01  # the two-sample test rejects q at a y when its p-value is below this


def mmd_test(x: np.ndarray, z: np.ndarray, permutations: int = MMD_PERMUTATIONS, seed: int = 0) -> dict:
    """A kernel two-sample test (Gretton et al. 2012): is x (n, D) drawn like z (m, D)?

    The statistic is the biased MMD² with a Gaussian kernel whose bandwidth is the median distance
    between the pooled points (coordinates first scaled by the pooled standard deviations); its
    p-value comes from ``permutations`` random relabellings of the pooled sample ((1 + #≥) / (1 + P):
    never 0, exact in level under the null).

    Returns:
        ``mmd2`` (the statistic), ``pvalue``, ``bandwidth``.
    """
    x, z = np.asarray(x, np.float64).reshape(len(x), -1), np.asarray(z, np.float64).reshape(len(z), -1)
    pooled = np.concatenate([x, z])
    pooled = (pooled - pooled.mean(axis=0)) / np.where(pooled.std(axis=0) > 0, pooled.std(axis=0), 1.0)
    sq = np.sum(pooled**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    bandwidth2 = float(np.median(d2[np.triu_indices(len(pooled), 1)]))
    kernel = np.exp(-d2 / max(bandwidth2, 1e-12))
    n, m = len(x), len(z)
    sign = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    stat = float(sign @ kernel @ sign)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(sign) for _ in range(permutations)])  # (P, n + m)
    null = np.sum((perms @ kernel) * perms, axis=1)
    return {
        "mmd2": stat,
        "pvalue": float((1 + np.sum(null >= stat)) / (1 + permutations)),
        "bandwidth": float(np.sqrt(bandwidth2)),
    }


def check_at(posterior, y, theta_u: np.ndarray, seed: int = 0, max_draws: int = 1000) -> dict:
    """Checks q(θ | y) at one y against exact posterior draws ``theta_u`` (n, D), fitting space.

    Returns:
        ``draws``, ``nll`` (mean −log q_u, fitting space) and its standard error, per coordinate the
        PIT's KS distance and p-value (``pit``: a list of D dicts), and the two-sample test
        (``mmd``, ``mmd_pvalue``, ``rejected`` at ``MMD_LEVEL``) between q's draws and up to
        ``max_draws`` of the exact ones.
    """
    theta_u = np.asarray(theta_u, np.float64).reshape(len(theta_u), -1)
    n = len(theta_u)
    ys = np.broadcast_to(np.asarray(y), (n,) + np.shape(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RareObservationWarning)
        lp, cdf = posterior.fitting_log_prob_and_cdf(theta_u, ys)
        cdf = cdf.reshape(n, -1)
        k = min(n, max_draws)
        q = np.asarray(posterior.sample(jax.random.key(seed), y, k), np.float64).reshape(k, -1)
    if posterior.unconstrained:  # q's draws back to the fitting space, coordinate by coordinate
        q = np.stack([b.forward(b.interior(q[:, d])[0]) for d, b in enumerate(posterior.spec.bounds)], axis=1)
    test = mmd_test(q, theta_u[:k], seed=seed)
    return {
        "draws": n,
        "nll": float(-lp.mean()),
        "nll_se": float(lp.std() / np.sqrt(n)),
        "pit": [pit_uniformity(cdf[:, d]) for d in range(cdf.shape[1])],
        "mmd": test["mmd2"],
        "mmd_pvalue": test["pvalue"],
        "rejected": bool(test["pvalue"] < MMD_LEVEL),
    }


def pit_summary(post, held, min_draws: int = MIN_DRAWS) -> dict:
    """Per coordinate, the share of y (with ``min_draws`` held-out draws) whose marginal PIT rejects
    uniformity at 1%; one vectorised pass over every held-out draw."""
    theta_u, y = held
    rows = np.asarray(y).reshape(len(theta_u), -1)
    book = Codebook.of(rows)
    codes = book.encode(rows)
    counts = np.bincount(codes)
    dense = np.flatnonzero(counts >= min_draws)
    keep = np.isin(codes, dense)
    if not dense.size:
        return {"count": 0, "draws": 0, "pit_rejected_at_1pct": [], "nll_mean": float("nan")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lp, cdf = post.fitting_log_prob_and_cdf(theta_u[keep], np.asarray(y)[keep])
    cdf = cdf.reshape(len(cdf), -1)
    kept = codes[keep]
    rejected = np.zeros((dense.size, cdf.shape[1]), bool)
    for i, c in enumerate(dense):
        at = kept == c
        rejected[i] = [stats.kstest(cdf[at, d], "uniform").pvalue < 0.01 for d in range(cdf.shape[1])]
    return {
        "count": int(dense.size),
        "draws": int(keep.sum()),
        "pit_rejected_at_1pct": rejected.mean(axis=0).tolist() if dense.size else [],
        "nll_mean": float(-lp.mean()) if lp.size else float("nan"),
    }


# ----------------------------------------------------------------------------- flags

CHECK_LEVEL = 0.01  # a uniformity or two-sample test whose p-value falls below this fails


def fails(p: float, level: float = CHECK_LEVEL) -> str:
    """A flag for a failing test's p-value (empty when it passes), to print beside it."""
    return f" FAILS (p < {level:g})" if p < level else ""


def failed_checks(payload: dict, level: float = CHECK_LEVEL) -> list[dict]:
    """Every test of the report whose p-value falls below ``level``: PIT uniformity at each reported
    y (per coordinate) and the MMD two-sample test, as ``{"check", "y", "p", "level"}`` rows."""
    out = []
    names = payload.get("parameters", ["theta"])
    for row in payload.get("at_y", []):
        h = row.get("heldout") or {}
        for n, p in zip(names, h.get("pit", [])):
            if p["ks_pvalue"] < level:
                out.append({"check": f"PIT uniformity of {n}", "y": row["y"], "p": p["ks_pvalue"], "level": level})
        if h and h["mmd_pvalue"] < MMD_LEVEL:
            out.append({"check": "MMD two-sample", "y": row["y"], "p": h["mmd_pvalue"], "level": MMD_LEVEL})
    for row in payload.get("heldout", []) or []:  # scalar runs: every y with enough held-out draws
        if row["ks_pvalue"] < level:
            out.append({"check": "PIT uniformity", "y": row["y"], "p": row["ks_pvalue"], "level": level})
    return out

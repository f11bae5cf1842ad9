"""Distances between an MDN posterior and the exact one, by quadrature in float64.

For each y the grid spans the exact posterior from its 1e-12 to its 1 − 1e-12 quantile (and the
MDN's bulk, for W1), so narrow posteriors are resolved as well as wide ones.

Example:
    >>> from mdnjax import tasks
    >>> task = tasks.make_task("beta")
    >>> exact = task.posterior(30)
    >>> m = compare(task, 30, np.zeros(1), np.array([exact.mean()]), np.log([exact.var()]))
    >>> round(m["kl"], 3)  # a moment-matched Gaussian is close but not exact
    0.001
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

GRID = 4001


def mixture_logpdf(theta, logits, means, log_vars):
    """log density of a Gaussian mixture in float64 numpy; θ (G,), parameters (K,)."""
    logits, means, log_vars = (np.asarray(a, np.float64) for a in (logits, means, log_vars))
    log_w = logits - special.logsumexp(logits)
    comp = stats.norm.logpdf(np.asarray(theta, np.float64)[:, None], means, np.exp(0.5 * log_vars))
    return special.logsumexp(log_w + comp, axis=-1)


def mixture_cdf(theta, logits, means, log_vars):
    """CDF of a Gaussian mixture in float64 numpy; θ (G,), parameters (K,)."""
    logits, means, log_vars = (np.asarray(a, np.float64) for a in (logits, means, log_vars))
    w = special.softmax(logits)
    return stats.norm.cdf(np.asarray(theta, np.float64)[:, None], means, np.exp(0.5 * log_vars)) @ w


_GH_X, _GH_W = np.polynomial.hermite.hermgauss(80)


def transformed_moments(transform, logits, means, log_vars) -> tuple[float, float]:
    """Mean and sd of θ = transform(u), u a Gaussian mixture (Gauss–Hermite, 80 nodes per component)."""
    w = special.softmax(np.asarray(logits, np.float64))
    sd = np.exp(0.5 * np.asarray(log_vars, np.float64))
    nodes = np.asarray(means, np.float64)[:, None] + np.sqrt(2.0) * sd[:, None] * _GH_X  # (K, 80)
    theta = transform(nodes)
    m1 = float(w @ (theta @ _GH_W) / np.sqrt(np.pi))
    m2 = float(w @ ((theta**2) @ _GH_W) / np.sqrt(np.pi))
    return m1, float(np.sqrt(max(m2 - m1 * m1, 0.0)))


def mixture_moments(logits, means, log_vars) -> tuple[float, float]:
    """Mean and standard deviation of a Gaussian mixture."""
    w = special.softmax(np.asarray(logits, np.float64))
    means = np.asarray(means, np.float64)
    mean = float(w @ means)
    var = float(w @ (np.exp(np.asarray(log_vars, np.float64)) + (means - mean) ** 2))
    return mean, float(np.sqrt(var))


def mass_outside(support, logits, means, log_vars) -> float:
    """Probability the mixture puts outside θ's support (closed form)."""
    lo, hi = support
    w = special.softmax(np.asarray(logits, np.float64))
    sd = np.exp(0.5 * np.asarray(log_vars, np.float64))
    below = stats.norm.cdf(lo, means, sd)
    above = stats.norm.sf(hi, means, sd) if np.isfinite(hi) else 0.0
    return float(w @ (below + above))


def compare(task, y: int, logits, means, log_vars, space: str = "raw") -> dict:
    """Exact posterior p(θ | y) against one mixture q.

    With ``space="unconstrained"`` the mixture is over u = ``task.to_unconstrained(θ)`` and
    q(θ) = q_u(u(θ)) |du/dθ|.

    Returns:
        dict with ``kl`` (KL(p‖q), nats), ``w1`` (Wasserstein-1), exact and MDN ``mean``/``sd``,
        their errors and ``mass_outside`` the support.
    """
    exact = task.posterior(y)
    lo, hi = exact.ppf(1e-12), exact.isf(1e-12)
    grid = np.linspace(lo, hi, GRID)
    log_p = exact.logpdf(grid)
    p = np.exp(log_p)
    if space == "raw":
        log_q = mixture_logpdf(grid, logits, means, log_vars)
        mdn_mean, mdn_sd = mixture_moments(logits, means, log_vars)
        q_cdf = lambda t: mixture_cdf(t, logits, means, log_vars)  # noqa: E731
        outside = mass_outside(task.support, logits, means, log_vars)
        w_lo, w_hi = min(lo, mdn_mean - 12 * mdn_sd), max(hi, mdn_mean + 12 * mdn_sd)
    else:
        u = lambda t: task.to_unconstrained(np.asarray(t, np.float64))  # noqa: E731
        log_q = mixture_logpdf(u(grid), logits, means, log_vars) + task.log_abs_det_jacobian(grid)
        mdn_mean, mdn_sd = transformed_moments(task.from_unconstrained, logits, means, log_vars)
        q_cdf = lambda t: mixture_cdf(u(t), logits, means, log_vars)  # noqa: E731
        outside = 0.0
        eps = 1e-300
        w_lo = max(min(lo, mdn_mean - 12 * mdn_sd), task.support[0] + eps)
        w_hi = max(hi, mdn_mean + 12 * mdn_sd)
        if task.support[1] < np.inf:
            w_hi = min(w_hi, task.support[1] - 1e-15)
    kl = float(np.trapezoid(p * (log_p - log_q), grid))
    w_grid = np.linspace(w_lo, w_hi, 4 * GRID)
    w1 = float(np.trapezoid(np.abs(exact.cdf(w_grid) - q_cdf(w_grid)), w_grid))
    exact_mean, exact_sd = float(exact.mean()), float(exact.std())
    return {
        "y": int(y),
        "kl": kl,
        "w1": w1,
        "exact_mean": exact_mean,
        "exact_sd": exact_sd,
        "mdn_mean": mdn_mean,
        "mdn_sd": mdn_sd,
        "mean_error": mdn_mean - exact_mean,
        "sd_error": mdn_sd - exact_sd,
        "mass_outside": outside,
    }


def evaluate(posterior, ys) -> list[dict]:
    """``compare`` at every y in ``ys`` for a ``Posterior``."""
    ys = [int(y) for y in ys]
    if not ys:
        return []
    logits, means, log_vars = (np.asarray(a) for a in posterior.mixture(np.asarray(ys)))
    space = posterior.config.space
    return [compare(posterior.task, y, logits[i], means[i], log_vars[i], space) for i, y in enumerate(ys)]


def summarize(rows: list[dict]) -> dict:
    """Mean and max of KL and W1 over rows of ``compare``."""
    if not rows:
        return {}
    kl = np.array([r["kl"] for r in rows])
    w1 = np.array([r["w1"] for r in rows])
    return {
        "count": len(rows),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "kl_max_y": int(rows[int(kl.argmax())]["y"]),
        "w1_mean": float(w1.mean()),
        "w1_max": float(w1.max()),
        "mean_abs_mean_error": float(np.mean([abs(r["mean_error"]) for r in rows])),
        "mean_abs_sd_error": float(np.mean([abs(r["sd_error"]) for r in rows])),
        "mass_outside_max": float(max(r["mass_outside"] for r in rows)),
    }

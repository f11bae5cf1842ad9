"""Distances between an MDN posterior and the exact one, by quadrature in float64.

For each y the grid spans the exact posterior from its 1e-12 to its 1 − 1e-12 quantile (and the
MDN's bulk, for W1), so narrow posteriors are resolved as well as wide ones.

Example:
    >>> from mdnjax import tasks
    >>> task = tasks.BetaBinomial()
    >>> exact = task.exact_posterior(30)
    >>> m = compare(task, 30, np.zeros(1), np.array([exact.mean()]), np.log([exact.var()]))
    >>> round(m["kl"], 4)  # a moment-matched Gaussian is close but not exact
    0.0025
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
from scipy import special, stats

from mdnjax import sources
from mdnjax.layout.build import plan
from mdnjax.layout.codebook import index_of
from mdnjax.mixture import moments as mixture_moments
from mdnjax.mixture import transformed_moments
from mdnjax.posterior import RareObservationWarning
from mdnjax.reference import weighted_summary
from mdnjax.task import Probability

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


def mass_outside(bound, logits, means, log_vars) -> float:
    """Probability the mixture puts outside θ's support (closed form)."""
    lo, hi = bound.low, bound.high
    w = special.softmax(np.asarray(logits, np.float64))
    sd = np.exp(0.5 * np.asarray(log_vars, np.float64))
    below = stats.norm.cdf(lo, means, sd)
    below = below if np.isfinite(lo) else np.zeros_like(sd)
    above = stats.norm.sf(hi, means, sd) if np.isfinite(hi) else np.zeros_like(sd)
    return float(w @ (below + above))


def compare(task, y: int, logits, means, log_vars, space: str = "raw", reference=None) -> dict:
    """Exact (or reference) posterior p(θ | y) against one mixture q.

    With ``space="unconstrained"`` the mixture is over u = f(θ) (``task.support[0]``) and
    q(θ) = q_u(f(θ)) |f'(θ)|.

    Returns:
        dict with ``kl`` (KL(p‖q), nats), ``w1`` (Wasserstein-1), exact and MDN ``mean``/``sd``,
        their errors and ``mass_outside`` the support.

    ``reference`` (a frozen ``scipy.stats``-like object) replaces ``task.exact_posterior(y)``, e.g.
    a ``mdnjax.reference.GridPosterior``.
    """
    exact = task.exact_posterior(y) if reference is None else reference
    bound = task.support[0]
    inside = lambda t: np.clip(
        np.asarray(t, np.float64), np.nextafter(bound.low, np.inf), np.nextafter(bound.high, -np.inf)
    )  # noqa: E731
    lo, hi = inside(exact.ppf(1e-12)), inside(exact.isf(1e-12))
    if space == "raw":
        grid = np.linspace(lo, hi, GRID)  # quadrature in θ
        with np.errstate(divide="ignore"):
            log_p = exact.logpdf(grid)
        log_q = mixture_logpdf(grid, logits, means, log_vars)
        mdn_mean, mdn_sd = mixture_moments(logits, means, log_vars)
        q_cdf = lambda t: mixture_cdf(t, logits, means, log_vars)  # noqa: E731
        outside = mass_outside(bound, logits, means, log_vars)
        w_lo, w_hi = min(lo, mdn_mean - 12 * mdn_sd), max(hi, mdn_mean + 12 * mdn_sd)
    else:
        # quadrature in u = f(θ), where both densities are smooth even if p(θ) diverges at a bound:
        # p_u(u) = p(θ) / |f'(θ)|, and log p_u − log q_u = log p(θ) − log q(θ)
        grid = np.linspace(bound.forward(lo), bound.forward(hi), GRID)
        theta = inside(bound.inverse(grid))
        with np.errstate(divide="ignore"):
            log_p = exact.logpdf(theta) - bound.log_abs_det_jacobian(theta)
        log_q = mixture_logpdf(grid, logits, means, log_vars)
        mdn_mean, mdn_sd = transformed_moments(bound.inverse, logits, means, log_vars)
        q_cdf = lambda t: mixture_cdf(bound.forward(inside(t)), logits, means, log_vars)  # noqa: E731
        outside = 0.0
        w_lo = max(min(lo, mdn_mean - 12 * mdn_sd), bound.low)
        w_hi = min(max(hi, mdn_mean + 12 * mdn_sd), bound.high)
    p = np.exp(log_p)
    log_ratio = np.where(p > 0, log_p - log_q, 0.0)
    kl = float(np.trapezoid(p * log_ratio, grid))
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


def evaluate(posterior, task, ys, references: dict | None = None) -> list[dict]:
    """``compare`` at every y in ``ys`` for a ``Posterior`` of ``task``, against its exact posterior
    or ``references[y]``."""
    ys = [int(y) for y in ys]
    if not ys:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RareObservationWarning)
        logits, means, log_vars = (np.asarray(a) for a in posterior.mixture(np.asarray(ys)))
    space = posterior.spec.space
    refs = references or {}
    return [compare(task, y, logits[i], means[i], log_vars[i], space, refs.get(y)) for i, y in enumerate(ys)]


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


# ----------------------------------------------------------------------------- θ ∈ ℝ^2

SUMMARY_DRAWS = 200_000


def compare_nd(posterior, task, y, reference, seed: int = 0) -> dict:
    """q(θ | y) against a 2-D grid reference (``mdnjax.reference.grid_posterior_2d``).

    Returns:
        ``kl`` KL(p ‖ q); ``w1``: per coordinate, the Wasserstein-1 distance of the marginals (θ
        units); ``mean_error``: per coordinate |mean_q − mean_p| in units of p's sd;
        ``cov_error``: max |cov_q − cov_p| / (sd_i sd_j); ``mean``, ``sd`` of both; and for each
        of the task's ``summaries`` (scalar functions of θ) its mean, median and 95% interval
        under p (grid) and under q (``SUMMARY_DRAWS`` draws).
    """
    points = reference.points_u
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RareObservationWarning)
        log_q = posterior.fitting_log_prob_at(points, y)
        w1 = []
        for d in range(2):
            edges, cdf_p = reference.marginal(d)
            cdf_q = np.asarray(posterior.marginal_cdf(edges, y, d), np.float64)
            w1.append(float(np.trapezoid(np.abs(cdf_q - cdf_p), edges)))
        mean_q = np.asarray(posterior.mean(y), np.float64)
        cov_q = np.asarray(posterior.cov(y), np.float64)
        draws = np.asarray(posterior.sample(jax.random.key(seed), y, SUMMARY_DRAWS), np.float64)
    mean_p, cov_p = reference.mean(), reference.cov()
    sd_p = np.sqrt(np.diag(cov_p))
    out = {
        "y": [int(v) for v in np.ravel(y)],
        "kl": reference.kl(log_q),
        "w1": w1,
        "mean_error": (np.abs(mean_q - mean_p) / sd_p).tolist(),
        "cov_error": float(np.max(np.abs(cov_q - cov_p) / np.outer(sd_p, sd_p))),
        "mean": {"reference": mean_p.tolist(), "mdn": mean_q.tolist()},
        "sd": {"reference": sd_p.tolist(), "mdn": np.sqrt(np.diag(cov_q)).tolist()},
        "summaries": {},
    }
    for name, fn in getattr(task, "summaries", {}).items():
        out["summaries"][name] = {
            "reference": reference.summary(fn),
            "mdn": weighted_summary(fn(draws)),
            "probability": isinstance(fn, Probability),  # an indicator: only its mean means something
        }
    return out


class NotReproducible(ValueError):
    """Simulating again from the seed did not give the training draws back (a simulator that keeps
    state, or draws from a generator other than the one it is given)."""


def per_sample_loss(task, config, posterior, y_values, processes: int = 1, counts_at=None) -> float:
    """The training objective on the run's own draws, sample by sample (−Σ w log q_u(u | y) in the
    fitting space, per the run's weighting, over the y that had a bucket), re-simulated from the
    seed in chunks: the loss that compares across layouts (a binned run trains on summaries).

    Raises:
        NotReproducible: ``counts_at`` (the training draws at each of ``y_values``) differs from the
            draws simulated again: the loss would be of other draws than training's.
    """
    y_values = np.asarray(y_values)
    num_y = y_values.shape[0]
    counts = np.zeros(num_y)
    total = np.zeros(num_y)  # Σ −log q per y
    report = {"moved_to_interior": 0, "warnings": []}
    if processes > 1 and plan(config.layout).binned:  # the chunks the processes shared
        chunks = sources.streamed(task, config, report, cut=processes)
    elif config.samples <= sources.CHUNK:
        chunks = sources.simulated(task, config, report)
    else:
        chunks = sources.streamed(task, config, report)
    for u, y in chunks():
        j = index_of(y_values, y)
        keep = j >= 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rare y are part of the objective too
            lp, _ = posterior.fitting_log_prob_and_cdf(u[keep], y[keep])
        counts += np.bincount(j[keep], minlength=num_y)
        total += np.bincount(j[keep], -lp, minlength=num_y)
    if counts_at is not None and processes == 1 and not np.array_equal(counts, np.asarray(counts_at)):
        differ = int(np.sum(counts != np.asarray(counts_at)))
        raise NotReproducible(
            f"simulating again from seed {config.seed} gave other draws than training's (the counts differ at "
            f"{differ:,} of {num_y:,} y): the simulator keeps state or draws from a generator it was not given; "
            "the per-sample loss is left out"
        )
    if config.weighting == "per-y":
        return float(np.sum(total / np.maximum(counts, 1)))
    return float(total.sum() / max(counts.sum(), 1))

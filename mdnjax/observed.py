"""The posterior at the user's own observation y_o: a summary per parameter, how many training
draws fell there (and a warning when few did), the held-out exact draws at y_o when its bucket
has them, and a figure of q(θ | y_o).

Example:
    >>> format_summary({"y": [30], "training_samples": 12, "parameters": [
    ...     {"name": "theta", "mean": 0.3, "sd": 0.04, "q05": 0.24, "q95": 0.37}], "heldout_draws": 0})
    'at the observed y = 30 (12 training samples):\\n       theta: mean 0.3, sd 0.04, 90% interval [0.24, 0.37]'
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
from matplotlib.figure import Figure

from mdnjax import heldout
from mdnjax.posterior import RARE_BELOW, RareObservationWarning

DRAWS = 20_000  # draws of q at y_o for the figure's marginals


def summary(post, task, y_o, held=None, seed: int = 0) -> dict:
    """The posterior at ``y_o`` (an int, or M ints): per parameter its mean, sd and 90% interval,
    the training samples at y_o, the held-out exact draws there (``held``: (θ_u, y) draws training
    never saw) and, with at least ``heldout.MIN_DRAWS`` of them, the held-out checks at y_o."""
    y = np.asarray(y_o, np.int64).reshape(-1)
    y = int(y[0]) if post.spec.inputs == 1 else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RareObservationWarning)
        mean = np.atleast_1d(np.asarray(post.mean(y), np.float64))
        sd = np.atleast_1d(np.asarray(post.std(y), np.float64))
        q = np.asarray(post.quantile(np.array([0.05, 0.95]), y), np.float64).reshape(2, -1)
    names = list(
        getattr(task, "parameter_names", None)
        or (["theta"] if post.dim == 1 else [f"theta{d}" for d in range(post.dim)])
    )
    out = {
        "y": np.ravel(y).tolist(),
        "training_samples": int(post.training_samples(y)),
        "parameters": [
            {"name": n, "mean": float(m), "sd": float(s), "q05": float(lo), "q95": float(hi)}
            for n, m, s, lo, hi in zip(names, mean, sd, q[0], q[1])
        ],
        "heldout_draws": 0,
    }
    exact = exact_draws(held, y)
    if exact is not None:
        out["heldout_draws"] = len(exact)
        if len(exact) >= heldout.MIN_DRAWS:
            out["heldout"] = heldout.check_at(post, y, exact, seed=seed)
    if out["training_samples"] < RARE_BELOW:
        out["warning"] = (
            f"only {out['training_samples']:,} training samples at the observed y = {_show(out['y'])}: q(θ | y) "
            f"there is an extrapolation; raise --samples so that more simulations land near it"
        )
    return out


def exact_draws(held, y) -> np.ndarray | None:
    """The held-out draws (fitting space) whose y equals ``y``: exact draws from p(θ | y)."""
    if held is None:
        return None
    theta_u, ys = held
    rows = np.asarray(ys).reshape(len(theta_u), -1)
    hit = np.all(rows == np.asarray(y).reshape(1, -1), axis=1)
    return np.asarray(theta_u)[hit]


def format_summary(s: dict) -> str:
    """The printed block of ``summary``."""
    lines = [f"at the observed y = {_show(s['y'])} ({s['training_samples']:,} training samples):"]
    for p in s["parameters"]:
        lines.append(
            f"  {p['name']:>10}: mean {p['mean']:.4g}, sd {p['sd']:.3g}, 90% interval [{p['q05']:.4g}, {p['q95']:.4g}]"
        )
    h = s.get("heldout")
    if h:
        pit = ", ".join(f"{p['ks_pvalue']:.2f}{heldout.fails(p['ks_pvalue'])}" for p in h["pit"])
        lines.append(f"  {s['heldout_draws']:,} held-out exact draws at y: PIT p {pit}")
    return "\n".join(lines)


def figure(post, task, s: dict, path, held=None, seed: int = 0) -> Figure:
    """q(θ | y_o)'s marginal per parameter (a histogram of its draws; for one parameter its density)
    with the held-out exact draws at y_o where there are some."""
    y = np.asarray(s["y"], np.int64)
    y = int(y[0]) if post.spec.inputs == 1 else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RareObservationWarning)
        q = np.asarray(post.sample(jax.random.key(seed), y, DRAWS), np.float64).reshape(DRAWS, -1)
    exact = exact_draws(held, y)
    if exact is not None and len(exact):
        exact = np.asarray(post._from_fitting(np.asarray(exact, np.float32)), np.float64).reshape(len(exact), -1)
    dim = q.shape[1]
    fig = Figure(figsize=(4.5 * dim, 3.8))
    axes = fig.subplots(1, dim, squeeze=False)[0]
    for d, ax in enumerate(axes):
        lo, hi = np.quantile(q[:, d], [0.001, 0.999])
        bins = np.linspace(lo, hi, 60)
        ax.hist(q[:, d], bins=bins, density=True, histtype="step", lw=2, label="MDN q(θ | y)")
        if dim == 1:
            grid = np.linspace(lo, hi, 400)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RareObservationWarning)
                ax.plot(grid, np.exp(np.asarray(post.log_prob(grid, y), np.float64)), "--", lw=1.5, label="MDN density")
            if task.has_exact_posterior:
                ax.plot(grid, task.exact_posterior(y).pdf(grid), lw=1.5, label=task.reference_label)
        if exact is not None and len(exact):
            ax.hist(exact[:, d], bins=bins, density=True, alpha=0.35, label=f"exact draws ({len(exact)})")
        ax.set(xlabel=s["parameters"][d]["name"], ylabel="density")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{task.name}: q(θ | y = {_show(s['y'])})   ({s['training_samples']:,} training samples)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return fig


def _show(y) -> str:
    return str(y[0]) if len(y) == 1 else str(list(y))

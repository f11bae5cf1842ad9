"""Calibration of a trained posterior over fresh draws from the prior predictive.

    python -m mdnjax.calibrate RUN_DIR [--draws 4000] [--samples-per-draw 99] [--seed 1]

For M fresh pairs (θ*, y*) ~ p(θ) p(y | θ):

* **simulation-based calibration (SBC)**: the rank of θ* among L draws from q(θ | y*) is uniform
  on {0, …, L} when q is the true posterior;
* **expected coverage** of central credible intervals: the central α-interval of q(θ | y*)
  contains θ* iff |F_q(θ* | y*) − 1/2| ≤ α/2, with F_q the mixture's CDF in closed form, so the
  coverage at every level α comes from one vectorized CDF evaluation per draw.

Everything is vectorized over the M draws (thousands of draws take seconds). Writes
``calibration.json``, ``sbc_ranks.png`` and ``coverage.png`` into the run directory and adds the
largest coverage error to ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mdnjax import mixture
from mdnjax.posterior import Posterior, atomic_write, load

LEVELS = np.round(np.linspace(0.05, 0.95, 19), 2)


def pit(posterior: Posterior, theta, y) -> np.ndarray:
    """F_q(θ | y) for paired arrays θ (M,) and y (M,): the probability integral transform."""
    logits, means, log_vars = posterior.mixture(np.asarray(y))  # (M, K) each
    t = jnp.asarray(theta, jnp.float32)
    if posterior.unconstrained:
        t = posterior.task.to_unconstrained(t, xp=jnp)
    return np.asarray(mixture.cdf(t, logits, means, log_vars), np.float64)


def coverage(u: np.ndarray, levels=LEVELS) -> np.ndarray:
    """Fraction of central α-intervals that hold θ*, from PIT values u (M,), for each α."""
    return np.array([np.mean(np.abs(u - 0.5) <= a / 2) for a in levels])


def sbc_ranks(posterior: Posterior, key, theta, y, num: int) -> np.ndarray:
    """Rank of each θ* among ``num`` draws from q(θ | y*): integers in [0, num], shape (M,)."""
    logits, means, log_vars = posterior.mixture(np.asarray(y))  # (M, K)
    keys = jax.random.split(key, logits.shape[0])
    draws = jax.vmap(lambda k, lg, m, lv: mixture.sample(k, lg, m, lv, num))(keys, logits, means, log_vars)
    t = jnp.asarray(theta, jnp.float32)
    if posterior.unconstrained:  # ranks are invariant under the increasing map u(θ)
        t = posterior.task.to_unconstrained(t, xp=jnp)
    return np.asarray(jnp.sum(draws < t[:, None], axis=1))


def run(posterior: Posterior, draws: int = 4000, per_draw: int = 99, seed: int = 1) -> dict:
    """Fresh prior-predictive draws → SBC ranks, coverage curve, and the exact posterior's coverage."""
    task = posterior.task
    theta, y = task.simulate(np.random.default_rng(seed), draws)
    u = pit(posterior, theta, y)
    ranks = sbc_ranks(posterior, jax.random.key(seed), theta, y, per_draw)
    exact_u = task.posterior_cdf(theta.astype(np.float64), y)
    cov = coverage(u)
    exact_cov = coverage(exact_u)
    se = np.sqrt(LEVELS * (1 - LEVELS) / len(u))
    hist = np.bincount(ranks, minlength=per_draw + 1)
    return {
        "draws": int(len(u)),
        "samples_per_draw": per_draw,
        "levels": LEVELS.tolist(),
        "coverage": cov.tolist(),
        "coverage_exact_posterior": exact_cov.tolist(),
        "coverage_standard_error": se.tolist(),
        "max_coverage_error": float(np.max(np.abs(cov - LEVELS))),
        "max_coverage_error_exact_posterior": float(np.max(np.abs(exact_cov - LEVELS))),
        "rank_counts": hist.tolist(),
        "rank_chi2_pvalue": _uniform_pvalue(ranks, per_draw),
    }


def _uniform_pvalue(ranks: np.ndarray, per_draw: int, bins: int = 20) -> float:
    from scipy import stats

    counts = np.histogram(ranks, bins=bins, range=(-0.5, per_draw + 0.5))[0]
    return float(stats.chisquare(counts).pvalue)


def plot(result: dict, out: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    from mdnjax import plots  # noqa: F401  (sets the Agg backend)

    counts = np.asarray(result["rank_counts"])
    bins = 20
    L = result["samples_per_draw"]
    grouped = np.histogram(np.repeat(np.arange(L + 1), counts), bins=bins, range=(-0.5, L + 0.5))[0]
    expected = counts.sum() / bins
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(np.arange(bins), grouped, width=0.9, label="MDN")
    band = 2 * np.sqrt(expected * (1 - 1 / bins))
    ax.axhspan(expected - band, expected + band, color="gray", alpha=0.3, label="uniform ± 2 sd")
    ax.set(xlabel=f"rank of θ* among {L} posterior draws (20 bins)", ylabel="count", title=f"{title}: SBC ranks")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sbc_ranks.png", dpi=90)
    plt.close(fig)

    levels = np.asarray(result["levels"])
    se = np.asarray(result["coverage_standard_error"])
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.fill_between(levels, levels - 2 * se, levels + 2 * se, color="gray", alpha=0.3, label="nominal ± 2 se")
    ax.plot(levels, result["coverage"], "o-", label="MDN")
    ax.plot(levels, result["coverage_exact_posterior"], "x--", label="exact posterior")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="credible level α", ylabel="empirical coverage", title=f"{title}: expected coverage")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mdnjax.calibrate", description="Calibrate a trained posterior.")
    p.add_argument("run_dir")
    p.add_argument("--draws", type=int, default=4000, help="fresh prior-predictive draws")
    p.add_argument("--samples-per-draw", type=int, default=99, help="posterior draws per SBC rank")
    p.add_argument("--seed", type=int, default=1, help="seed of the fresh draws (not the training seed)")
    args = p.parse_args(argv)
    try:
        if args.draws < 10 or args.samples_per_draw < 1:
            raise ValueError("--draws must be >= 10 and --samples-per-draw >= 1")
        post = load(args.run_dir)
    except ValueError as err:
        print(f"mdnjax.calibrate: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.run_dir)
    result = run(post, args.draws, args.samples_per_draw, args.seed)
    atomic_write(out / "calibration.json", json.dumps(result, indent=2).encode())
    plot(result, out, f"{post.config.prior}, K={post.config.components}")
    metrics_path = out / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        metrics["calibration"] = {k: result[k] for k in ("draws", "max_coverage_error", "rank_chi2_pvalue")}
        atomic_write(metrics_path, json.dumps(metrics, indent=2).encode())
    print(
        f"{result['draws']} draws: largest coverage error {result['max_coverage_error']:.4f} "
        f"(exact posterior: {result['max_coverage_error_exact_posterior']:.4f}), "
        f"SBC rank uniformity p = {result['rank_chi2_pvalue']:.3f}"
    )
    print(f"wrote {out}/calibration.json, sbc_ranks.png, coverage.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How many simulations truncated rounds put on the beta task's y_o = 95, and what KL a mixture
fitted to that many exact draws can reach: the arithmetic behind the KL ≤ 0.002 target.

Three numbers, each an exact computation or a direct fit, no training:

* ``draws_at_y_o``: the expected number of simulations at y_o when every round after the first
  draws from the prior truncated to the exact posterior's (1 − ε)-region (the best region rounds
  can find), against drawing the same budget from the posterior itself (quadrature).
* ``mixture_floor``: min over K-component Gaussian mixtures in the fitting (logit) space of
  KL(p‖q) to the exact Beta(97, 10) posterior (L-BFGS on a grid): the family's own limit.
* ``estimation_kl``: the asymptotic KL of a maximum-likelihood fit of the K = 8 mixture's
  3K − 1 = 23 numbers to N exact draws, (3K − 1) / (2N).

    python benchmarks/rounds_limit.py            # prints, and writes results/rounds_limit.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import integrate, optimize, stats
from scipy.special import logsumexp

RESULTS = Path(__file__).parent / "results"
TRIALS, Y_O, PRIOR, EPSILON = 100, 95, (2.0, 5.0), 1e-4


def draws_at_y_o(budget: int, rounds: int) -> dict:
    post = stats.beta(PRIOR[0] + Y_O, PRIOR[1] + TRIALS - Y_O)
    prior = stats.beta(*PRIOR)
    lo, hi = post.ppf(EPSILON / 2), post.ppf(1 - EPSILON / 2)
    mass = prior.cdf(hi) - prior.cdf(lo)
    at_y = lambda t: stats.binom.pmf(Y_O, TRIALS, t)  # noqa: E731
    rate_truncated = integrate.quad(lambda t: prior.pdf(t) * at_y(t), lo, hi)[0] / mass
    rate_prior = integrate.quad(lambda t: prior.pdf(t) * at_y(t), 0, 1)[0]
    rate_posterior = integrate.quad(lambda t: post.pdf(t) * at_y(t), 0, 1)[0]
    per_round = budget // rounds
    return {
        "region": [lo, hi],
        "region_prior_mass": mass,
        "rate_prior": rate_prior,
        "rate_truncated_prior": rate_truncated,
        "rate_posterior": rate_posterior,
        "expected_at_y_o": per_round * rate_prior + (budget - per_round) * rate_truncated,
        "expected_at_y_o_from_the_posterior": budget * rate_posterior,
    }


def mixture_floor(components: int, starts: int = 4) -> float:
    post = stats.beta(PRIOR[0] + Y_O, PRIOR[1] + TRIALS - Y_O)
    u = np.linspace(-1.0, 8.0, 40_001)
    t = 1 / (1 + np.exp(-u))
    p = post.pdf(t) * t * (1 - t)
    p /= np.trapezoid(p, u)
    entropy = np.trapezoid(p * np.log(np.maximum(p, 1e-300)), u)
    k = components

    def kl(x):
        logw = x[:k] - logsumexp(x[:k])
        logq = logsumexp(logw + stats.norm.logpdf(u[:, None], x[k : 2 * k], np.exp(x[2 * k :])), axis=1)
        return entropy - np.trapezoid(p * logq, u)

    best = np.inf
    for seed in range(starts):
        rng = np.random.default_rng(seed)
        x0 = np.concatenate([np.zeros(k), 2.27 + 0.3 * rng.normal(size=k), np.full(k, np.log(0.3))])
        best = min(best, optimize.minimize(kl, x0, method="L-BFGS-B", options={"maxiter": 5000}).fun)
    return float(best)


def main() -> None:
    out = {
        "draws_at_y_o": {f"{b}/R{r}": draws_at_y_o(b, r) for b in (10**6, 3 * 10**6) for r in (4, 8)},
        "mixture_floor": {str(k): mixture_floor(k) for k in (1, 2, 3)},
        "estimation_kl_k8": {str(n): 23 / (2 * n) for n in (1_000, 2_000, 6_000, 20_000)},
    }
    for key, row in out["draws_at_y_o"].items():
        print(
            f"{key}: region {row['region'][0]:.3f}-{row['region'][1]:.3f} (prior mass {row['region_prior_mass']:.4f}), "
            f"P(y_o) under the truncated prior {row['rate_truncated_prior']:.4f}, expected draws at y_o "
            f"{row['expected_at_y_o']:,.0f} (from the posterior: {row['expected_at_y_o_from_the_posterior']:,.0f})"
        )
    print("best KL of a K-component mixture in the logit space:", out["mixture_floor"])
    print("asymptotic KL of a K = 8 fit to N exact draws:", out["estimation_kl_k8"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rounds_limit.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Conjugate models with closed-form posteriors: the notebook's two tasks and a Beta mixture.

* ``BetaBinomial``:  θ ~ Beta(α, β),        y | θ ~ Binomial(n, θ);  θ | y ~ Beta(α + y, β + n − y)
* ``GammaPoisson``:  θ ~ Gamma(α, rate β),  y | θ ~ Poisson(n·θ);    θ | y ~ Gamma(α + y, rate β + n)
* ``BetaMixtureBinomial``: θ ~ Σ_j w_j Beta(α_j, β_j), y | θ ~ Binomial(n, θ); the posterior is
  again a Beta mixture, component j re-weighted by its Beta-Binomial marginal likelihood.

Simulation draws from a NumPy ``Generator`` passed in explicitly (on CPU its Beta, Binomial and
Poisson samplers are several times faster than ``jax.random``'s), in float64.

Example:
    >>> import numpy as np
    >>> task = BetaBinomial()
    >>> theta, y = task.simulate(np.random.default_rng(0), 1000)
    >>> theta.dtype, y.shape, round(float(task.exact_posterior(30).mean()), 3)
    (dtype('float64'), (1000,), 0.299)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from mdnjax.task import Bound, Task

PARAM_MAX = 1e6  # prior parameters beyond this make the samplers overflow: refused


def _positive(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(value) and 0 < value <= PARAM_MAX):
        raise ValueError(f"{name} must be a finite number in (0, {PARAM_MAX:g}], got {value:g}")
    return value


def _trials(value) -> int:
    try:
        ok = float(value) == int(value)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or int(value) < 1:
        raise ValueError(f"trials must be an integer >= 1, got {value!r}")
    return int(value)


class BetaBinomial(Task):
    """θ ~ Beta(α, β), y | θ ~ Binomial(n, θ).

    Args:
        alpha, beta: prior parameters (> 0).
        trials: n (≥ 1).
    """

    y_shape = ()  # one count per simulation

    name = "beta"
    support = (Bound(0.0, 1.0),)
    reference_label = "exact Beta posterior"
    recommended = {"notebook": {"lr": 1e-3}}

    def __init__(self, alpha: float = 2.0, beta: float = 5.0, trials: int = 100):
        self.alpha, self.beta = _positive("alpha", alpha), _positive("beta", beta)
        self.trials = _trials(trials)
        self.y_range = (0.0, float(self.trials))
        notebook = self.trials == 100
        self.plot_y = (10, 30, 60, 80, 90) if notebook else None

    def simulate(self, rng: np.random.Generator, n: int):
        theta = self.sample_prior(rng, n)
        return theta, self.simulate_at(rng, theta)

    def sample_prior(self, rng: np.random.Generator, n: int):
        return rng.beta(self.alpha, self.beta, size=n)

    def simulate_at(self, rng: np.random.Generator, theta):
        return rng.binomial(self.trials, theta)

    def log_prior(self, theta):
        return stats.beta.logpdf(theta, self.alpha, self.beta)

    def log_likelihood(self, theta, y):
        return stats.binom.logpmf(y, self.trials, theta)

    def exact_posterior(self, y):
        return stats.beta(self.alpha + y, self.beta + self.trials - y)

    def posterior_cdf(self, theta, y):
        y = np.asarray(y, np.float64)
        return stats.beta.cdf(np.asarray(theta, np.float64), self.alpha + y, self.beta + self.trials - y)

    def input_embedding(self, y_values, counts):
        return 0.0, float(self.trials)  # the notebook's x = y / n

    def describe(self):
        return {"name": self.name, "alpha": self.alpha, "beta": self.beta, "trials": self.trials}


class GammaPoisson(Task):
    """θ ~ Gamma(α, rate β), y | θ ~ Poisson(n·θ).

    Args:
        alpha: shape (> 0).
        beta: rate (> 0).
        trials: the exposure n (≥ 1).
    """

    y_shape = ()  # one count per simulation

    name = "gamma"
    support = (Bound(0.0, math.inf),)
    reference_label = "exact Gamma posterior"
    recommended = {"notebook": {"lr": 1e-2}}

    def __init__(self, alpha: float = 2.0, beta: float = 3.0, trials: int = 100):
        self.alpha, self.beta = _positive("alpha", alpha), _positive("beta", beta)
        self.trials = _trials(trials)
        self.y_range = (0.0, math.inf)
        self.plot_y = (10, 30, 50, 70, 90) if self.trials == 100 else None

    def simulate(self, rng: np.random.Generator, n: int):
        theta = self.sample_prior(rng, n)
        return theta, self.simulate_at(rng, theta)

    def sample_prior(self, rng: np.random.Generator, n: int):
        return rng.gamma(self.alpha, 1.0 / self.beta, size=n)

    def simulate_at(self, rng: np.random.Generator, theta):
        return rng.poisson(self.trials * np.asarray(theta))

    def log_prior(self, theta):
        return stats.gamma.logpdf(theta, self.alpha, scale=1.0 / self.beta)

    def log_likelihood(self, theta, y):
        return stats.poisson.logpmf(y, self.trials * np.asarray(theta))

    def exact_posterior(self, y):
        return stats.gamma(self.alpha + y, scale=1.0 / (self.beta + self.trials))

    def posterior_cdf(self, theta, y):
        y = np.asarray(y, np.float64)
        return stats.gamma.cdf(np.asarray(theta, np.float64), self.alpha + y, scale=1.0 / (self.beta + self.trials))

    def input_embedding(self, y_values, counts):
        return 0.0, float(self.trials)

    def describe(self):
        return {"name": self.name, "alpha": self.alpha, "beta": self.beta, "trials": self.trials}


class BetaMixture:
    """A mixture of Beta distributions with the ``scipy.stats`` methods the package uses."""

    def __init__(self, weights, alphas, betas):
        self.weights = np.asarray(weights, np.float64)
        self.parts = [stats.beta(a, b) for a, b in zip(alphas, betas)]

    def _mix(self, method, x):
        return sum(w * getattr(p, method)(x) for w, p in zip(self.weights, self.parts))

    def pdf(self, x):
        return self._mix("pdf", x)

    def logpdf(self, x):
        with np.errstate(divide="ignore"):
            logs = np.stack([np.log(w) + p.logpdf(x) for w, p in zip(self.weights, self.parts)])
        return special.logsumexp(logs, axis=0)

    def cdf(self, x):
        return self._mix("cdf", x)

    def mean(self):
        return float(sum(w * p.mean() for w, p in zip(self.weights, self.parts)))

    def var(self):
        m = self.mean()
        return float(sum(w * (p.var() + (p.mean() - m) ** 2) for w, p in zip(self.weights, self.parts)))

    def std(self):
        return float(np.sqrt(self.var()))

    def ppf(self, q):  # a lower bound of the q-quantile: enough to bound quadrature grids
        return min(p.ppf(q) for w, p in zip(self.weights, self.parts) if w > 1e-300)

    def isf(self, q):  # an upper bound of the (1 − q)-quantile
        return max(p.isf(q) for w, p in zip(self.weights, self.parts) if w > 1e-300)


DEFAULT_MIXTURE = ((0.5, 10.0, 30.0), (0.5, 30.0, 10.0))  # (weight, α, β): bimodal posteriors for y ≈ 47–53


class BetaMixtureBinomial(Task):
    """θ ~ Σ_j w_j Beta(α_j, β_j), y | θ ~ Binomial(n, θ).

    Args:
        components: ((w_1, α_1, β_1), …), weights summing to 1.
        trials: n.
    """

    y_shape = ()  # one count per simulation

    name = "beta-mixture"
    support = (Bound(0.0, 1.0),)
    reference_label = "exact Beta-mixture posterior"
    # the bimodal middle y are rare under this prior: equal weight per y serves them better
    recommended = {"fast": {"lr": 3e-3, "weighting": "per-y"}, "notebook": {"lr": 1e-3}}

    def __init__(self, components=DEFAULT_MIXTURE, trials: int = 100):
        components = tuple(tuple(c) for c in components)
        if not components or any(len(c) != 3 for c in components):
            raise ValueError("the beta-mixture prior needs (weight, alpha, beta) for each of its components")
        self.components = tuple(
            (_positive("mixture weight", w), _positive("mixture alpha", a), _positive("mixture beta", b))
            for w, a, b in components
        )
        if abs(sum(c[0] for c in self.components) - 1.0) > 1e-6:
            raise ValueError("mixture weights must sum to 1")
        self.trials = _trials(trials)
        self.y_range = (0.0, float(self.trials))
        mid, step = self.trials // 2, max(1, round(0.03 * self.trials))
        self.plot_y = tuple(sorted({int(np.clip(mid + k * step, 0, self.trials)) for k in (-2, -1, 0, 1, 2)}))

    def _arrays(self):
        return tuple(np.array(c, np.float64) for c in zip(*self.components))

    def simulate(self, rng: np.random.Generator, n: int):
        theta = self.sample_prior(rng, n)
        return theta, self.simulate_at(rng, theta)

    def sample_prior(self, rng: np.random.Generator, n: int):
        w, a, b = self._arrays()
        comp = rng.choice(len(w), size=n, p=w / w.sum())
        return rng.beta(a[comp], b[comp])

    def simulate_at(self, rng: np.random.Generator, theta):
        return rng.binomial(self.trials, theta)

    def posterior_weights(self, y) -> np.ndarray:
        """Posterior component weights at y, shape y.shape + (J,)."""
        w, a, b = self._arrays()
        y = np.asarray(y, np.float64)[..., None]
        log_w = np.log(w) + special.betaln(a + y, b + self.trials - y) - special.betaln(a, b)
        return np.exp(log_w - special.logsumexp(log_w, axis=-1, keepdims=True))

    def log_prior(self, theta):
        return self.prior().logpdf(theta)

    def prior(self) -> BetaMixture:
        w, a, b = self._arrays()
        return BetaMixture(w, a, b)

    def log_likelihood(self, theta, y):
        return stats.binom.logpmf(y, self.trials, theta)

    def exact_posterior(self, y):
        _, a, b = self._arrays()
        return BetaMixture(self.posterior_weights(y), a + y, b + self.trials - y)

    def posterior_cdf(self, theta, y):
        _, a, b = self._arrays()
        theta, y = np.asarray(theta, np.float64), np.asarray(y, np.float64)
        pw = self.posterior_weights(y)  # (..., J)
        cdfs = stats.beta.cdf(theta[..., None], a + y[..., None], b + self.trials - y[..., None])
        return np.sum(pw * cdfs, axis=-1)

    def input_embedding(self, y_values, counts):
        return 0.0, float(self.trials)

    def describe(self):
        return {"name": self.name, "components": [list(c) for c in self.components], "trials": self.trials}

"""Conjugate models: prior, simulator and exact posterior for any observed y.

Two tasks follow the notebook:

* ``beta``:  θ ~ Beta(α, β),        y | θ ~ Binomial(n, θ);   θ | y ~ Beta(α + y, β + n − y)
* ``gamma``: θ ~ Gamma(α, rate β),  y | θ ~ Poisson(n·θ);     θ | y ~ Gamma(α + y, rate β + n)

Simulation draws from a NumPy ``Generator`` passed in explicitly: on CPU its Beta, Binomial
and Poisson samplers are several times faster than ``jax.random``'s, and simulation happens once,
outside the compiled training step.

Example:
    >>> import numpy as np
    >>> task = make_task("beta")
    >>> theta, y = task.simulate(np.random.default_rng(0), 1000)
    >>> float(task.posterior(30).mean())  # doctest: +ELLIPSIS
    0.299...
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

PRIORS = ("beta", "gamma", "beta-mixture")
DEFAULT_MIXTURE = ((0.5, 10.0, 30.0), (0.5, 30.0, 10.0))  # (weight, α, β): bimodal posteriors for y ≈ 47–53


@dataclasses.dataclass(frozen=True)
class Task:
    """A conjugate model with a scalar parameter θ and an integer observation y.

    Attributes:
        name: ``"beta"`` or ``"gamma"``.
        alpha: first prior parameter (α > 0).
        beta: second prior parameter (β > 0; a rate for ``gamma``).
        trials: n, the number of Binomial trials or the Poisson exposure (n ≥ 1).
    """

    name: str
    alpha: float
    beta: float
    trials: int

    def __post_init__(self):
        if self.name not in ("beta", "gamma"):
            raise ValueError(f"unknown prior {self.name!r}: choose one of {', '.join(PRIORS)}")
        for field in ("alpha", "beta"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{field} must be a finite number > 0, got {value}")
        if self.trials < 1:
            raise ValueError(f"--trials must be >= 1, got {self.trials}")

    @property
    def y_max(self) -> float:
        """Largest possible observation (``inf`` for the Poisson model)."""
        return float(self.trials) if self.name == "beta" else math.inf

    @property
    def support(self) -> tuple[float, float]:
        """The support of θ."""
        return (0.0, 1.0) if self.name == "beta" else (0.0, math.inf)

    def prior(self):
        """The prior of θ as a frozen ``scipy.stats`` distribution."""
        if self.name == "beta":
            return stats.beta(self.alpha, self.beta)
        return stats.gamma(self.alpha, scale=1.0 / self.beta)

    def simulate(self, rng: np.random.Generator, num: int) -> tuple[np.ndarray, np.ndarray]:
        """Draws ``num`` pairs (θ, y) from the joint model.

        Args:
            rng: the NumPy random generator to draw from.
            num: number of simulations.

        Returns:
            theta: float32 array, shape (num,).
            y: int32 array, shape (num,).
        """
        if self.name == "beta":
            theta = rng.beta(self.alpha, self.beta, size=num)
            y = rng.binomial(self.trials, theta)
        else:
            theta = rng.gamma(self.alpha, 1.0 / self.beta, size=num)
            y = rng.poisson(self.trials * theta)
        return theta.astype(np.float32), y.astype(np.int32)

    def posterior(self, y: int):
        """The exact posterior p(θ | y) as a frozen ``scipy.stats`` distribution."""
        self.check_y(y)
        if self.name == "beta":
            return stats.beta(self.alpha + y, self.beta + self.trials - y)
        return stats.gamma(self.alpha + y, scale=1.0 / (self.beta + self.trials))

    def posterior_cdf(self, theta, y) -> np.ndarray:
        """Exact posterior CDF F(θ | y), vectorized over paired arrays θ and y."""
        theta, y = np.asarray(theta, np.float64), np.asarray(y, np.float64)
        if self.name == "beta":
            return stats.beta.cdf(theta, self.alpha + y, self.beta + self.trials - y)
        return stats.gamma.cdf(theta, self.alpha + y, scale=1.0 / (self.beta + self.trials))

    def check_y(self, y) -> None:
        """Raises ``ValueError`` unless y is a possible observation."""
        if not (float(y) == int(y) and 0 <= int(y) <= self.y_max):
            upper = f"{self.trials}" if self.name == "beta" else "infinity"
            raise ValueError(f"y = {y} is outside the possible range 0..{upper} of the {self.name} task")

    def to_unconstrained(self, theta, xp=np):
        """u = logit(θ) for ``beta``, log(θ) for ``gamma``: a bijection from θ's support onto ℝ."""
        theta = xp.asarray(theta)
        if self.name == "beta":
            return xp.log(theta) - xp.log1p(-theta)
        return xp.log(theta)

    def from_unconstrained(self, u, xp=np):
        """The inverse of ``to_unconstrained``."""
        u = xp.asarray(u)
        if self.name == "beta":
            return 1.0 / (1.0 + xp.exp(-u))
        return xp.exp(u)

    def log_abs_det_jacobian(self, theta, xp=np):
        """log |du/dθ|: −log θ(1−θ) for ``beta``, −log θ for ``gamma``."""
        theta = xp.asarray(theta)
        if self.name == "beta":
            return -xp.log(theta) - xp.log1p(-theta)
        return -xp.log(theta)

    def default_plot_y(self) -> tuple[int, ...]:
        """The observations the notebook plots."""
        return (10, 30, 60, 80, 90) if self.name == "beta" else (10, 30, 50, 70, 90)


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
        from scipy import special

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


@dataclasses.dataclass(frozen=True)
class BetaMixtureTask:
    """θ ~ Σ_j w_j Beta(α_j, β_j), y | θ ~ Binomial(n, θ).

    The posterior is again a mixture of Betas: component j becomes Beta(α_j + y, β_j + n − y),
    its weight multiplied by its Beta-Binomial marginal likelihood B(α_j + y, β_j + n − y) / B(α_j, β_j).

    Attributes:
        components: ((w_1, α_1, β_1), …), weights summing to 1.
        trials: n.
    """

    components: tuple[tuple[float, float, float], ...] = DEFAULT_MIXTURE
    trials: int = 100
    name: str = "beta-mixture"

    def __post_init__(self):
        if not self.components:
            raise ValueError("the beta-mixture prior needs at least one component")
        for w, a, b in self.components:
            if not (math.isfinite(w) and w > 0):
                raise ValueError(f"--mix-weights must be finite numbers > 0, got {w}")
            if not (math.isfinite(a) and a > 0 and math.isfinite(b) and b > 0):
                raise ValueError(f"--mix-alpha and --mix-beta must be finite numbers > 0, got {a}, {b}")
        if abs(sum(c[0] for c in self.components) - 1.0) > 1e-6:
            raise ValueError("--mix-weights must sum to 1")
        if self.trials < 1:
            raise ValueError(f"--trials must be >= 1, got {self.trials}")

    y_max = property(lambda self: float(self.trials))
    support = (0.0, 1.0)
    to_unconstrained = Task.to_unconstrained
    from_unconstrained = Task.from_unconstrained
    log_abs_det_jacobian = Task.log_abs_det_jacobian
    check_y = Task.check_y

    @property
    def _arrays(self):
        w, a, b = (np.array(c, np.float64) for c in zip(*self.components))
        return w, a, b

    def prior(self) -> BetaMixture:
        w, a, b = self._arrays
        return BetaMixture(w, a, b)

    def simulate(self, rng: np.random.Generator, num: int) -> tuple[np.ndarray, np.ndarray]:
        """Draws ``num`` pairs (θ, y); θ float32 (num,), y int32 (num,)."""
        w, a, b = self._arrays
        comp = rng.choice(len(w), size=num, p=w / w.sum())
        theta = rng.beta(a[comp], b[comp])
        y = rng.binomial(self.trials, theta)
        return theta.astype(np.float32), y.astype(np.int32)

    def posterior_weights(self, y) -> np.ndarray:
        """Posterior component weights at y, shape (J,) (or y.shape + (J,))."""
        from scipy import special

        w, a, b = self._arrays
        y = np.asarray(y, np.float64)[..., None]
        log_w = np.log(w) + special.betaln(a + y, b + self.trials - y) - special.betaln(a, b)
        return np.exp(log_w - special.logsumexp(log_w, axis=-1, keepdims=True))

    def posterior(self, y: int) -> BetaMixture:
        """The exact posterior, a mixture of Betas."""
        self.check_y(y)
        _, a, b = self._arrays
        return BetaMixture(self.posterior_weights(y), a + y, b + self.trials - y)

    def posterior_cdf(self, theta, y) -> np.ndarray:
        """Exact posterior CDF, vectorized over paired θ and y."""
        _, a, b = self._arrays
        theta, y = np.asarray(theta, np.float64), np.asarray(y, np.float64)
        pw = self.posterior_weights(y)  # (..., J)
        cdfs = stats.beta.cdf(theta[..., None], a + y[..., None], b + self.trials - y[..., None])
        return np.sum(pw * cdfs, axis=-1)

    def default_plot_y(self) -> tuple[int, ...]:
        """Observations around n/2, where the default prior's posteriors are bimodal."""
        mid = self.trials // 2
        step = max(1, round(0.03 * self.trials))
        return tuple(int(np.clip(mid + k * step, 0, self.trials)) for k in (-2, -1, 0, 1, 2))


def make_task(name: str, alpha: float | None = None, beta: float | None = None, trials: int = 100) -> Task:
    """Builds a task with the notebook's prior parameters unless given.

    Args:
        name: ``"beta"`` or ``"gamma"``.
        alpha: prior α (default 2).
        beta: prior β (default 5 for ``beta``, rate 3 for ``gamma``).
        trials: n (default 100).

    Returns:
        The validated ``Task``.
    """
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}: choose one of {', '.join(PRIORS)}")
    if name == "beta-mixture":
        return BetaMixtureTask(trials=int(trials))
    default_beta = 5.0 if name == "beta" else 3.0
    return Task(
        name,
        2.0 if alpha is None else float(alpha),
        default_beta if beta is None else float(beta),
        int(trials),
    )

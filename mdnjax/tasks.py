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

PRIORS = ("beta", "gamma")


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
        if self.name not in PRIORS:
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
    default_beta = 5.0 if name == "beta" else 3.0
    return Task(
        name,
        2.0 if alpha is None else float(alpha),
        default_beta if beta is None else float(beta),
        int(trials),
    )

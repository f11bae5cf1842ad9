"""Binomial counts through a logit link, two parameters, vector observations: a dose–response
bioassay and an A/B test.

* ``Bioassay`` (Racine et al. 1986, analysed in Gelman et al., *Bayesian Data Analysis*, §3.7):
  θ = (α, β), deaths_i ~ Binomial(5, logit⁻¹(α + β x_i)) at the log doses x = (−0.86, −0.30,
  −0.05, 0.73); y is the vector of the four death counts (6⁴ = 1,296 possible y). The book's prior
  is flat; here it is flat on the range of the book's grid, α ∈ (−5, 10), β ∈ (−10, 40), which
  makes it proper and leaves the posterior at the observed y = (0, 1, 3, 5) as the book's (its
  mass near the box's edges is negligible). The quantity of interest is LD50 = −α/β.
* ``ABTest``: θ = (logit p_A, logit p_B) with a correlated normal prior, y = (y_A, y_B) binomial
  counts; the question is P(p_B > p_A | y).

Both declare ``log_prior`` and ``log_likelihood`` (θ of shape (..., 2), y a length-M sequence),
so a grid reference (``mdnjax.reference.grid_posterior_2d``) checks the trained posterior, and
``summaries``: named scalar functions of θ (n, 2) reported under q and under the reference.

Example:
    >>> import numpy as np
    >>> theta, y = Bioassay().simulate(np.random.default_rng(0), 4)
    >>> theta.shape, y.shape
    ((4, 2), (4, 4))
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from mdnjax.task import Bound, Probability, Task
from mdnjax.tasks.conjugate import _positive, _trials


def _binomial_log_likelihood(p_logit, y, trials) -> np.ndarray:
    """Σ_i log Binomial(y_i | n_i, logit⁻¹(η_i)) with η (..., M), stable in the logit."""
    y = np.asarray(y, np.float64)
    trials = np.asarray(trials, np.float64)
    log_choose = special.gammaln(trials + 1) - special.gammaln(y + 1) - special.gammaln(trials - y + 1)
    # log p = −log(1 + e^{−η}), log(1 − p) = −log(1 + e^{η})
    return np.sum(log_choose - y * np.logaddexp(0.0, -p_logit) - (trials - y) * np.logaddexp(0.0, p_logit), axis=-1)


class Bioassay(Task):
    """The bioassay of BDA §3.7: θ = (α, β), four binomial death counts.

    Args:
        doses: log doses x_i.
        animals: animals per dose.
        observed: the reported y (the book's deaths).
    """

    name = "bioassay"
    support = (Bound(-5.0, 10.0), Bound(-10.0, 40.0))
    parameter_names = ("alpha", "beta")
    reference_label = "grid reference"
    # a wider backbone: 1,053 distinct y of 4 counts to map to 8 full-covariance components
    # (default recipe, 10^6 draws: KL at the observed y 0.0104 with 64-wide layers, 0.0074 with 128)
    recommended = {"fast": {"hidden": (128, 128, 128)}}

    def __init__(self, doses=(-0.86, -0.30, -0.05, 0.73), animals: int = 5, observed=(0, 1, 3, 5)):
        self.doses = np.asarray(doses, np.float64).reshape(-1)
        if self.doses.size < 1 or not np.all(np.isfinite(self.doses)):
            raise ValueError(f"doses must be finite numbers, got {doses!r}")
        self.animals = _trials(animals)
        observed = tuple(int(v) for v in observed)
        if len(observed) != self.doses.size or not all(0 <= v <= self.animals for v in observed):
            raise ValueError(f"observed must be {self.doses.size} counts in 0..{self.animals}, got {observed!r}")
        self.observed = observed
        self.y_shape = (self.doses.size,)  # one death count per dose
        self.y_range = (0.0, float(self.animals))
        self.plot_y = (observed,)
        self.summaries = {"LD50": lambda t: -t[..., 0] / t[..., 1]}

    def simulate(self, rng: np.random.Generator, n: int):
        a = rng.uniform(self.support[0].low, self.support[0].high, n)
        b = rng.uniform(self.support[1].low, self.support[1].high, n)
        p = special.expit(a[:, None] + b[:, None] * self.doses[None, :])
        return np.stack([a, b], axis=1), rng.binomial(self.animals, p)

    def log_prior(self, theta):
        theta = np.asarray(theta, np.float64)
        inside = np.all([b.contains(theta[..., d]) for d, b in enumerate(self.support)], axis=0)
        log_area = sum(math.log(b.high - b.low) for b in self.support)
        return np.where(inside, -log_area, -np.inf)

    def log_likelihood(self, theta, y):
        theta = np.asarray(theta, np.float64)
        eta = theta[..., 0:1] + theta[..., 1:2] * self.doses
        return _binomial_log_likelihood(eta, y, self.animals)

    def input_embedding(self, y_values, counts):
        return tuple(0.0 for _ in self.doses), tuple(float(self.animals) for _ in self.doses)  # y / n

    def describe(self) -> dict:
        return {
            "name": self.name,
            "doses": self.doses.tolist(),
            "animals": self.animals,
            "observed": list(self.observed),
        }


class ABTest(Task):
    """θ = (logit p_A, logit p_B) ~ N((m, m), s² [[1, ρ], [ρ, 1]]); y = (y_A, y_B), y_A ~
    Binomial(n_A, p_A), y_B ~ Binomial(n_B, p_B).

    Args:
        mean, sd, rho: the prior of each logit and their correlation.
        trials: (n_A, n_B).
        observed: the reported y.
    """

    name = "abtest"
    y_shape = (2,)  # (y_A, y_B)
    support = (Bound(), Bound())
    parameter_names = ("logit_pA", "logit_pB")
    reference_label = "grid reference"
    # a near-Gaussian posterior in the logits: 1,000 epochs reach KL 0.003 at the observed y (10^6 draws)
    recommended = {"fast": {"epochs": 1000}}

    def __init__(self, mean: float = -1.0, sd: float = 1.0, rho: float = 0.5, trials=(100, 100), observed=(12, 20)):
        try:
            self.mean = float(mean)
        except (TypeError, ValueError):
            raise ValueError(f"mean must be a number, got {mean!r}") from None
        if not math.isfinite(self.mean) or abs(self.mean) > 50:
            raise ValueError(f"mean must be a finite number in [-50, 50], got {mean!r}")
        self.sd = _positive("sd", sd)
        if self.sd > 20:
            raise ValueError(f"sd must be at most 20 (a logit's prior), got {sd!r}")
        try:
            self.rho = float(rho)
        except (TypeError, ValueError):
            raise ValueError(f"rho must be a number, got {rho!r}") from None
        if not -0.99 <= self.rho <= 0.99:
            raise ValueError(f"rho must lie in [-0.99, 0.99], got {rho!r}")
        if np.ndim(trials) == 0:
            trials = (trials, trials)
        self.trials = tuple(_trials(t) for t in trials)
        if len(self.trials) != 2:
            raise ValueError(f"trials must be (n_A, n_B), got {trials!r}")
        observed = tuple(int(v) for v in observed)
        if len(observed) != 2 or not all(0 <= v <= n for v, n in zip(observed, self.trials)):
            raise ValueError(
                f"observed must be (y_A, y_B) within the trials {self.trials}, got {observed!r} "
                "(set observed together with trials)"
            )
        self.observed = observed
        self.y_range = (0.0, float(max(self.trials)))
        self.plot_y = (observed,)
        self.summaries = {"P(pB > pA)": Probability(lambda t: (t[..., 1] > t[..., 0]).astype(np.float64))}

    def check_y(self, y) -> None:
        """Each count within its own arm's trials (a single number: within the larger arm's)."""
        values = np.ravel(np.asarray(y))
        if values.size == 2 and not all(0 <= v <= n for v, n in zip(values, self.trials)):
            raise ValueError(
                f"y = {[int(v) for v in values]} is impossible for the {self.name} task: (y_A, y_B) within the trials "
                f"{self.trials}"
            )
        super().check_y(y)

    @property
    def prior_cov(self) -> np.ndarray:
        return self.sd**2 * np.array([[1.0, self.rho], [self.rho, 1.0]])

    def simulate(self, rng: np.random.Generator, n: int):
        theta = rng.multivariate_normal([self.mean, self.mean], self.prior_cov, size=n)
        y = rng.binomial(np.array(self.trials)[None, :], special.expit(theta))
        return theta, y

    def log_prior(self, theta):
        return stats.multivariate_normal([self.mean, self.mean], self.prior_cov).logpdf(np.asarray(theta, np.float64))

    def log_likelihood(self, theta, y):
        return _binomial_log_likelihood(np.asarray(theta, np.float64), y, self.trials)

    def input_embedding(self, y_values, counts):
        return (0.0, 0.0), tuple(float(t) for t in self.trials)  # the observed rates

    def describe(self) -> dict:
        return {
            "name": self.name,
            "mean": self.mean,
            "sd": self.sd,
            "rho": self.rho,
            "trials": list(self.trials),
            "observed": list(self.observed),
        }

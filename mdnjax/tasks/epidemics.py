"""Epidemic final sizes: non-conjugate tasks whose likelihood is a recursion, not a formula.

* ``ReedFrost``: the chain-binomial epidemic. Each generation, every susceptible escapes each of
  the i current infectives independently with probability 1 − p, so S' = S − I', I' ~ Binomial(S,
  1 − (1 − p)^I); θ = p, y = the number of initial susceptibles ever infected.
* ``SIRFinalSize``: the general stochastic (SIR) epidemic with frequency-dependent infection; its
  final size depends on R0 = β/γ only, through the embedded jump chain: from (s, i) the next event
  is an infection with probability R0·s / (R0·s + N), else a recovery. θ = R0, y = the number of
  initial susceptibles ever infected. The default is the Abakaliki smallpox outbreak: 30 cases in a
  population of 120, i.e. one initial case and y = 29.

The final-size distributions are computed exactly (up to float64 rounding) by forward recursions
over the states (s, i), vectorized over many θ at once: every transition lowers s or, at equal s,
lowers i, so one pass in that order settles all the mass. The classical closed-form recursions
(Gontcharoff polynomials) cancel catastrophically in float64 near population 40–60; these sums
have only positive terms. The tests check both against exact rational arithmetic.

Example:
    >>> import numpy as np
    >>> task = ReedFrost(population=10, initial=1)
    >>> pmf = task.final_size_pmf(np.array([0.1, 0.3]))
    >>> pmf.shape, np.allclose(pmf.sum(axis=1), 1.0)
    ((2, 10), True)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from mdnjax.task import Bound, Task
from mdnjax.tasks.conjugate import _positive

CHUNK = 2048  # θ values per block of the vectorized recursions (bounds memory)


def _count(name: str, value, low: int) -> int:
    try:
        ok = float(value) == int(value)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class _FinalSize(Task):
    """Shared by the epidemic tasks: a cached final-size table and the log-likelihood from it."""

    y_shape = ()  # one count per simulation

    _cache: tuple | None = None

    def _set_population(self, population, initial) -> None:
        """Checks and stores N and the initial infectives; y ranges over the initial susceptibles."""
        self.population = _count("population", population, 2)
        self.initial = _count("initial", initial, 1)
        if self.initial >= self.population:
            raise ValueError(f"initial must be below population ({self.population}), got {self.initial}")
        self.susceptible = self.population - self.initial
        self.y_range = (0.0, float(self.susceptible))
        self._cache = None

    def final_size_pmf(self, theta) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def _table(self, theta: np.ndarray) -> np.ndarray:
        """log P(y | θ) for every y, (len(θ), S0 + 1); the last θ array's table is kept."""
        key = (theta.shape, hash(theta.tobytes()))
        if self._cache is None or self._cache[0] != key:
            blocks = [self.final_size_pmf(theta[i : i + CHUNK]) for i in range(0, theta.size, CHUNK)]
            pmf = np.concatenate(blocks) if blocks else np.zeros((0, self.susceptible + 1))
            with np.errstate(divide="ignore"):
                self._cache = (key, np.log(np.clip(pmf, 0.0, None)))
        return self._cache[1]

    def log_likelihood(self, theta, y):
        theta = np.asarray(theta, np.float64)
        flat = theta.reshape(-1)
        y = int(y)
        if not 0 <= y <= self.susceptible:
            return np.full(theta.shape, -np.inf)
        return self._table(flat)[:, y].reshape(theta.shape)


class ReedFrost(_FinalSize):
    """The Reed–Frost chain-binomial epidemic; θ = p ~ Beta(alpha, beta).

    Args:
        population: N, everyone (≥ 2).
        initial: infectives at the start (1 ≤ initial < N).
        alpha, beta: the Beta prior of the per-contact infection probability p.
    """

    name = "reed-frost"
    support = (Bound(0.0, 1.0),)
    reference_label = "exact posterior (final-size recursion)"

    def __init__(self, population: int = 50, initial: int = 1, alpha: float = 2.0, beta: float = 38.0):
        self._set_population(population, initial)
        self.alpha, self.beta = _positive("alpha", alpha), _positive("beta", beta)

    def simulate(self, rng: np.random.Generator, n: int):
        p = rng.beta(self.alpha, self.beta, size=n)
        s = np.full(n, self.susceptible, np.int64)
        i = np.full(n, self.initial, np.int64)
        active = np.arange(n)
        log_q = np.log1p(-p)
        while active.size:
            new = rng.binomial(s[active], -np.expm1(i[active] * log_q[active]))
            s[active] -= new
            i[active] = new
            active = active[new > 0]
        return p, self.susceptible - s

    def log_prior(self, theta):
        return stats.beta.logpdf(theta, self.alpha, self.beta)

    def final_size_pmf(self, theta) -> np.ndarray:
        """P(y | p) for y = 0..S0, shape (len(p), S0 + 1), by a forward pass over (s, i)."""
        p = np.asarray(theta, np.float64).reshape(-1)
        s0, n = self.susceptible, self.population
        log_q = np.log1p(-p)[:, None]  # (G, 1)
        mass = np.zeros((p.size, s0 + 1, n + 1))  # (G, s, i)
        mass[:, s0, self.initial] = 1.0
        final = np.zeros((p.size, s0 + 1))
        for s in range(s0, -1, -1):
            m = mass[:, s, 1 : n - s + 1]  # (G, I) mass at (s, i ≥ 1); i ≤ N − s
            if s == 0:
                final[:, s0] += m.sum(axis=1)
                continue
            i = np.arange(1, m.shape[1] + 1)[None, :]  # (1, I)
            log_escape = i * log_q  # (G, I): log (1 − p)^i
            log_infect = np.log(-np.expm1(log_escape))  # log(1 − (1 − p)^i)
            k = np.arange(s + 1)[None, None, :]  # new infections k = 0..s
            log_binom = (
                special.gammaln(s + 1)
                - special.gammaln(k + 1)
                - special.gammaln(s - k + 1)
                + k * log_infect[:, :, None]
                + (s - k) * log_escape[:, :, None]
            )  # (G, I, s + 1)
            flow = np.einsum("gi,gik->gk", m, np.exp(log_binom))  # (G, s + 1)
            final[:, s0 - s] += flow[:, 0]  # nobody infected: the epidemic is over
            ks = np.arange(1, s + 1)
            mass[:, s - ks, ks] += flow[:, 1:]
        return final

    def describe(self):
        return {
            "name": self.name,
            "population": self.population,
            "initial": self.initial,
            "alpha": self.alpha,
            "beta": self.beta,
        }


class SIRFinalSize(_FinalSize):
    """Final size of the general stochastic epidemic; θ = R0 ~ Gamma(shape, rate).

    Args:
        population: N (≥ 2); default 120 (Abakaliki).
        initial: infectives at the start; default 1.
        shape, rate: the Gamma prior of R0 (default mean 1.5, sd 1.06).
        observed: the observed y for reports and figures (default 29: 30 cases at Abakaliki).
    """

    name = "sir"
    support = (Bound(0.0, math.inf),)
    reference_label = "exact posterior (final-size recursion)"

    def __init__(
        self, population: int = 120, initial: int = 1, shape: float = 2.0, rate: float = 4.0 / 3.0, observed=29
    ):
        self._set_population(population, initial)
        self.shape, self.rate = _positive("shape", shape), _positive("rate", rate)
        observed = _count("observed", observed, 0)
        if observed > self.susceptible:
            raise ValueError(f"observed must be at most {self.susceptible}, got {observed}")
        self.observed = observed

    def simulate(self, rng: np.random.Generator, n: int):
        r0 = rng.gamma(self.shape, 1.0 / self.rate, size=n)
        s = np.full(n, self.susceptible, np.int64)
        i = np.full(n, self.initial, np.int64)
        active = np.arange(n)
        while active.size:
            sa = s[active]
            infect = rng.random(active.size) * (r0[active] * sa + self.population) < r0[active] * sa
            s[active] = sa - infect
            i[active] += np.where(infect, 1, -1)
            active = active[i[active] > 0]
        return r0, self.susceptible - s

    def log_prior(self, theta):
        return stats.gamma.logpdf(theta, self.shape, scale=1.0 / self.rate)

    def final_size_pmf(self, theta) -> np.ndarray:
        """P(y | R0) for y = 0..S0, shape (len(R0), S0 + 1), over the embedded jump chain."""
        r0 = np.asarray(theta, np.float64).reshape(-1)
        s0, n = self.susceptible, self.population
        final = np.zeros((r0.size, s0 + 1))
        inflow = np.zeros((r0.size, n + 2))  # mass entering (s, i) by an infection, indexed by i
        inflow[:, self.initial] = 1.0
        for s in range(s0, -1, -1):
            infect = r0 * s / (r0 * s + n)  # (G,) the same for every i at this s
            recover = 1.0 - infect
            m = np.zeros((r0.size, n + 2))
            top = n - s  # i ≤ N − s
            carry = np.zeros(r0.size)
            for i in range(top, 0, -1):  # recoveries lower i at the same s: settle the highest first
                carry = inflow[:, i] + recover * carry
                m[:, i] = carry
            final[:, s0 - s] = recover * m[:, 1]  # the last recovery at (s, 1) ends the epidemic
            nxt = np.zeros((r0.size, n + 2))
            nxt[:, 2 : top + 2] = infect[:, None] * m[:, 1 : top + 1]  # (s, i) → (s − 1, i + 1)
            inflow = nxt
        return final

    @property
    def plot_y(self):
        lo = max(self.observed // 3, 1)
        return tuple(sorted({lo, self.observed, min(2 * self.observed, self.susceptible)}))

    def describe(self):
        return {
            "name": self.name,
            "population": self.population,
            "initial": self.initial,
            "shape": self.shape,
            "rate": self.rate,
            "observed": self.observed,
        }

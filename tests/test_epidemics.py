"""The epidemic tasks' final-size distributions: exact rational arithmetic, and simulation frequencies."""

from fractions import Fraction
from math import comb

import numpy as np
import pytest
from scipy import integrate, stats

from mdnjax import tasks


def reed_frost_exact(population, initial, p):
    """Final-size distribution by enumerating every generation's outcome, in exact fractions."""
    s0 = population - initial
    out = [Fraction(0)] * (s0 + 1)

    def step(s, i, mass):
        if i == 0:
            out[s0 - s] += mass
            return
        infect = 1 - (1 - p) ** i
        for k in range(s + 1):
            step(s - k, k, mass * comb(s, k) * infect**k * (1 - infect) ** (s - k))

    step(s0, initial, Fraction(1))
    return out


def sir_exact(population, initial, r0):
    """Final-size distribution of the embedded jump chain by enumerating every path, in fractions."""
    s0 = population - initial
    out = [Fraction(0)] * (s0 + 1)

    def step(s, i, mass):
        if i == 0:
            out[s0 - s] += mass
            return
        infect = r0 * s / (r0 * s + population)
        if s:
            step(s - 1, i + 1, mass * infect)
        step(s, i - 1, mass * (1 - infect))

    step(s0, initial, Fraction(1))
    return out


@pytest.mark.parametrize(
    "population,initial,p", [(6, 1, Fraction(1, 3)), (7, 2, Fraction(1, 10)), (8, 1, Fraction(9, 10))]
)
def test_reed_frost_recursion_matches_exact_fractions(population, initial, p):
    task = tasks.ReedFrost(population=population, initial=initial)
    got = task.final_size_pmf(np.array([float(p)]))[0]
    want = np.array([float(v) for v in reed_frost_exact(population, initial, p)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "population,initial,r0", [(8, 1, Fraction(3, 2)), (9, 2, Fraction(1, 2)), (10, 1, Fraction(4))]
)
def test_sir_recursion_matches_exact_fractions(population, initial, r0):
    task = tasks.SIRFinalSize(population=population, initial=initial, observed=1)
    got = task.final_size_pmf(np.array([float(r0)]))[0]
    want = np.array([float(v) for v in sir_exact(population, initial, r0)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_reed_frost_stays_accurate_at_population_60_and_small_p():
    # where closed-form (Gontcharoff) recursions lose every digit: probabilities stay in [0, 1], sum to 1
    task = tasks.ReedFrost(population=60, initial=1)
    pmf = task.final_size_pmf(np.array([1e-4, 1e-3, 0.01, 0.05]))
    assert np.all(pmf >= 0) and np.allclose(pmf.sum(axis=1), 1.0, atol=1e-12)
    # at tiny p the epidemic almost surely stops at once: P(y = 0) = (1 − p)^59
    np.testing.assert_allclose(pmf[0, 0], (1 - 1e-4) ** 59, rtol=1e-12)


@pytest.mark.parametrize(
    "task", [tasks.ReedFrost(population=30), tasks.SIRFinalSize(population=40, observed=10)], ids=["reed-frost", "sir"]
)
def test_simulated_final_sizes_follow_the_prior_predictive(task):
    """Simulation frequencies of y against ∫ p(θ) P(y | θ) dθ (quadrature over the exact pmf)."""
    theta, y = task.simulate(np.random.default_rng(3), 200_000)
    bound = task.support[0]
    u = np.linspace(-12.0, 6.0, 4001)
    t = bound.inverse(u)
    weight = np.exp(task.log_prior(t) - bound.log_abs_det_jacobian(t))  # prior density in u
    predictive = integrate.trapezoid(weight[:, None] * task.final_size_pmf(t), u, axis=0)
    predictive /= predictive.sum()
    observed = np.bincount(y, minlength=task.susceptible + 1)
    expected = predictive * y.size
    pooled = expected >= 5
    chi2 = np.sum((observed[pooled] - expected[pooled]) ** 2 / expected[pooled])
    assert stats.chi2.sf(chi2, pooled.sum() - 1) > 1e-3

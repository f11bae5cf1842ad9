import numpy as np
import pytest
from scipy import integrate, stats

from mdnjax import tasks


def brute_force_posterior(task, y, grid):
    """prior × likelihood, normalized by numerical integration (independent of the closed form)."""
    if task.name == "beta":
        unnorm = stats.beta(task.alpha, task.beta).pdf(grid) * stats.binom.pmf(y, task.trials, grid)
    else:
        unnorm = stats.gamma(task.alpha, scale=1 / task.beta).pdf(grid) * stats.poisson.pmf(y, task.trials * grid)
    return unnorm / integrate.trapezoid(unnorm, grid)


@pytest.mark.parametrize("name,ys", [("beta", [0, 10, 60, 100]), ("gamma", [0, 10, 50, 90])])
def test_exact_posterior_matches_brute_force(name, ys):
    task = tasks.make_task(name)
    for y in ys:
        exact = task.posterior(y)
        grid = np.linspace(exact.ppf(1e-9), exact.isf(1e-9), 20001)
        np.testing.assert_allclose(exact.pdf(grid), brute_force_posterior(task, y, grid), rtol=1e-5, atol=1e-8)


def test_posterior_parameters_match_conjugate_formulas():
    b = tasks.make_task("beta", alpha=2, beta=5, trials=100).posterior(30)
    assert b.args == (32, 75)
    g = tasks.make_task("gamma", alpha=2, beta=3, trials=100).posterior(30)
    assert g.args == (32,) and g.kwds["scale"] == pytest.approx(1 / 103)


@pytest.mark.parametrize("name", ["beta", "gamma"])
def test_simulation_follows_the_prior_and_is_seeded(name):
    task = tasks.make_task(name)
    theta, y = task.simulate(np.random.default_rng(1), 200_000)
    assert theta.dtype == np.float32 and y.dtype == np.int32 and theta.shape == y.shape == (200_000,)
    prior = task.prior()
    # prior mean within 5 standard errors
    assert abs(theta.mean() - prior.mean()) < 5 * prior.std() / np.sqrt(theta.size)
    # y | θ: E[y] = n E[θ]
    assert abs(y.mean() - task.trials * prior.mean()) < 5 * y.std() / np.sqrt(y.size)
    t2, y2 = task.simulate(np.random.default_rng(1), 200_000)
    np.testing.assert_array_equal(theta, t2)
    np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="poisson"), "unknown prior"),
        (dict(name="beta", alpha=0.0), "alpha"),
        (dict(name="beta", beta=-1.0), "beta"),
        (dict(name="gamma", alpha=float("nan")), "alpha"),
        (dict(name="gamma", beta=float("inf")), "beta"),
        (dict(name="beta", trials=0), "trials"),
    ],
)
def test_bad_task_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tasks.make_task(**kwargs)


def test_y_range_is_checked():
    beta = tasks.make_task("beta")
    with pytest.raises(ValueError, match="outside"):
        beta.posterior(101)
    with pytest.raises(ValueError, match="outside"):
        tasks.make_task("gamma").posterior(-1)
    beta.posterior(100)  # the edge is fine

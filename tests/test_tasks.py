import numpy as np
import pytest
from scipy import integrate, stats

from mdnjax import tasks


def brute_force_posterior(task, y, grid):
    """prior × likelihood, normalized by numerical integration (independent of the closed form)."""
    if task.name == "beta-mixture":
        prior = sum(w * stats.beta(a, b).pdf(grid) for w, a, b in task.components)
        unnorm = prior * stats.binom.pmf(y, task.trials, grid)
    elif task.name == "beta":
        unnorm = stats.beta(task.alpha, task.beta).pdf(grid) * stats.binom.pmf(y, task.trials, grid)
    else:
        unnorm = stats.gamma(task.alpha, scale=1 / task.beta).pdf(grid) * stats.poisson.pmf(y, task.trials * grid)
    return unnorm / integrate.trapezoid(unnorm, grid)


@pytest.mark.parametrize(
    "name,ys", [("beta", [0, 10, 60, 100]), ("gamma", [0, 10, 50, 90]), ("beta-mixture", [0, 30, 47, 50, 53, 100])]
)
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


def test_mixture_posterior_weights_match_numerical_integration():
    task = tasks.BetaMixtureTask(((0.2, 2.0, 8.0), (0.5, 10.0, 10.0), (0.3, 9.0, 3.0)), trials=30)
    for y in (3, 15, 24):
        marg = [
            w * integrate.quad(lambda t, a=a, b=b, y=y: stats.beta(a, b).pdf(t) * stats.binom.pmf(y, 30, t), 0, 1)[0]
            for w, a, b in task.components
        ]
        np.testing.assert_allclose(task.posterior_weights(y), np.array(marg) / sum(marg), rtol=1e-7)
        exact = task.posterior(y)
        grid = np.linspace(1e-6, 1 - 1e-6, 20001)
        np.testing.assert_allclose(integrate.trapezoid(exact.pdf(grid), grid), 1.0, atol=1e-6)
        np.testing.assert_allclose(task.posterior_cdf(np.array([0.4]), np.array([y]))[0], exact.cdf(0.4), rtol=1e-10)


def test_default_mixture_posterior_is_bimodal_in_the_middle():
    task = tasks.make_task("beta-mixture")
    grid = np.linspace(0.01, 0.99, 2001)
    pdf = task.posterior(50).pdf(grid)
    peaks = np.flatnonzero((pdf[1:-1] > pdf[:-2]) & (pdf[1:-1] > pdf[2:]))
    assert len(peaks) == 2
    assert pdf[1000] < 0.5 * pdf[peaks].min()  # a real dip between the modes

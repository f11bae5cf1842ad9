"""Task.from_numpyro: supports, densities and the simulator from a numpyro model."""

import numpy as np
import pytest
from scipy import stats

numpyro = pytest.importorskip("numpyro")
import numpyro.distributions as dist  # noqa: E402

import mdnjax  # noqa: E402


def beta_binomial():
    p = numpyro.sample("p", dist.Beta(2.0, 5.0))
    numpyro.sample("y", dist.Binomial(100, p))


def gamma_poisson():
    rate = numpyro.sample("rate", dist.Gamma(2.0, 3.0))
    numpyro.sample("y", dist.Poisson(100 * rate))


def test_a_numpyro_model_gives_the_task_of_the_closed_form():
    task = mdnjax.Task.from_numpyro(beta_binomial)
    assert task.name == "beta_binomial" and task.support[0] == mdnjax.Bound(0.0, 1.0) and task.y_range == (0.0, 100.0)
    t = np.array([0.1, 0.3, 0.7])
    np.testing.assert_allclose(task.log_prior(t), stats.beta.logpdf(t, 2, 5), rtol=1e-5)
    # numpyro evaluates in float32: log-binomial coefficients of ~60 carry ~1e-5 of rounding
    np.testing.assert_allclose(task.log_likelihood(t, 30), stats.binom.logpmf(30, 100, t), atol=1e-4)
    theta, y = task.simulate(np.random.default_rng(0), 5000)
    assert theta.shape == y.shape == (5000,) and np.issubdtype(y.dtype, np.integer)
    assert stats.kstest(theta, stats.beta(2, 5).cdf).pvalue > 1e-3
    assert abs(theta.mean() - 2 / 7) < 5 * stats.beta(2, 5).std() / np.sqrt(theta.size)
    gamma = mdnjax.Task.from_numpyro(gamma_poisson)
    assert gamma.support[0] == mdnjax.Bound(0.0, np.inf) and gamma.y_range == (0.0, np.inf)
    np.testing.assert_allclose(gamma.log_likelihood(t, 30), stats.poisson.logpmf(30, 100 * t), atol=1e-4)


def test_a_numpyro_task_trains_against_its_quadrature_reference():
    from mdnjax import metrics, report

    task = mdnjax.Task.from_numpyro(gamma_poisson)
    res = mdnjax.fit(task, mdnjax.Config(samples=20_000, epochs=200, log_every=200, holdout=0.0))
    refs = report.references(task, res, [30])
    rows = metrics.evaluate(res.posterior, task, [30], refs)
    exact = stats.gamma(2 + 30, scale=1 / 103)
    assert refs[30].mean() == pytest.approx(exact.mean(), rel=1e-5)
    assert refs[30].std() == pytest.approx(exact.std(), rel=1e-4)
    assert rows[0]["kl"] < 0.05


def test_models_mdnjax_cannot_use_are_refused_in_one_line():
    def two_params():
        a = numpyro.sample("a", dist.Normal(0, 1))
        b = numpyro.sample("b", dist.Normal(0, 1))
        numpyro.sample("y", dist.Poisson(a * a + b * b))

    def continuous_y():
        p = numpyro.sample("p", dist.Beta(2.0, 5.0))
        numpyro.sample("y", dist.Normal(p, 1.0))

    for model, needle in ((two_params, "name the parameter"), (continuous_y, "integer counts")):
        with pytest.raises(ValueError, match=needle):
            mdnjax.Task.from_numpyro(model)
    with pytest.raises(ValueError, match="no site 'obs'"):
        mdnjax.Task.from_numpyro(beta_binomial, y="obs")

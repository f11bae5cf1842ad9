"""Task.from_numpyro: supports, densities and the simulator from a numpyro model."""

import numpy as np
import pytest
from scipy import stats

numpyro = pytest.importorskip("numpyro")
import jax.numpy as jnp  # noqa: E402
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


def two_sites_and_a_plate():
    a = numpyro.sample("a", dist.Gamma(2.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 0.5))
    with numpyro.plate("days", 3):
        numpyro.sample("y", dist.Poisson(a * jnp.exp(b * jnp.arange(3.0))))


def test_several_latent_sites_and_a_plate_of_counts_give_theta_in_rd_and_vector_y():
    task = mdnjax.Task.from_numpyro(two_sites_and_a_plate)
    assert task.support == (mdnjax.Bound(0.0, np.inf), mdnjax.Bound()) and task.y_shape == (3,)
    theta, y = task.simulate(np.random.default_rng(0), 4000)
    assert theta.shape == (4000, 2) and y.shape == (4000, 3) and np.issubdtype(y.dtype, np.integer)
    assert stats.kstest(theta[:, 0], stats.gamma(2.0).cdf).pvalue > 1e-3
    t = np.array([[1.5, 0.2], [0.7, -0.4]])
    expected = stats.gamma(2.0).logpdf(t[:, 0]) + stats.norm(0, 0.5).logpdf(t[:, 1])
    np.testing.assert_allclose(task.log_prior(t), expected, rtol=1e-5)
    counts = np.array([2, 1, 4])
    rate = t[:, :1] * np.exp(t[:, 1:] * np.arange(3.0))
    np.testing.assert_allclose(
        task.log_likelihood(t, counts), stats.poisson.logpmf(counts, rate).sum(axis=1), atol=1e-4
    )


def test_an_observed_site_with_obs_set_is_simulated_from_its_distribution():
    data = jnp.array(30)

    def coin():
        p = numpyro.sample("p", dist.Beta(2.0, 5.0))
        numpyro.sample("y", dist.Binomial(100, p), obs=data)

    task = mdnjax.Task.from_numpyro(coin)
    theta, y = task.simulate(np.random.default_rng(0), 2000)
    assert np.unique(y).size > 20  # the prior predictive, not the data repeated
    assert abs(np.corrcoef(theta, y)[0, 1]) > 0.9
    t = np.array([0.2, 0.4])
    np.testing.assert_allclose(task.log_likelihood(t, 12), stats.binom.logpmf(12, 100, t), atol=1e-4)


def test_models_mdnjax_cannot_use_are_refused_in_one_line():
    def continuous_y():
        p = numpyro.sample("p", dist.Beta(2.0, 5.0))
        numpyro.sample("y", dist.Normal(p, 1.0))

    def vector_site():
        p = numpyro.sample("p", dist.Dirichlet(jnp.ones(3)))
        numpyro.sample("y", dist.Poisson(p[0]))

    for model, needle in ((vector_site, "each parameter must be a scalar site"), (continuous_y, "integer counts")):
        with pytest.raises(ValueError, match=needle):
            mdnjax.Task.from_numpyro(model)
    with pytest.raises(ValueError, match="no site 'obs'"):
        mdnjax.Task.from_numpyro(beta_binomial, y="obs")


TASK_FILE = """
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

import mdnjax


def model():
    a = numpyro.sample("a", dist.Gamma(2.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 0.5))
    with numpyro.plate("days", 3):
        numpyro.sample("y", dist.Poisson(a * jnp.exp(b * jnp.arange(3.0))), obs=jnp.array([2, 1, 4]))


TASK = mdnjax.Task.from_numpyro(model)
"""


def test_a_two_site_numpyro_task_with_a_plate_runs_through_the_command(tmp_path, capsys):
    import json

    from mdnjax import cli

    path = tmp_path / "model.py"
    path.write_text(TASK_FILE)
    out = tmp_path / "run"
    argv = [
        "--task",
        f"{path}:TASK",
        "--samples",
        "6000",
        "--epochs",
        "20",
        "--no-plots",
        "--holdout",
        "0",
        "--layout",
        "binned",
        "--plot-y",
        "2",
        "1",
        "4",
    ]
    assert cli.main([*argv, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dim"] == 2 and metrics["inputs"] == 3 and metrics["at_y"][0]["y"] == [2, 1, 4]
    assert mdnjax.load(out).sample(__import__("jax").random.key(0), [2, 1, 4], 5).shape == (5, 2)

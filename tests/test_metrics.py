"""Metrics against closed forms; the unconstrained space's density integrates to one."""

import dataclasses

import jax
import numpy as np
import pytest
from scipy import integrate, stats

from mdnjax import Config, metrics, model
from mdnjax.posterior import Posterior
from mdnjax.tasks import make_task


@dataclasses.dataclass
class NormalTask:
    """A stand-in task whose exact posterior is N(m, s²), for closed-form checks."""

    m: float
    s: float
    support = (-np.inf, np.inf)

    def posterior(self, y):
        return stats.norm(self.m, self.s)


@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.3, 1.5), (2.0, 0.1, 2.05, 0.08), (-1.0, 2.0, -1.0, 2.0)])
def test_kl_and_w1_match_closed_forms(m1, s1, m2, s2):
    r = metrics.compare(NormalTask(m1, s1), 0, np.zeros(1), np.array([m2]), np.log([s2**2]))
    kl = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    np.testing.assert_allclose(r["kl"], kl, rtol=1e-6, atol=1e-10)
    if s1 == s2:  # W1 of a shift is the shift
        np.testing.assert_allclose(r["w1"], abs(m1 - m2), atol=1e-8)
    np.testing.assert_allclose([r["mdn_mean"], r["mdn_sd"]], [m2, s2], rtol=1e-12)


def test_w1_of_shifted_distributions():
    r = metrics.compare(NormalTask(0.5, 0.2), 0, np.zeros(1), np.array([0.8]), np.log([0.04]))
    np.testing.assert_allclose(r["w1"], 0.3, rtol=1e-6)


def test_mass_outside_matches_numerical_integration():
    logits, means, log_vars = np.array([0.0, 1.0]), np.array([0.02, 0.97]), np.log([0.03**2, 0.05**2])
    pdf = lambda t: np.exp(metrics.mixture_logpdf(np.atleast_1d(t), logits, means, log_vars))[0]  # noqa: E731
    below = integrate.quad(pdf, -np.inf, 0.0)[0]
    above = integrate.quad(pdf, 1.0, np.inf)[0]
    np.testing.assert_allclose(metrics.mass_outside((0.0, 1.0), logits, means, log_vars), below + above, rtol=1e-7)


@pytest.mark.parametrize("prior", ["beta", "gamma"])
def test_unconstrained_density_integrates_to_one_and_matches_metrics(prior):
    cfg = Config(prior=prior, space="unconstrained", components=3).validate()
    graphdef, params = model.init(jax.random.key(1), 3)
    post = Posterior(cfg, params, graphdef)
    hi = 1.0 if prior == "beta" else np.inf
    f = lambda t: float(np.exp(post.log_prob(np.array([t]), 30))[0])  # noqa: E731
    total = integrate.quad(f, 0.0, hi, limit=200)[0]
    np.testing.assert_allclose(total, 1.0, atol=2e-4)
    mean = integrate.quad(lambda t: t * f(t), 0.0, hi, limit=200)[0]
    np.testing.assert_allclose(float(post.mean(30)), mean, rtol=1e-3)
    assert float(post.log_prob(np.array([-0.1]), 30)[0]) == -np.inf
    draws = np.asarray(post.sample(jax.random.key(0), 30, 20_000))
    assert draws.min() > 0 and (prior == "gamma" or draws.max() < 1)
    row = metrics.evaluate(post, [30])[0]
    assert row["mass_outside"] == 0.0
    np.testing.assert_allclose(row["mdn_mean"], mean, rtol=1e-3)


def test_transform_is_a_bijection():
    for name in ("beta", "gamma"):
        task = make_task(name)
        theta = np.array([1e-4, 0.3, 0.9])
        np.testing.assert_allclose(task.from_unconstrained(task.to_unconstrained(theta)), theta, rtol=1e-12)
        h = 1e-7
        num = (task.to_unconstrained(theta + h) - task.to_unconstrained(theta - h)) / (2 * h)
        np.testing.assert_allclose(task.log_abs_det_jacobian(theta), np.log(num), rtol=1e-6)


def test_exact_posterior_coverage_is_nominal_and_calibration_runs(tmp_path):
    from mdnjax import calibrate, train

    task = make_task("gamma")
    theta, y = task.simulate(np.random.default_rng(5), 20_000)
    cov = calibrate.coverage(task.posterior_cdf(theta, y))
    se = np.sqrt(calibrate.LEVELS * (1 - calibrate.LEVELS) / theta.size)
    assert np.all(np.abs(cov - calibrate.LEVELS) < 4 * se)  # nominal within Monte Carlo error

    res = train.fit(Config(prior="beta", samples=20_000, epochs=300, log_every=100), verbose=False)
    res.posterior.save(tmp_path)
    assert calibrate.main([str(tmp_path), "--draws", "500", "--samples-per-draw", "49"]) == 0
    out = __import__("json").loads((tmp_path / "calibration.json").read_text())
    assert out["draws"] == 500 and sum(out["rank_counts"]) == 500 and len(out["rank_counts"]) == 50
    assert 0 <= out["max_coverage_error"] < 0.5
    assert (tmp_path / "sbc_ranks.png").stat().st_size > 0 and (tmp_path / "coverage.png").stat().st_size > 0
    # the MDN's PIT agrees with a Monte Carlo estimate from its own samples
    post = res.posterior
    theta, y = make_task("beta").simulate(np.random.default_rng(6), 3)
    u = calibrate.pit(post, theta, y)
    for i in range(3):
        s = np.asarray(post.sample(jax.random.key(i), int(y[i]), 40_000))
        assert abs(np.mean(s < theta[i]) - u[i]) < 0.01

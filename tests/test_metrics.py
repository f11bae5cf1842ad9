"""Metrics against closed forms; densities in the fitting space integrate to one; calibration."""

import jax
import numpy as np
import pytest
from scipy import integrate, stats

import mdnjax
from mdnjax import calibration, metrics, model, reference, tasks
from mdnjax.posterior import Posterior, PosteriorSpec
from mdnjax.task import Bound, Task


class NormalTask(Task):
    """A stand-in task whose exact posterior is N(m, s²), for closed-form checks."""

    def __init__(self, m, s):
        super().__init__("normal", lambda rng, n: None, support=[(-np.inf, np.inf)])
        self.m, self.s = m, s

    def exact_posterior(self, y):
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
    np.testing.assert_allclose(metrics.mass_outside(Bound(0.0, 1.0), logits, means, log_vars), below + above, rtol=1e-7)


def _posterior(task, space="unconstrained", k=3, seed=1):
    _, params = model.init(jax.random.key(seed), k, (24, 25, 16))
    cfg = mdnjax.Config(components=k, hidden=(24, 25, 16), space=space).resolve(task)
    spec = PosteriorSpec.of(task, cfg, (0.0, 100.0), np.arange(101), np.full(101, 1000))
    return Posterior(spec, params)


@pytest.mark.parametrize("name", ["beta", "gamma"])
def test_unconstrained_density_integrates_to_one_and_matches_metrics(name):
    task = tasks.from_name(name)
    post = _posterior(task)
    (bound,) = task.support
    # integrate in u, where the density is smooth: ∫ q(θ(u)) dθ/du du
    u = np.linspace(-30.0, 10.0, 200_001)
    theta = bound.inverse(u)
    q = np.exp(np.asarray(post.log_prob(theta, 30), np.float64) - bound.log_abs_det_jacobian(theta))
    np.testing.assert_allclose(integrate.trapezoid(q, u), 1.0, atol=2e-4)
    mean = integrate.trapezoid(theta * q, u)
    np.testing.assert_allclose(float(post.mean(30)), mean, rtol=1e-3)
    assert float(post.log_prob(np.array([-0.1]), 30)[0]) == -np.inf
    draws = np.asarray(post.sample(jax.random.key(0), 30, 20_000))
    assert draws.min() > 0 and (name == "gamma" or draws.max() < 1)
    row = metrics.evaluate(post, task, [30])[0]
    assert row["mass_outside"] == 0.0
    np.testing.assert_allclose(row["mdn_mean"], mean, rtol=1e-3)


def test_kl_is_finite_where_the_exact_density_diverges_at_a_bound():
    # Beta(0.5, 0.5) prior, y = 0 of 20: p(θ | y) → ∞ as θ → 0; the quadrature runs in logit space
    task = tasks.BetaBinomial(0.5, 0.5, 20)
    exact = task.exact_posterior(0)
    (bound,) = task.support
    u = bound.forward(exact.rvs(size=200_000, random_state=np.random.default_rng(0)))
    mixture = stats.norm(u.mean(), u.std())  # the moment-matched Gaussian in u
    r = metrics.compare(task, 0, np.zeros(1), np.array([u.mean()]), np.log([u.var()]), "unconstrained")
    assert np.isfinite(r["kl"]) and 0 < r["kl"] < 1
    # against Monte Carlo: KL = E_p[log p(θ) − log q(θ)]
    theta = bound.inverse(u)
    log_q = mixture.logpdf(u) + bound.log_abs_det_jacobian(theta)
    assert r["kl"] == pytest.approx(np.mean(exact.logpdf(theta) - log_q), abs=0.005)


def test_exact_posterior_coverage_is_nominal_and_calibration_runs():
    task = tasks.GammaPoisson()
    theta, y = task.simulate(np.random.default_rng(5), 20_000)
    cov = calibration.coverage(task.posterior_cdf(theta, y))
    se = np.sqrt(calibration.LEVELS * (1 - calibration.LEVELS) / theta.size)
    assert np.all(np.abs(cov - calibration.LEVELS) < 4 * se)  # nominal within Monte Carlo error

    res = mdnjax.fit("beta", mdnjax.Config(samples=20_000, epochs=300, log_every=100))
    out = calibration.run(res.posterior, tasks.BetaBinomial(), draws=500, per_draw=49)
    assert out["draws"] == 500 and sum(out["rank_counts"]) == 500 and len(out["rank_counts"]) == 50
    assert 0 <= out["max_coverage_error"] < 0.5 and "coverage_exact_posterior" in out
    # the MDN's PIT agrees with a Monte Carlo estimate from its own samples
    post = res.posterior
    theta, y = tasks.BetaBinomial().simulate(np.random.default_rng(6), 3)
    u = calibration.pit(post, theta, y)
    for i in range(3):
        s = np.asarray(post.sample(jax.random.key(i), int(y[i]), 40_000))
        assert abs(np.mean(s < theta[i]) - u[i]) < 0.01


# ----------------------------------------------------------------------------- θ ∈ ℝ^D checks


def test_mmd_statistic_is_the_biased_estimator_and_its_test_has_power_and_level():
    from mdnjax import heldout

    rng = np.random.default_rng(0)
    x, z = rng.normal(size=(60, 2)), rng.normal(size=(50, 2)) + 0.1
    out = heldout.mmd_test(x, z, permutations=50)
    # the statistic against a direct double loop on the same scaled points and bandwidth
    pooled = np.concatenate([x, z])
    pooled = (pooled - pooled.mean(0)) / pooled.std(0)
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / out["bandwidth"] ** 2)  # noqa: E731
    xs, zs = pooled[:60], pooled[60:]
    direct = (
        np.mean([[k(a, b) for b in xs] for a in xs])
        + np.mean([[k(a, b) for b in zs] for a in zs])
        - 2 * np.mean([[k(a, b) for b in zs] for a in xs])
    )
    assert out["mmd2"] == pytest.approx(direct, rel=1e-9)
    # level: same distribution → p-values spread over (0, 1]; power: a shift of 0.3 sd is found
    p_null = [
        heldout.mmd_test(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)), 200, s)["pvalue"] for s in range(20)
    ]
    assert np.mean(np.array(p_null) < 0.05) <= 0.2
    shifted = heldout.mmd_test(rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) + [0.3, 0.0], 200)
    assert shifted["pvalue"] < 0.01


@pytest.fixture(scope="module")
def abtest_run():
    task = tasks.ABTest(trials=(20, 20), observed=(4, 9))
    good = mdnjax.fit(task, mdnjax.Config(samples=100_000, epochs=600, log_every=300, holdout=0.2))
    bad = mdnjax.fit(task, mdnjax.Config(samples=100_000, epochs=10, log_every=10, holdout=0.0))
    return task, good, bad


def test_the_two_sample_test_passes_a_trained_2d_posterior_and_rejects_an_undertrained_one(abtest_run):
    from mdnjax import heldout, sources

    task, good, bad = abtest_run
    y = np.array(task.observed)
    exact = sources.draw_at(task, good.config, y, 1000)
    assert len(exact) == 1000
    ok = heldout.check_at(good.posterior, y, exact)
    assert not ok["rejected"] and all(p["ks_pvalue"] > 0.01 for p in ok["pit"])
    poor = heldout.check_at(bad.posterior, y, exact)
    assert poor["rejected"] and poor["nll"] > ok["nll"]


def test_2d_metrics_against_the_grid_reference(abtest_run):
    task, good, _ = abtest_run
    y = np.array(task.observed)
    ref = reference.grid_posterior_2d(task, y, [-3.0, -3.0], [1.0, 1.0])
    m = metrics.compare_nd(good.posterior, task, y, ref)
    assert 0 <= m["kl"] < 0.02 and max(m["w1"]) < 0.05 and m["cov_error"] < 0.1
    p = m["summaries"]["P(pB > pA)"]
    assert p["mdn"]["mean"] == pytest.approx(p["reference"]["mean"], abs=0.02)


def test_2d_calibration_reports_each_coordinate_and_log_q(abtest_run):
    from mdnjax import calibration

    task, good, bad = abtest_run
    res = calibration.run_nd(good.posterior, task, draws=1500, per_draw=49)
    assert np.asarray(res["coverage"]).shape == (len(res["levels"]), 2)
    assert res["max_coverage_error"] < 0.06 and min(res["pit_ks_pvalue"]) > 1e-3
    poor = calibration.run_nd(bad.posterior, task, draws=1500, per_draw=49)
    assert poor["max_coverage_error"] > res["max_coverage_error"]

"""The quadrature reference against the closed forms, and the held-out checks against the exact posterior."""

import numpy as np
import pytest

import mdnjax
from mdnjax import heldout, reference, sources, tasks

CONJUGATE = [tasks.BetaBinomial(), tasks.GammaPoisson(), tasks.BetaBinomial(0.5, 0.5, 20), tasks.GammaPoisson(1, 1, 10)]


@pytest.mark.parametrize("task", CONJUGATE, ids=lambda t: f"{t.name}-{t.alpha}")
def test_quadrature_reference_matches_the_closed_form(task):
    (bound,) = task.support
    ys = [0, 3, 10, 20]
    lows = [bound.forward(task.exact_posterior(y).ppf(0.01)) for y in ys]
    highs = [bound.forward(task.exact_posterior(y).ppf(0.99)) for y in ys]
    refs = reference.grid_posteriors(task, ys, lows, highs)
    for y in ys:
        exact, ref = task.exact_posterior(y), refs[y]
        theta = exact.ppf(np.linspace(0.001, 0.999, 25))
        np.testing.assert_allclose(ref.logpdf(theta), exact.logpdf(theta), atol=1e-4)
        np.testing.assert_allclose(ref.cdf(theta), exact.cdf(theta), atol=1e-5)
        assert ref.mean() == pytest.approx(exact.mean(), rel=1e-6)
        assert ref.std() == pytest.approx(exact.std(), rel=1e-6)
        assert ref.entropy() == pytest.approx(exact.entropy(), abs=1e-5)
        np.testing.assert_allclose(ref.ppf([0.1, 0.5, 0.9]), exact.ppf([0.1, 0.5, 0.9]), rtol=1e-4)


def test_held_out_draws_are_exact_posterior_draws_so_their_pit_is_uniform():
    task = tasks.GammaPoisson()
    cfg = mdnjax.Config(samples=200_000).resolve(task)
    theta_u, y = sources.draw_heldout(task, cfg)
    assert theta_u.size == 20_000
    theta = task.support[0].inverse(theta_u.astype(np.float64))
    pvalues = []
    for value in (10, 20, 30, 40):
        at = y == value
        pvalues.append(heldout.pit_uniformity(task.exact_posterior(value).cdf(theta[at]))["ks_pvalue"])
    assert min(pvalues) > 1e-3, pvalues


def test_held_out_checks_agree_with_the_exact_metrics():
    task = tasks.GammaPoisson()
    good = mdnjax.fit(task, mdnjax.Config(samples=100_000, epochs=600, log_every=300))
    poor = mdnjax.fit(task, mdnjax.Config(samples=100_000, epochs=10, log_every=10))
    ys = [10, 20, 30, 40]
    refs = {y: task.exact_posterior(y) for y in ys}
    summary = {}
    for name, res in (("good", good), ("poor", poor)):
        rows = heldout.check(res.posterior, res.heldout, ys, references=refs)
        summary[name] = heldout.summarize(rows)
    assert summary["good"]["pit_rejected_at_1pct"] == 0.0  # a posterior with small exact KL has uniform PIT
    assert summary["poor"]["pit_rejected_at_1pct"] == 1.0  # ten epochs: rejected at every y
    assert summary["poor"]["kl_estimate_mean"] > 0.1 > abs(summary["good"]["kl_estimate_mean"])


# ----------------------------------------------------------------------------- two parameters


def test_2d_grid_moments_and_kl_match_closed_forms():
    from scipy import stats

    from mdnjax.reference import GridPosterior2D
    from mdnjax.task import Bound

    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    u0, u1 = np.linspace(-9, 9, 601), np.linspace(-12, 12, 701)
    pts = np.stack(np.meshgrid(u0, u1, indexing="ij"), axis=-1)
    p = stats.multivariate_normal([0.0, 1.0], cov)
    g = GridPosterior2D((Bound(), Bound()), u0, u1, p.logpdf(pts))
    np.testing.assert_allclose(g.mean(), [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(g.cov(), cov, atol=1e-4)
    q = stats.multivariate_normal([0.5, 0.0], cov)
    d = np.array([0.5, -1.0])
    expected = 0.5 * d @ np.linalg.solve(cov, d)  # KL between Gaussians with equal covariances
    assert g.kl(q.logpdf(g.points_u)) == pytest.approx(expected, rel=1e-4)
    edges, cdf = g.marginal(1)
    np.testing.assert_allclose(cdf, stats.norm(1.0, np.sqrt(2.0)).cdf(edges), atol=1e-4)


def test_2d_grid_reference_agrees_with_importance_sampling_from_the_prior():
    """A/B task: posterior mean and P(p_B > p_A | y) by the grid against prior draws weighted by the
    likelihood (self-normalised; its Monte Carlo error sets the tolerance)."""
    task = tasks.ABTest()
    y = np.array(task.observed)
    g = reference.grid_posterior_2d(task, y, [-3.0, -3.0], [-1.0, -0.5])
    theta, _ = task.simulate(np.random.default_rng(0), 2_000_000)
    w = np.exp(task.log_likelihood(theta, y))
    w /= w.sum()
    ess = 1.0 / np.sum(w**2)
    mean_is = w @ theta
    sd = np.sqrt(np.diag(g.cov()))
    assert np.all(np.abs(g.mean() - mean_is) < 5 * sd / np.sqrt(ess))
    p_is = float(w @ (theta[:, 1] > theta[:, 0]))
    p_grid = g.summary(task.summaries["P(pB > pA)"])["mean"]
    assert p_grid == pytest.approx(p_is, abs=5 * np.sqrt(p_is * (1 - p_is) / ess))


def test_2d_grid_reference_of_the_bioassay_agrees_with_importance_sampling():
    """The bioassay at the book's y: posterior means and the LD50 median and 95% interval from the
    grid against prior draws weighted by the likelihood (an independent computation)."""
    task = tasks.Bioassay()
    y = np.array(task.observed)
    fw = [b.forward(np.array(v)) for b, v in zip(task.support, ([-1.0, 3.0], [-1.0, 30.0]))]
    g = reference.grid_posterior_2d(task, y, [fw[0][0], fw[1][0]], [fw[0][1], fw[1][1]])
    theta, _ = task.simulate(np.random.default_rng(1), 2_000_000)
    w = np.exp(task.log_likelihood(theta, y))
    w /= w.sum()
    ess = 1.0 / np.sum(w**2)
    sd = np.sqrt(np.diag(g.cov()))
    assert np.all(np.abs(g.mean() - w @ theta) < 5 * sd / np.sqrt(ess))
    grid, sampled = g.summary(task.summaries["LD50"]), reference.weighted_summary(-theta[:, 0] / theta[:, 1], w)
    for key in ("median", "q025", "q975"):
        assert grid[key] == pytest.approx(sampled[key], abs=0.01), key

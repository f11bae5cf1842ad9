"""The quadrature reference against the closed forms, and the held-out checks against the exact posterior."""

import numpy as np
import pytest

import mdnjax
from mdnjax import heldout, reference, simulation, tasks

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
    theta_u, y = simulation.draw_heldout(task, cfg)
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

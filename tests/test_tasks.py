"""The contract every built-in task must meet, and the support transforms for every kind of bound."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

import mdnjax
from mdnjax import tasks
from mdnjax.task import Bound

BUILTIN = [
    tasks.BetaBinomial(),
    tasks.GammaPoisson(),
    tasks.BetaMixtureBinomial(),
    tasks.BetaBinomial(0.5, 0.5, 20),
    tasks.GammaPoisson(1.0, 1.0, 10),
    tasks.BetaMixtureBinomial(((0.2, 2.0, 8.0), (0.5, 10.0, 10.0), (0.3, 9.0, 3.0)), trials=30),
    tasks.ReedFrost(population=20),
    tasks.SIRFinalSize(population=30, observed=5),
]
EXACT = [t for t in BUILTIN if t.has_exact_posterior]
IDS = [f"{t.name}-{i}" for i, t in enumerate(BUILTIN)]
BOUNDS = [Bound(0.0, 1.0), Bound(-2.0, 3.0), Bound(0.0, math.inf), Bound(1.5, math.inf), Bound(-math.inf, 2.0), Bound()]


MULTI = [tasks.Bioassay(), tasks.ABTest(), tasks.ABTest(mean=0.5, sd=2.0, rho=-0.6, trials=(30, 60), observed=(3, 50))]
MULTI_IDS = [f"{t.name}-{i}" for i, t in enumerate(MULTI)]


def test_registry_covers_every_builtin_class():
    assert set(tasks.REGISTRY.values()) == {type(t) for t in BUILTIN + MULTI} | set(tasks.SBIBM.values())
    for name, cls in tasks.REGISTRY.items():
        assert cls().name == name


@pytest.mark.parametrize("bound", BOUNDS, ids=lambda b: b.kind + str(b.low))
def test_transform_is_a_bijection_with_the_right_jacobian(bound):
    u = np.linspace(-12.0, 12.0, 97)
    theta = bound.inverse(u)
    assert np.all(bound.contains(theta))
    np.testing.assert_allclose(bound.forward(theta), u, rtol=1e-9, atol=1e-9)
    # |du/dθ| against a central difference
    h = 1e-6
    mid = theta[20:-20]
    numeric = bound.forward(mid + h * np.maximum(1.0, abs(mid))) - bound.forward(mid - h * np.maximum(1.0, abs(mid)))
    numeric /= 2 * h * np.maximum(1.0, abs(mid))
    np.testing.assert_allclose(bound.log_abs_det_jacobian(mid), np.log(numeric), rtol=1e-5, atol=1e-6)
    # a standard normal in u, mapped to θ with the Jacobian, integrates to 1 over the support
    density = lambda t: stats.norm.pdf(bound.forward(t)) * np.exp(bound.log_abs_det_jacobian(t))  # noqa: E731
    pieces = bound.inverse(np.linspace(-12.0, 12.0, 97))
    total = sum(integrate.quad(density, a, b)[0] for a, b in zip(pieces[:-1], pieces[1:]))
    assert total == pytest.approx(1.0, abs=1e-6)
    # forward is increasing: CDFs and ranks keep their order
    assert np.all(np.diff(bound.forward(np.sort(theta))) > 0)


@pytest.mark.parametrize("bound", BOUNDS[:5], ids=lambda b: b.kind + str(b.low))
def test_draws_on_a_bound_move_inside_and_never_give_nan(bound):
    edge = [v for v in (bound.low, bound.high) if math.isfinite(v)]
    theta = np.array(edge + [bound.inverse(0.3)], np.float64)
    inside, moved = bound.interior(theta)
    assert moved == len(edge)
    assert np.all(bound.contains(inside))
    assert np.all(np.isfinite(bound.forward(inside)))
    np.testing.assert_array_equal(inside[-1], theta[-1])  # interior draws untouched


@pytest.mark.parametrize("task", BUILTIN, ids=IDS)
def test_draws_stay_in_the_support_and_are_seeded(task):
    theta, y = task.simulate(np.random.default_rng(1), 100_000)
    assert theta.dtype == np.float64 and np.issubdtype(y.dtype, np.integer) and theta.shape == y.shape == (100_000,)
    (bound,) = task.support
    assert np.all((theta >= bound.low) & (theta <= bound.high))
    lo, hi = task.y_range
    assert np.all((y >= lo) & (y <= hi))
    t2, y2 = task.simulate(np.random.default_rng(1), 100_000)
    np.testing.assert_array_equal(theta, t2)
    np.testing.assert_array_equal(y, y2)
    # the marginal of θ is the prior: a KS test in the fitting space (smooth there) against the
    # CDF of the prior's density, from log_prior and the Jacobian
    u = np.linspace(-40.0, 15.0, 400_001)
    t = bound.inverse(u)
    ok = bound.contains(t)
    pdf = np.where(
        ok, np.exp(task.log_prior(np.where(ok, t, 0.5)) - bound.log_abs_det_jacobian(np.where(ok, t, 0.5))), 0.0
    )
    cdf = integrate.cumulative_trapezoid(pdf, u, initial=0.0)
    assert cdf[-1] == pytest.approx(1.0, abs=1e-3)
    draws = bound.forward(bound.interior(theta[:5000])[0])
    assert stats.kstest(draws, lambda v: np.interp(v, u, cdf / cdf[-1])).pvalue > 1e-3


@pytest.mark.parametrize("task", EXACT, ids=[f"{t.name}-{i}" for i, t in enumerate(EXACT)])
def test_exact_posterior_matches_prior_times_likelihood(task):
    lo, hi = task.y_range
    ys = sorted({int(lo), int(min(hi, 40)) // 2, int(min(hi, 40))})
    (bound,) = task.support
    for y in ys:
        exact = task.exact_posterior(y)
        # quadrature in the fitting space u, where densities stay finite at the bounds
        lo, hi = bound.interior(np.array([exact.ppf(1e-10), exact.isf(1e-10)]))[0]
        u = np.linspace(bound.forward(lo), bound.forward(hi), 20001)
        theta = bound.interior(bound.inverse(u))[0]
        log_j = bound.log_abs_det_jacobian(theta)
        log_unnorm = task.log_prior(theta) + task.log_likelihood(theta, y) - log_j
        unnorm = np.exp(log_unnorm - log_unnorm.max())
        brute = unnorm / integrate.trapezoid(unnorm, u)
        closed = np.exp(exact.logpdf(theta) - log_j)
        np.testing.assert_allclose(closed, brute, rtol=1e-4, atol=1e-7 * brute.max())
        assert exact.mean() == pytest.approx(integrate.trapezoid(theta * brute, u), rel=1e-5)
        np.testing.assert_allclose(
            task.posterior_cdf(np.array([exact.mean()]), np.array([y]))[0], exact.cdf(exact.mean()), rtol=1e-10
        )


def test_conjugate_parameters():
    assert tasks.BetaBinomial(2, 5, 100).exact_posterior(30).args == (32, 75)
    g = tasks.GammaPoisson(2, 3, 100).exact_posterior(30)
    assert g.args == (32,) and g.kwds["scale"] == pytest.approx(1 / 103)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: tasks.from_name("poisson"), "unknown task"),
        (lambda: tasks.BetaBinomial(alpha=0.0), "alpha"),
        (lambda: tasks.BetaBinomial(beta=-1.0), "beta"),
        (lambda: tasks.GammaPoisson(alpha=float("nan")), "alpha"),
        (lambda: tasks.GammaPoisson(beta=float("inf")), "beta"),
        (lambda: tasks.BetaBinomial(alpha=1e308), "alpha"),
        (lambda: tasks.BetaBinomial(trials=0), "trials"),
        (lambda: tasks.BetaBinomial(trials=2.5), "trials"),
        (lambda: tasks.BetaMixtureBinomial(((0.5, 1.0, 1.0),)), "sum to 1"),
        (lambda: mdnjax.Task("x", simulate=None, support=[(0, 1)]), "simulate"),
        (lambda: mdnjax.Task("x", lambda r, n: None, support=[(1, 0)]), "low < high"),
    ],
)
def test_bad_task_parameters_are_one_line_errors(make, match):
    with pytest.raises(ValueError, match=match) as err:
        make()
    assert "\n" not in str(err.value)


def test_y_range_is_checked():
    with pytest.raises(ValueError, match="outside"):
        tasks.BetaBinomial().check_y(101)
    with pytest.raises(ValueError, match="outside"):
        tasks.GammaPoisson().check_y(-1)
    tasks.BetaBinomial().check_y(100)  # the edge is fine


def test_beta_mixture_fits_in_logit_space():
    # it once borrowed the gamma task's log transform: f⁻¹(1.0) was e, outside (0, 1)
    (bound,) = tasks.BetaMixtureBinomial().support
    assert bound.kind == "interval"
    assert 0.0 < bound.inverse(1.0) < 1.0
    assert bound.inverse(1.0) == pytest.approx(1 / (1 + math.exp(-1)))


def test_mixture_posterior_weights_match_numerical_integration():
    task = BUILTIN[5]
    for y in (3, 15, 24):
        marg = [
            w * integrate.quad(lambda t, a=a, b=b, y=y: stats.beta(a, b).pdf(t) * stats.binom.pmf(y, 30, t), 0, 1)[0]
            for w, a, b in task.components
        ]
        np.testing.assert_allclose(task.posterior_weights(y), np.array(marg) / sum(marg), rtol=1e-7)


def test_default_mixture_posterior_is_bimodal_in_the_middle():
    task = tasks.BetaMixtureBinomial()
    grid = np.linspace(0.01, 0.99, 2001)
    pdf = task.exact_posterior(50).pdf(grid)
    peaks = np.flatnonzero((pdf[1:-1] > pdf[:-2]) & (pdf[1:-1] > pdf[2:]))
    assert len(peaks) == 2
    assert pdf[1000] < 0.5 * pdf[peaks].min()  # a real dip between the modes


@pytest.mark.parametrize("task", MULTI, ids=MULTI_IDS)
def test_vector_tasks_draw_in_their_support_from_their_prior(task):
    theta, y = task.simulate(np.random.default_rng(1), 50_000)
    m = len(task.observed)
    assert theta.shape == (50_000, 2) and y.shape == (50_000, m) and np.issubdtype(y.dtype, np.integer)
    for d, bound in enumerate(task.support):
        assert np.all((theta[:, d] > bound.low) & (theta[:, d] < bound.high))
    assert np.all((y >= 0) & (y <= task.y_range[1]))
    t2, y2 = task.simulate(np.random.default_rng(1), 50_000)
    np.testing.assert_array_equal(theta, t2)
    np.testing.assert_array_equal(y, y2)
    # θ follows the prior: each coordinate's KS test against the prior's marginal, by quadrature of
    # exp(log_prior) over the other coordinate
    lo = np.maximum([b.low for b in task.support], np.quantile(theta, 1e-4, axis=0) - 3)
    hi = np.minimum([b.high for b in task.support], np.quantile(theta, 1 - 1e-4, axis=0) + 3)
    g = [np.linspace(lo[d], hi[d], 801) for d in range(2)]
    dens = np.exp(task.log_prior(np.stack(np.meshgrid(*g, indexing="ij"), axis=-1)))
    for d in range(2):
        marginal = dens.sum(axis=1 - d)
        cdf = np.cumsum(marginal) / marginal.sum()
        assert stats.kstest(theta[:5000, d], lambda v, x=g[d], c=cdf: np.interp(v, x, c)).pvalue > 1e-3


@pytest.mark.parametrize("task", MULTI, ids=MULTI_IDS)
def test_vector_tasks_likelihood_is_the_simulators(task):
    """The simulator's y frequencies match the prior predictive Σ_i p(y | θ_i) / n computed from
    log_likelihood over independent prior draws θ_i (χ² over the y seen often)."""
    n = 300_000
    _, y = task.simulate(np.random.default_rng(2), n)
    theta, _ = task.simulate(np.random.default_rng(3), 4000)
    rows, counts = np.unique(y, axis=0, return_counts=True)
    common = counts > 60
    rows, counts = rows[common], counts[common]
    like = np.exp(np.stack([task.log_likelihood(theta, r) for r in rows]))  # (rows, 4000)
    expected = like.mean(axis=1) * n
    assert len(rows) >= 5
    chi2 = np.sum((counts - expected) ** 2 / expected)
    # the predictive itself is a Monte Carlo average over 4000 θ: allow for its noise too
    noise = np.sum(like.var(axis=1) / 4000 * n**2 / expected)
    assert chi2 < stats.chi2.ppf(0.9999, len(rows)) + 6 * noise
    assert np.exp(task.log_likelihood(theta[:3], np.asarray(task.observed))).shape == (3,)


def test_vector_task_parameters_are_checked():
    with pytest.raises(ValueError, match="observed must be 4 counts"):
        tasks.Bioassay(observed=(0, 1, 3))
    with pytest.raises(ValueError, match="rho"):
        tasks.ABTest(rho=1.5)
    with pytest.raises(ValueError, match="observed"):
        tasks.ABTest(trials=(10, 10), observed=(11, 2))
    assert tasks.from_record(tasks.ABTest(rho=0.1).describe()).rho == 0.1
    assert tasks.from_record(tasks.Bioassay().describe()).observed == (0, 1, 3, 5)

"""The Posterior API: shapes, one rule for y and n, the rare-y flag, save/load as data."""

import json
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdnjax
from mdnjax import checkpoint, metrics, mixture


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = mdnjax.Config(samples=20_000, epochs=200, log_every=100, recipe="notebook")  # raw θ space
    res = mdnjax.fit("beta", cfg)
    out = tmp_path_factory.mktemp("run")
    res.posterior.save(out)
    return res.posterior, out


@pytest.fixture(scope="module")
def unconstrained():
    return mdnjax.fit("gamma", mdnjax.Config(samples=20_000, epochs=100, log_every=100)).posterior


def test_api_shapes_and_values(trained):
    post, _ = trained
    theta = jnp.linspace(0.05, 0.6, 12).reshape(3, 4)
    lp = post.log_prob(theta, 30)
    chex.assert_shape(lp, (3, 4))
    logits, means, log_vars = post.mixture(30)
    np.testing.assert_allclose(
        lp, mixture.log_prob(theta, logits, means, log_vars), rtol=1e-6, atol=1e-6
    )  # float32: fused (jit) and eager rounding
    # moments agree with float64 numpy math on the same mixture, and with samples
    m, s = metrics.mixture_moments(logits, means, log_vars)
    np.testing.assert_allclose(float(post.mean(30)), m, rtol=1e-5)
    np.testing.assert_allclose(float(post.std(30)), s, rtol=1e-4)
    draws = post.sample(jax.random.key(0), 30, 50_000)
    chex.assert_shape(draws, (50_000,))
    assert abs(float(draws.mean()) - m) < 5 * s / np.sqrt(50_000)
    chex.assert_shape(post.mean(np.array([10, 20, 30])), (3,))


@pytest.mark.parametrize("which", ["trained", "unconstrained"])
def test_vector_y_is_accepted_everywhere_and_agrees_with_scalars(which, trained, unconstrained):
    post = trained[0] if which == "trained" else unconstrained
    ys = [10, 30, 40]
    theta = jnp.array([0.1, 0.3, 0.4])
    lp = post.log_prob(theta, ys)
    chex.assert_shape(lp, (3,))
    for i, y in enumerate(ys):
        np.testing.assert_allclose(lp[i], post.log_prob(theta[i], y), rtol=1e-6)
        np.testing.assert_allclose(post.mean(ys)[i], post.mean(y), rtol=1e-6)
    chex.assert_shape(post.sample(jax.random.key(1), ys, 7), (3, 7))
    chex.assert_shape(post.std(np.array(ys).reshape(3, 1)), (3, 1))
    chex.assert_shape(post.log_prob(jnp.ones((5, 1)) * 0.2, ys), (5, 3))  # θ and y broadcast
    assert post.log_prob(theta, 30.0).shape == (3,)  # an integral float is an integer


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda p: p.log_prob(jnp.array([0.5]), 101), "outside"),
        (lambda p: p.log_prob(jnp.array([0.5]), 30.5), "integers"),
        (lambda p: p.sample(jax.random.key(0), 30.5, 3), "integers"),
        (lambda p: p.mean(30.5), "integers"),
        (lambda p: p.std([30, -1]), "outside"),
        (lambda p: p.mean("30"), "integer"),
        (lambda p: p.mean(float("nan")), "integers"),
        (lambda p: p.sample(jax.random.key(0), 30, -1), "n must be"),
        (lambda p: p.sample(jax.random.key(0), 30, 2.5), "n must be"),
        (lambda p: p.sample(jax.random.key(0), 30, 0), "n must be"),
        (lambda p: p.sample(0, 30, 5), "key must be"),
    ],
)
def test_bad_y_n_and_key_are_clear_value_errors(trained, call, match):
    post, _ = trained
    with pytest.raises(ValueError, match=match) as err:
        call(post)
    assert "\n" not in str(err.value)


def test_answers_at_rarely_simulated_y_are_flagged(trained):
    post, _ = trained
    counts = post.training_samples(np.arange(101))
    rare = int(np.flatnonzero(counts < 100)[-1])  # y near 100 are rare under Beta(2, 5)
    dense = int(np.argmax(counts))
    assert post.training_samples(dense) >= 100 and counts.sum() <= 20_000
    with pytest.warns(mdnjax.RareObservationWarning, match=f"y = {rare}"):
        post.mean(rare)
    with pytest.warns(mdnjax.RareObservationWarning):
        post.log_prob(jnp.array([0.5]), [dense, rare])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        post.mean(dense)  # no flag where the data were plentiful


def test_save_and_load_round_trip_as_data(trained):
    post, out = trained
    back = mdnjax.load(out)
    chex.assert_trees_all_equal(back.params, post.params)
    assert back.spec.to_json() == post.spec.to_json()
    np.testing.assert_array_equal(back.spec.counts, post.spec.counts)
    theta = jnp.linspace(0.1, 0.9, 9)
    np.testing.assert_array_equal(back.log_prob(theta, 42), post.log_prob(theta, 42))


def test_corrupt_or_missing_files_are_clear_errors(trained, tmp_path):
    _, out = trained
    with pytest.raises(ValueError, match="not a run folder"):
        mdnjax.load(tmp_path)
    (tmp_path / checkpoint.POSTERIOR_SPEC).write_text((out / checkpoint.POSTERIOR_SPEC).read_text())
    data = (out / checkpoint.POSTERIOR).read_bytes()
    (tmp_path / checkpoint.POSTERIOR).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        mdnjax.load(tmp_path)
    (tmp_path / checkpoint.POSTERIOR).write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt"):
        mdnjax.load(tmp_path)
    (tmp_path / checkpoint.POSTERIOR_SPEC).write_text("{broken")
    with pytest.raises(ValueError, match="unreadable"):
        mdnjax.load(tmp_path)
    (tmp_path / checkpoint.POSTERIOR_SPEC).write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="not a posterior spec"):
        mdnjax.load(tmp_path)


# ----------------------------------------------------------------------------- θ ∈ ℝ^D, vector y


def _posterior(dim, inputs, space="unconstrained", seed=0):
    """An untrained posterior of the given shape (its answers are what the shapes test needs)."""
    from mdnjax import model
    from mdnjax.posterior import Posterior, PosteriorSpec
    from mdnjax.task import Bound

    bounds = (Bound(0.0, 1.0), Bound(0.0, np.inf), Bound())[:dim] if dim <= 3 else (Bound(),) * dim
    y_values = np.arange(10) if inputs == 1 else np.stack([np.arange(10) + i for i in range(inputs)], axis=1)
    spec = PosteriorSpec(
        name="shapes",
        components=3,
        hidden=(8,),
        space=space,
        bounds=bounds,
        embedding=(0.0, 10.0) if inputs == 1 else ((0.0,) * inputs, (10.0,) * inputs),
        y_range=(0.0, 20.0),
        y_values=y_values,
        counts=np.full(10, 1000),
        dim=dim,
        inputs=inputs,
    )
    _, params = model.init(jax.random.key(seed), 3, (8,), dim, inputs)
    return Posterior(spec, params)


@pytest.mark.parametrize("dim,inputs", [(1, 1), (1, 2), (2, 2), (3, 1)])
def test_every_method_has_the_documented_shape(dim, inputs):
    post = _posterior(dim, inputs)
    one = 3 if inputs == 1 else [3, 4]
    many = np.array([3, 5]) if inputs == 1 else np.array([[3, 4], [5, 6]])
    event = () if dim == 1 else (dim,)
    key = jax.random.key(0)
    chex.assert_shape(post.sample(key, one, 7), (7,) + event)
    chex.assert_shape(post.sample(key, many, 7), (2, 7) + event)
    theta = post.sample(key, one, 5)
    chex.assert_shape(post.log_prob(theta, one), (5,))
    chex.assert_shape(post.mean(one), event)
    chex.assert_shape(post.std(one), event)
    chex.assert_shape(post.cov(one), (dim, dim))
    chex.assert_shape(post.mean(many), (2,) + event)
    chex.assert_shape(post.cov(many), (2, dim, dim))
    chex.assert_shape(post.quantile([0.1, 0.5, 0.9], one), (3,) + event)
    assert post.training_samples(one) == 1000
    assert np.asarray(post.training_samples(many)).shape == (2,)


def test_d2_density_is_the_fitting_space_mixture_with_each_coordinate_jacobian(x64):
    from scipy import special, stats

    post = _posterior(2, 2, seed=3)
    theta = np.array([[0.3, 2.0], [0.9, 0.1], [0.5, 7.0]])
    logits, means, scales = (np.asarray(a, np.float64) for a in post.mixture([3, 4]))
    u = np.stack([special.logit(theta[:, 0]), np.log(theta[:, 1])], axis=1)
    covs = np.asarray(mixture.mvn_covariances(scales))
    comp = [stats.multivariate_normal(means[k], covs[k]).logpdf(u) for k in range(3)]
    log_w = logits - special.logsumexp(logits)
    jac = -np.log(theta[:, 0] * (1 - theta[:, 0])) - np.log(theta[:, 1])
    expected = special.logsumexp(log_w[:, None] + np.array(comp), axis=0) + jac
    np.testing.assert_allclose(post.log_prob(theta, [3, 4]), expected, rtol=1e-6)
    assert post.log_prob(np.array([1.5, 1.0]), [3, 4]) == -np.inf  # outside (0, 1) × (0, ∞)


@pytest.mark.parametrize("dim", [1, 2])
def test_the_fitting_space_density_of_many_points_at_one_y_is_the_mixture(dim):
    """``fitting_log_prob_at`` (the report's grid KL) against SciPy in float64, beyond one block."""
    from scipy import special, stats

    post = _posterior(dim, 2, seed=4)
    logits, means, scales = (np.asarray(a, np.float64) for a in post.mixture([3, 4]))
    u = np.random.default_rng(0).normal(size=(20_000, dim) if dim > 1 else 20_000)
    if dim == 1:
        comp = stats.norm.logpdf(u[:, None], means, np.exp(0.5 * scales))
    else:
        covs = np.asarray(mixture.mvn_covariances(scales))
        comp = np.stack([stats.multivariate_normal(means[k], covs[k]).logpdf(u) for k in range(3)], axis=1)
    expected = special.logsumexp(logits - special.logsumexp(logits) + comp, axis=1)
    np.testing.assert_allclose(post.fitting_log_prob_at(u, [3, 4]), expected, rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match="one observation"):
        post.fitting_log_prob_at(u, [[3, 4], [5, 6]])


def test_d2_moments_and_quantiles_agree_with_draws():
    post = _posterior(2, 1, seed=1)
    draws = np.asarray(post.sample(jax.random.key(1), 4, 400_000), np.float64)
    np.testing.assert_allclose(post.mean(4), draws.mean(axis=0), rtol=0.02, atol=0.01)
    np.testing.assert_allclose(post.cov(4), np.cov(draws.T), rtol=0.05, atol=0.01)
    np.testing.assert_allclose(
        post.quantile([0.2, 0.7], 4), np.quantile(draws, [0.2, 0.7], axis=0), rtol=0.02, atol=0.01
    )
    assert np.all((draws[:, 0] > 0) & (draws[:, 0] < 1) & (draws[:, 1] > 0))


def test_d2_vector_y_posterior_saves_and_loads_without_the_task(tmp_path):
    post = _posterior(2, 2, seed=2)
    post.save(tmp_path)
    loaded = mdnjax.load(tmp_path)
    assert (loaded.dim, loaded.spec.inputs) == (2, 2)
    theta = np.array([[0.4, 1.0], [0.2, 3.0]])
    np.testing.assert_array_equal(loaded.log_prob(theta, [3, 4]), post.log_prob(theta, [3, 4]))


def test_vector_y_rules():
    post = _posterior(2, 2)
    with pytest.raises(ValueError, match="sequence of 2 integers"):
        post.mean(3)
    with pytest.raises(ValueError, match="outside the possible range"):
        post.mean([3, 99])
    with pytest.raises(ValueError, match="2 coordinates"):
        post.log_prob(np.zeros(3), [3, 4])
    with pytest.warns(mdnjax.RareObservationWarning, match=r"y = \[11, 11\]"):
        post.mean([11, 11])


def test_raw_space_log_prob_is_minus_infinity_outside_the_support_and_for_nan(trained):
    """The raw-space mixture has mass outside (0, 1); log q(θ | y) is −inf there and for NaN θ,
    as in the unconstrained space, and the mixture's own density inside."""
    post, _ = trained
    assert post.spec.space == "raw"
    lp = np.asarray(post.log_prob(jnp.array([-0.1, 0.0, 0.3, 1.0, 1.2, jnp.nan]), 30))
    assert np.all(lp[[0, 1, 3, 4, 5]] == -np.inf)
    logits, means, log_vars = post.mixture(30)
    np.testing.assert_allclose(lp[2], metrics.mixture_logpdf(np.array([0.3]), logits, means, log_vars)[0], rtol=1e-5)


def test_a_posterior_json_with_an_unknown_space_is_refused(trained, tmp_path):
    _, out = trained
    for name in (checkpoint.POSTERIOR, checkpoint.POSTERIOR_SPEC):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    spec = json.loads((tmp_path / checkpoint.POSTERIOR_SPEC).read_text())
    (tmp_path / checkpoint.POSTERIOR_SPEC).write_text(json.dumps(spec | {"space": "unconstrianed"}))
    with pytest.raises(ValueError, match="space must be 'raw' or 'unconstrained'"):
        mdnjax.load(tmp_path)


def test_theta_and_y_of_shapes_that_do_not_broadcast_are_one_line_errors(trained):
    post, _ = trained
    with pytest.raises(ValueError, match=r"theta's batch shape \(3,\) and y's \(2,\) do not broadcast"):
        post.log_prob(jnp.array([0.1, 0.2, 0.3]), [30, 31])
    with pytest.raises(ValueError, match="do not broadcast"):
        post.cdf(jnp.array([0.1, 0.2, 0.3]), [30, 31])
    assert post.log_prob(jnp.array([[0.1], [0.2]]), [30, 31, 32]).shape == (2, 3)  # broadcasting still works


def test_the_arviz_export_has_one_chain_a_variable_per_parameter_and_the_observation():
    az = pytest.importorskip("arviz")
    post = mdnjax.fit("abtest", mdnjax.Config(samples=4_000, epochs=5, layout="binned")).posterior
    idata = post.to_arviz([3, 7], 200, jax.random.key(0), names=["logit_a", "logit_b"])
    assert set(idata.posterior.data_vars) == {"logit_a", "logit_b"}
    assert idata.posterior["logit_a"].shape == (1, 200)
    np.testing.assert_array_equal(np.asarray(idata.observed_data["y"]), [3, 7])
    draws = np.asarray(post.sample(jax.random.key(0), [3, 7], 200))
    np.testing.assert_allclose(np.asarray(idata.posterior["logit_b"])[0], draws[:, 1], rtol=1e-6)
    assert float(az.summary(idata)["mean"]["logit_a"]) == pytest.approx(draws[:, 0].mean(), rel=1e-3, abs=1e-3)
    with pytest.raises(ValueError, match="2 distinct names"):
        post.to_arviz([3, 7], 10, jax.random.key(0), names=["a"])

"""The Posterior API: shapes, one rule for y and n, the rare-y flag, save/load as data."""

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
    np.testing.assert_allclose(lp, mixture.log_prob(theta, logits, means, log_vars), rtol=1e-6)
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

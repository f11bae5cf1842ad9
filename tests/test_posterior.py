import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdnjax
from mdnjax import Config, metrics, mixture, posterior, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = Config(prior="beta", samples=20_000, epochs=200, log_every=100, recipe="notebook")  # raw θ space
    res = train.fit(cfg, verbose=False)
    out = tmp_path_factory.mktemp("run")
    res.posterior.save(out)
    return res.posterior, out


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


def test_bad_y_is_rejected(trained):
    post, _ = trained
    with pytest.raises(ValueError, match="outside"):
        post.log_prob(jnp.array([0.5]), 101)


def test_save_and_load_round_trip(trained):
    post, out = trained
    back = mdnjax.load(out)
    chex.assert_trees_all_equal(back.params, post.params)
    assert back.config == post.config
    theta = jnp.linspace(0.1, 0.9, 9)
    np.testing.assert_array_equal(back.log_prob(theta, 42), post.log_prob(theta, 42))


def test_corrupt_or_missing_checkpoint_is_a_clear_error(trained, tmp_path):
    _, out = trained
    with pytest.raises(ValueError, match="not a run directory"):
        mdnjax.load(tmp_path)
    (tmp_path / "config.json").write_text((out / "config.json").read_text())
    data = (out / "checkpoint.npz").read_bytes()
    (tmp_path / "checkpoint.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        mdnjax.load(tmp_path)
    (tmp_path / "checkpoint.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt"):
        mdnjax.load(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="not a valid config"):
        mdnjax.load(tmp_path)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    posterior.atomic_write(target, b"old")

    with pytest.raises(TypeError):
        posterior.atomic_write(target, object())  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]

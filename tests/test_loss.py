"""The masked, vmapped loss against a float64 NumPy/SciPy computation, and padding invariance."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from mdnjax import buckets, loss, model, tasks
from mdnjax.train import to_data


def _setup(name="beta", n=3000, k=8, seed=0, width=None):
    task = tasks.make_task(name)
    theta, y = task.simulate(np.random.default_rng(seed), n)
    b = buckets.bucket(theta, y, width=width)
    graphdef, params = model.init(jax.random.key(seed), k)
    return task, theta, y, b, graphdef, params


def numpy_loss(params_np, graphdef, theta, y, trials):
    """Σ_y mean_i −log Σ_k π_k N(θ_i | μ_k, σ_k²) in float64, straight from the samples."""
    total = 0.0
    values, counts = np.unique(y, return_counts=True)
    for yv in values[counts >= 2]:
        x = jnp.array([yv / trials], jnp.float32)
        logits, means, log_vars = (np.asarray(a, np.float64)[0] for a in model.apply(graphdef, params_np, x))
        t = theta[y == yv].astype(np.float64)[:, None]
        log_w = logits - special.logsumexp(logits)
        comp = stats.norm.logpdf(t, means, np.exp(0.5 * log_vars))
        total += -np.mean(special.logsumexp(log_w + comp, axis=1))
    return total


@pytest.mark.parametrize("name", ["beta", "gamma"])
@pytest.mark.parametrize("k", [1, 8])
def test_both_losses_equal_float64_reference(name, k):
    task, theta, y, b, graphdef, params = _setup(name, k=k)
    expected = numpy_loss(params, graphdef, theta, y, task.trials)
    d = to_data(b, task.trials)
    padded = loss.padded_loss(params, graphdef, d.x, d.theta, d.mask)
    rows = loss.rows_loss(params, graphdef, d.x, d.theta, d.mask, d.row_y, d.weight)
    chex.assert_shape([padded, rows], ())
    np.testing.assert_allclose(float(padded), expected, rtol=1e-5)
    np.testing.assert_allclose(float(rows), expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["beta", "gamma"])
@pytest.mark.parametrize("k", [1, 8])
def test_packed_gradient_equals_padded_autodiff(name, k):
    task, theta, y, b, graphdef, params = _setup(name, k=k, n=20_000)
    padded = to_data(b, task.trials)
    packed = to_data(buckets.bucket_packed(theta, y), task.trials)
    assert packed.theta.shape[1] < padded.theta.shape[1]
    ref, g_ref = jax.value_and_grad(loss.padded_loss)(params, graphdef, padded.x, padded.theta, padded.mask)
    val, g = jax.value_and_grad(loss.rows_loss)(params, graphdef, *packed)
    np.testing.assert_allclose(val, ref, rtol=1e-5)
    chex.assert_trees_all_close(g, g_ref, rtol=1e-5, atol=1e-6)


def test_custom_gradient_equals_autodiff_in_float64(x64):
    task, theta, y, b, graphdef, params = _setup("gamma", width=16)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    d = to_data(b, task.trials, jnp.float64)
    auto = lambda p: (
        -jnp.sum(  # noqa: E731
            d.weight[:, None] * jnp.where(d.mask, _autodiff_rows_ll(p, graphdef, d), 0.0)
        )
    )
    g_auto = jax.grad(auto)(params)
    g_fast = jax.grad(loss.rows_loss)(params, graphdef, *d)
    chex.assert_trees_all_close(g_fast, g_auto, rtol=1e-10, atol=1e-12)


def _autodiff_rows_ll(params, graphdef, d):
    from mdnjax import mixture

    logits, means, log_vars = model.apply(graphdef, params, d.x)
    lp = jax.vmap(mixture.log_prob)(jnp.where(d.mask, d.theta, 0.0), logits[d.row_y], means[d.row_y], log_vars[d.row_y])
    return lp


@pytest.mark.parametrize("fill", [0.5, -3.0, 1e30, -1e30, 7e3])
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_padding_changes_neither_loss_nor_gradient(fill, layout):
    task, theta, y, b, graphdef, params = _setup("beta", n=5000)
    if layout == "packed":
        b = buckets.bucket(theta, y, width=64)
    d = to_data(b, task.trials)
    assert not bool(jnp.all(d.mask))  # there is padding to change
    junk = d._replace(theta=jnp.where(d.mask, d.theta, jnp.float32(fill)))
    for fn, args in [
        (loss.padded_loss, lambda dd: (dd.x, dd.theta, dd.mask)),
        (loss.rows_loss, lambda dd: tuple(dd)),
    ]:
        if fn is loss.padded_loss and layout == "packed":
            continue
        v0, g0 = jax.value_and_grad(fn)(params, graphdef, *args(d))
        v1, g1 = jax.value_and_grad(fn)(params, graphdef, *args(junk))
        assert np.isfinite(float(v1))
        chex.assert_tree_all_finite(g1)
        assert float(v0) == float(v1)
        chex.assert_trees_all_equal(g0, g1)


def test_bucket_order_does_not_change_the_loss():
    task, theta, y, b, graphdef, params = _setup("gamma", width=32)
    d = to_data(b, task.trials)
    perm = np.random.default_rng(0).permutation(d.theta.shape[0])
    shuffled = d._replace(theta=d.theta[perm], mask=d.mask[perm], row_y=d.row_y[perm], weight=d.weight[perm])
    np.testing.assert_allclose(
        loss.rows_loss(params, graphdef, *shuffled), loss.rows_loss(params, graphdef, *d), rtol=1e-6
    )

"""Every kernel against the reference loss and a float64 NumPy/SciPy computation; padding invariance."""

import gc

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from mdnjax import kernels, layout, mixture, model, objective, tasks
from mdnjax.kernels import tiles
from mdnjax.layout import to_data


def loss_fn(which, graphdef):
    return lambda params, d: objective.loss(params, graphdef, d, kernels.select(reference=layout.plan(which).reference))


def rows_loss(params, graphdef, d):
    return objective.loss(params, graphdef, d, tiles.nll)


def padded_loss(params, graphdef, d):
    return objective.loss(params, graphdef, d, objective.reference_nll)


def _setup(name="beta", n=3000, k=8, seed=0, width=None):
    task = tasks.from_name(name)
    theta, y = task.simulate(np.random.default_rng(seed), n)
    theta = theta.astype(np.float32)
    b = layout.bucket(theta, y, width=width)
    graphdef, params = model.init(jax.random.key(seed), k)
    return task, theta, y, b, graphdef, params


def numpy_loss(params_np, graphdef, theta, y, trials):
    """Σ_y mean_i −log Σ_k π_k N(θ_i | μ_k, σ_k²) in float64, straight from the samples."""
    values, counts = np.unique(y, return_counts=True)
    values = values[counts >= 2]
    out = model.apply(graphdef, params_np, jnp.asarray(values / trials, jnp.float32))
    logits, means, log_vars = (np.asarray(a, np.float64) for a in out)
    total = 0.0
    for j, yv in enumerate(values):
        t = theta[y == yv].astype(np.float64)[:, None]
        log_w = logits[j] - special.logsumexp(logits[j])
        comp = stats.norm.logpdf(t, means[j], np.exp(0.5 * log_vars[j]))
        total += -np.mean(special.logsumexp(log_w + comp, axis=1))
    return total


@pytest.mark.parametrize("name,k", [("beta", 8), ("gamma", 1)])
def test_both_losses_equal_float64_reference(name, k):
    task, theta, y, b, graphdef, params = _setup(name, k=k)
    expected = numpy_loss(params, graphdef, theta, y, task.trials)
    d = to_data(b, (0.0, task.trials), block=None)
    padded = jax.jit(padded_loss, static_argnums=1)(params, graphdef, d)
    rows = jax.jit(rows_loss, static_argnums=1)(params, graphdef, to_data(b, (0.0, task.trials), block=4096))
    chex.assert_shape([padded, rows], ())
    np.testing.assert_allclose(float(padded), expected, rtol=1e-5)
    np.testing.assert_allclose(float(rows), expected, rtol=1e-5)


@pytest.mark.parametrize("name,k", [("beta", 1), ("gamma", 8)])
def test_packed_gradient_equals_padded_autodiff(name, k):
    task, theta, y, b, graphdef, params = _setup(name, k=k, n=20_000)
    padded = to_data(b, (0.0, task.trials), block=None)
    packed = to_data(layout.bucket_packed(theta, y), (0.0, task.trials), block=8192)
    assert packed.theta.shape[0] > 1 and packed.theta.shape[2] < padded.theta.shape[2]  # several tiles, narrow rows
    ref, g_ref = jax.jit(jax.value_and_grad(padded_loss), static_argnums=1)(params, graphdef, padded)
    val, g = jax.jit(jax.value_and_grad(rows_loss), static_argnums=1)(params, graphdef, packed)
    np.testing.assert_allclose(val, ref, rtol=1e-5)
    # float32 sums over ~10^4 samples: entries that are exactly 0 (the logits' gradient at K = 1)
    # come out at ~1e-8 of the gradient's scale, so the absolute tolerance follows that scale
    scale = max(float(np.max(np.abs(leaf))) for leaf in jax.tree_util.tree_leaves(g_ref))
    chex.assert_trees_all_close(g, g_ref, rtol=1e-5, atol=1e-7 * scale)


def test_custom_gradient_equals_autodiff_in_float64(x64):
    task, theta, y, b, graphdef, params = _setup("gamma", width=16)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    d = to_data(b, (0.0, task.trials), jnp.float64, block=512)
    assert d.theta.shape[0] > 1
    flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731
    theta, mask, row_y, weight = flat(d.theta), flat(d.mask), flat(d.row_y), flat(d.weight)

    def autodiff_loss(p):
        logits, means, log_vars = model.apply(graphdef, p, d.x)
        lp = jax.vmap(mixture.log_prob)(jnp.where(mask, theta, 0.0), logits[row_y], means[row_y], log_vars[row_y])
        return -jnp.sum(weight[:, None] * jnp.where(mask, lp, 0.0))

    g_auto = jax.jit(jax.grad(autodiff_loss))(params)
    g_fast = jax.jit(jax.grad(rows_loss), static_argnums=1)(params, graphdef, d)
    chex.assert_trees_all_close(g_fast, g_auto, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fill", [0.5, -3.0, 1e30, -1e30, 7e3])
@pytest.mark.parametrize("kind", ["padded", "packed"])
def test_padding_changes_neither_loss_nor_gradient(fill, kind):
    task, theta, y, b, graphdef, params = _setup("beta", n=5000)
    if kind == "packed":
        b = layout.bucket(theta, y, width=64)
    d = to_data(b, (0.0, task.trials), block=1024)
    assert not bool(jnp.all(d.mask))  # there is padding to change
    junk = d._replace(theta=jnp.where(d.mask, d.theta, jnp.float32(fill)))
    fns = [loss_fn("packed", graphdef)] + ([loss_fn("padded", graphdef)] if kind == "padded" else [])
    for fn in fns:
        vg = jax.jit(jax.value_and_grad(fn))
        v0, g0 = vg(params, d)
        v1, g1 = vg(params, junk)
        assert np.isfinite(float(v1))
        chex.assert_tree_all_finite(g1)
        assert float(v0) == float(v1)
        chex.assert_trees_all_equal(g0, g1)


def test_bucket_order_does_not_change_the_loss():
    task, theta, y, b, graphdef, params = _setup("gamma", width=32)
    d = to_data(b, (0.0, task.trials), block=None)
    perm = np.random.default_rng(0).permutation(d.theta.shape[1])
    shuffled = d._replace(
        theta=d.theta[:, perm], row_count=d.row_count[:, perm], row_y=d.row_y[:, perm], weight=d.weight[:, perm]
    )
    np.testing.assert_allclose(rows_loss(params, graphdef, shuffled), rows_loss(params, graphdef, d), rtol=1e-6)


def test_far_outliers_take_the_safe_path_and_stay_exact():
    # θ = 1.0 lies ~150 σ from both components: the cheap row shift underflows, the safe path must take over.
    logits = jnp.array([[[0.0, 0.5]]])
    means = jnp.array([[[0.0, 0.1]]])
    log_vars = jnp.array([[[-10.0, -10.0]]])
    theta = jnp.array([[[1.0, 0.05, 0.02, 0.3]]])
    row_count = jnp.array([[3]])  # the 4th slot is padding
    weight = jnp.array([[0.25]])
    value, grads = jax.jit(jax.jit(jax.value_and_grad(tiles.rows_nll, argnums=(0, 1, 2))))(
        logits, means, log_vars, theta, row_count, weight
    )

    def reference(lg, mu, lv):
        lp = mixture.log_prob(theta[0, 0, :3], lg[0, 0], mu[0, 0], lv[0, 0])
        return -0.25 * jnp.sum(lp)

    ref_value, ref_grads = jax.jit(jax.value_and_grad(reference, argnums=(0, 1, 2)))(logits, means, log_vars)
    lv = log_vars[0]
    const = jax.nn.log_softmax(logits[0]) - 0.5 * (mixture.LOG_2PI + lv)
    args = (const, means[0], jnp.exp(-lv), jnp.max(const, axis=-1), theta[0], row_count[0], weight[0])
    assert bool(tiles._tile_sums(*args, False)[2])  # the cheap shift underflows here
    assert not bool(tiles._tile_sums(*args, True)[2])
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    chex.assert_trees_all_close(grads, ref_grads, rtol=1e-5)


def test_data_mask_is_the_layout_mask_and_weights_vanish_on_empty_rows():
    task, theta, y, b, graphdef, params = _setup("gamma", width=32)
    d = to_data(b, (0.0, task.trials), block=1000, shards=4)
    blocks, block_rows, width = d.theta.shape
    assert block_rows % 4 == 0 and blocks * block_rows > b.theta.shape[0]  # empty rows were appended
    flat = lambda a: np.asarray(a).reshape((-1,) + a.shape[2:])  # noqa: E731
    rows = b.theta.shape[0]
    np.testing.assert_array_equal(flat(d.mask)[:rows], b.mask)
    assert not flat(d.mask)[rows:].any()
    np.testing.assert_array_equal(flat(d.weight)[rows:], 0.0)
    np.testing.assert_allclose(flat(d.weight)[:rows], 1.0 / b.counts[b.row_y], rtol=1e-6)


def test_a_layout_with_its_spare_rows_goes_to_the_device_without_a_copy():
    task = tasks.from_name("gamma")
    parts = [task.simulate(np.random.default_rng([5, i]), 30_000) for i in range(2)]
    b = layout.bucket_streamed(lambda: iter(parts), spare_rows=layout.spare_rows(block=4096, shards=2))
    d = to_data(b, (0.0, task.trials), block=4096, shards=2)
    assert d.theta.shape[0] * d.theta.shape[1] == b.theta.shape[0]  # the spare rows were exactly enough
    if jax.devices()[0].platform == "cpu":
        assert d.theta.unsafe_buffer_pointer() == b.theta.ctypes.data  # shared, not copied
    plain = to_data(layout.bucket_streamed(lambda: iter(parts)), (0.0, task.trials), block=4096, shards=2)
    del b  # the device array must keep the shared host memory alive on its own
    gc.collect()
    scratch = np.full(2**22, np.nan, np.float32)  # reuse freed memory, if any was freed
    assert np.isnan(scratch).all()
    chex.assert_trees_all_equal((d.x, d.row_count, d.weight), (plain.x, plain.row_count, plain.weight))
    np.testing.assert_array_equal(np.where(d.mask, d.theta, 0.0), np.where(plain.mask, plain.theta, 0.0))
